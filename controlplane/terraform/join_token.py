"""`spirl_join_token`: a single-use token a trust domain server registers with (bootstrap).

The token is only known when it is made: the control plane stores its hash, so it cannot be read
back or imported, and the state holds it (as a sensitive value: keep the state safe, or keep
`ttl` short). Destroying the resource revokes the token when no server registered with it yet; a
used token is left alone (the server it registered is deregistered with `spirlctl trust-domain
deployment server delete`, not by forgetting its token). A control plane from before revocation
existed has no route for it: destroy then only forgets the token, with a warning.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from tf import schema, types
from tf.iface import (
    Config,
    CreateContext,
    DeleteContext,
    ReadContext,
    Resource,
    State,
    UpdateContext,
)
from tf.utils import Diagnostics

from controlplane.domain import MAX_JOIN_TOKEN_TTL, JoinTokenUsed, join_token_id
from controlplane.terraform import lookup
from controlplane.terraform.client import ApiError, NotFoundError
from controlplane.terraform.common import (
    ProviderBound,
    check_id_prefixes,
    computed,
    optional,
    reported,
    required,
)

DEFAULT_TTL = "1h"


def ttl_problem(value: str) -> str | None:
    from controlplane.documents import parse_duration

    try:
        ttl = parse_duration(value)
    except ValueError as exc:
        return f"`ttl` {exc}"
    if ttl > MAX_JOIN_TOKEN_TTL:
        return "`ttl` may be at most 7d"
    return None


class JoinTokenResource(ProviderBound, Resource):
    NAME = "join_token"

    @classmethod
    def get_schema(cls) -> schema.Schema:
        return schema.Schema(
            version=1,
            description=(
                "A single-use join token for a trust domain server of a deployment "
                "(`spirl-tds run --join-token-file`, or `$SPIRL_JOIN_TOKEN`). It cannot be read back or "
                "imported. "
                "Destroying the resource revokes the token if no server registered with it yet."
            ),
            attributes=[
                computed("id", "`jt-` and the start of the token's SHA-256 (not the token)."),
                required(
                    "trust_domain_deployment_id",
                    "Id of the deployment (`tdd-…`) the server will join.",
                    replace=True,
                ),
                optional(
                    "ttl",
                    "How long the token is valid, e.g. `15m`, `1h`, `2d` (at most `7d`). "
                    f"Default: `{DEFAULT_TTL}`.",
                    computed=True,
                    replace=True,
                    default=DEFAULT_TTL,
                ),
                optional(
                    "recreate_when_expired",
                    "When true, a token past `expires_at` is dropped at the next refresh, so the "
                    "next apply makes a new one. Default: false.",
                    kind=types.Bool(),
                ),
                computed("token", "The join token.", sensitive=True),
                computed("expires_at", "When the token stops being valid (RFC 3339)."),
            ],
        )

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        check_id_prefixes(
            diags, config, {"trust_domain_deployment_id": lookup.PREFIX[lookup.DEPLOYMENT]}
        )
        ttl = config.get("ttl")
        if isinstance(ttl, str):
            problem = ttl_problem(ttl)
            if problem:
                diags.add_error("Invalid ttl", problem, path=["ttl"])

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        from controlplane.documents import parse_duration

        deployment = planned["trust_domain_deployment_id"]
        ttl = planned.get("ttl") if isinstance(planned.get("ttl"), str) else DEFAULT_TTL
        problem = ttl_problem(ttl)
        if problem:
            ctx.diagnostics.add_error("Invalid ttl", problem, path=["ttl"])
            return None
        with reported(ctx.diagnostics, f"issue a join token for {deployment}"):
            body = self.provider.client.post(
                f"{lookup.object_path(lookup.DEPLOYMENT, deployment)}/join-tokens",
                {"ttl_seconds": int(parse_duration(ttl).total_seconds())},
            )
            token = str(body["token"])
            return {
                **planned,
                "id": join_token_id(hashlib.sha256(token.encode()).hexdigest()),
                "ttl": ttl,
                "token": token,
                "expires_at": body.get("expires_at"),
            }
        return None

    def read(self, ctx: ReadContext, current: State) -> State | None:
        deployment = current.get("trust_domain_deployment_id")
        if not isinstance(deployment, str):
            return None
        with reported(ctx.diagnostics, f"read the deployment {deployment}"):
            try:
                self.provider.client.get(lookup.object_path(lookup.DEPLOYMENT, deployment))
            except NotFoundError:
                return None  # the control plane says the deployment is gone: so is the token
            if current.get("recreate_when_expired") and _expired(current.get("expires_at")):
                return None
            return current
        return current

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        # Only recreate_when_expired changes in place; everything else replaces the token.
        return {**current, "recreate_when_expired": planned.get("recreate_when_expired")}

    def delete(self, ctx: DeleteContext, current: State) -> None:
        deployment, token_id = current.get("trust_domain_deployment_id"), current.get("id")
        if not isinstance(deployment, str) or not isinstance(token_id, str):
            return
        path = f"{lookup.object_path(lookup.DEPLOYMENT, deployment)}/join-tokens/{token_id}"
        with reported(ctx.diagnostics, f"revoke the join token {token_id}"):
            try:
                self.provider.client.delete(path)
            except NotFoundError:
                pass  # the deployment or the token is gone already
            except ApiError as exc:
                if exc.code == "no_route" or exc.status == 405:  # an older control plane
                    ctx.diagnostics.add_warning(
                        "The join token was not revoked",
                        "This control plane cannot revoke join tokens (upgrade it): the token "
                        f"stays valid until {current.get('expires_at')} or its first use.",
                    )
                elif exc.code != JoinTokenUsed.code:
                    raise
                # Used: it can register nothing more; its server stays until deregistered.


def _expired(expires_at: Any) -> bool:
    if not isinstance(expires_at, str):
        return False
    try:
        when = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    return when <= datetime.now(UTC)
