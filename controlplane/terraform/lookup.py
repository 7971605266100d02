"""Find trust domains, deployments and clusters by id or by name, and a scope's trust domain.

Names are unique where they are written in full: a trust domain by its name (`example.org`), a
deployment within its trust domain (`example.org/prod`), a cluster within its deployment
(`example.org/prod/east`). `terraform import` takes either form.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from controlplane.domain import CLUSTER, DEPLOYMENT, ID_PREFIXES, TRUST_DOMAIN
from controlplane.terraform.client import ApiClient, NotFoundError

__all__ = [
    "COLLECTIONS",
    "OfScope",
    "LookupFailed",
    "find",
    "name_path",
    "object_path",
    "scope_trust_domain_name",
]

# Each scope's id prefix (the control plane's own, controlplane/domain.py).
PREFIX = {
    TRUST_DOMAIN: ID_PREFIXES["trust_domain"],
    DEPLOYMENT: ID_PREFIXES["deployment"],
    CLUSTER: ID_PREFIXES["cluster"],
}

# scope -> (collection, id prefix, what, parent filter for the list call)
COLLECTIONS: dict[str, tuple[str, str, str, str | None]] = {
    TRUST_DOMAIN: ("/v1/trust-domains", PREFIX[TRUST_DOMAIN], "trust domain", None),
    DEPLOYMENT: (
        "/v1/trust-domain-deployments",
        PREFIX[DEPLOYMENT],
        "trust domain deployment",
        "trust_domain_id",
    ),
    CLUSTER: ("/v1/clusters", PREFIX[CLUSTER], "cluster", "trust_domain_deployment_id"),
}
_PARENT = {DEPLOYMENT: TRUST_DOMAIN, CLUSTER: DEPLOYMENT}
_DEPTH = {TRUST_DOMAIN: 1, DEPLOYMENT: 2, CLUSTER: 3}


class LookupFailed(Exception):
    """No object (or more than one) answers to the reference; the message says which."""


def name_path(scope: str) -> str:
    """How a name reference of that scope is written, for messages."""
    return {
        TRUST_DOMAIN: "<trust domain>",
        DEPLOYMENT: "<trust domain>/<deployment>",
        CLUSTER: "<trust domain>/<deployment>/<cluster>",
    }[scope]


def find(client: ApiClient, scope: str, ref: str) -> dict[str, Any]:
    """The object of `scope` that `ref` names: its id (`c-…`) or its name path. Raises
    LookupFailed, or ApiError when the control plane cannot be asked."""
    collection, prefix, what, _ = COLLECTIONS[scope]
    ref = ref.strip()
    if not ref:
        raise LookupFailed(f"an empty reference names no {what}")
    if ref.startswith(prefix) and "/" not in ref:
        try:
            return client.get(object_path(scope, ref))
        except NotFoundError:
            if scope != TRUST_DOMAIN:  # only a trust domain's name may look like an id
                raise LookupFailed(f"no {what} has the id {ref!r}") from None
    parts = ref.split("/")
    if len(parts) != _DEPTH[scope] or not all(parts):
        raise LookupFailed(
            f"{ref!r} names no {what}: give its id ({prefix}…) or its name as {name_path(scope)}"
        )
    return _by_name(client, scope, parts)


def _by_name(client: ApiClient, scope: str, parts: list[str]) -> dict[str, Any]:
    collection, _, what, parent_filter = COLLECTIONS[scope]
    params = None
    if parent_filter:
        parent = _by_name(client, _PARENT[scope], parts[:-1])
        params = {parent_filter: parent["id"]}
    matches = [
        item for item in client.list_items(collection, params) if item.get("name") == parts[-1]
    ]
    if len(matches) != 1:
        found = ", ".join(str(m.get("id")) for m in matches) or "none"
        raise LookupFailed(f"expected one {what} named {'/'.join(parts)!r}, found {found}")
    return matches[0]


def scope_trust_domain_name(client: ApiClient, scope: str, scope_id: str) -> str:
    """The name of the trust domain the scope belongs to (NotFoundError when the scope's object
    is gone)."""
    if scope == TRUST_DOMAIN:
        return str(client.get(object_path(TRUST_DOMAIN, scope_id))["name"])
    deployment_id = scope_id
    if scope == CLUSTER:
        deployment_id = str(
            client.get(object_path(CLUSTER, scope_id))["trust_domain_deployment_id"]
        )
    return str(client.get(object_path(DEPLOYMENT, deployment_id))["trust_domain_name"])


def object_path(scope: str, object_id: str) -> str:
    """`/v1/clusters/c-…`: the API path of the object a scope belongs to."""
    return f"{COLLECTIONS[scope][0]}/{quote(object_id, safe='')}"


class OfScope:
    """A resource or data source about one scope: its class sets SCOPE; the words for messages
    (KIND, "trust domain deployment") and the id prefix (ID_PREFIX, "tdd-") follow from it."""

    SCOPE: ClassVar[str]
    KIND: ClassVar[str]
    ID_PREFIX: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "SCOPE" in cls.__dict__:
            cls.KIND = COLLECTIONS[cls.SCOPE][2]
            cls.ID_PREFIX = PREFIX[cls.SCOPE]
