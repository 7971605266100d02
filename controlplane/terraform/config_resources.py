"""`spirl_cluster_config` and `spirl_trust_domain_deployment_config`.

A config resource owns its whole scope: every write is a PUT with prune=true, and destroying it
removes every section. Writes carry the version Terraform last read as `expected_version`, so a
change made meanwhile by someone else (spirlctl, another Terraform run) is a clear error and never
a silent overwrite.

`sections` is compared by canonical form (see sections.py): a reformatted YAML value plans no
change, a change made on the control plane shows as drift and plans an update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, ClassVar

from tf import schema, types
from tf.iface import (
    Config,
    CreateContext,
    DeleteContext,
    ImportContext,
    PlanContext,
    ReadContext,
    Resource,
    State,
    UpdateContext,
)
from tf.types import Unknown
from tf.utils import Diagnostics

from controlplane.terraform import sections as sec
from controlplane.terraform.client import ApiClient, ConflictError, NotFoundError
from controlplane.terraform.common import Failed, ProviderBound, reported


def conflict_detail(kind: str, scope_id: str, exc: ConflictError, expected: Any) -> str:
    expected = exc.expected_version if exc.expected_version is not None else expected
    current = exc.current_version if exc.current_version is not None else "?"
    return (
        f"The {kind} config of {scope_id} changed on the control plane since Terraform last read it: "
        f"Terraform expected version {expected}, the control plane is at version {current}. "
        "Nothing was written. Review the change with `terraform apply -refresh-only` (or "
        "`terraform plan`), then run `terraform plan` / `terraform apply` again to apply your "
        "configuration over it."
    )


class _ConfigResource(ProviderBound, Resource):
    NAME: ClassVar[str]
    SCOPE: ClassVar[str]  # API scope name
    SCOPE_ATTR: ClassVar[str]  # "cluster_id"
    SCOPE_KIND: ClassVar[str]  # "cluster"
    ID_PREFIX: ClassVar[str]
    OBJECT_COLLECTION: ClassVar[str]

    @classmethod
    def get_name(cls) -> str:
        return cls.NAME

    @classmethod
    def get_schema(cls) -> schema.Schema:
        return schema.Schema(
            version=1,
            description=(
                f"All configuration sections at {cls.SCOPE_KIND} scope. The resource owns the "
                "scope: sections not listed are removed."
            ),
            attributes=[
                schema.Attribute(
                    "id", types.String(), computed=True, description=f"Same as `{cls.SCOPE_ATTR}`."
                ),
                schema.Attribute(
                    cls.SCOPE_ATTR,
                    types.String(),
                    required=True,
                    requires_replace=True,
                    description=f"Id of the {cls.SCOPE_KIND} (`{cls.ID_PREFIX}…`).",
                ),
                schema.Attribute(
                    "sections",
                    types.Map(types.String()),
                    required=True,
                    description=(
                        "Section name -> YAML text of one document of that section, e.g. "
                        "`KeyManager = <<-YAML ... YAML`. Compared by canonical form: "
                        "reformatting is not a change."
                    ),
                ),
                schema.Attribute(
                    "version",
                    types.Number(),
                    computed=True,
                    description="Config version at this scope.",
                ),
                schema.Attribute(
                    "updated_at", types.String(), computed=True, description="Time of that version."
                ),
            ],
        )

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _client(self) -> ApiClient:
        return self.provider.client

    def _state(
        self, scope_id: str, sections: Mapping[str, str], version: Any, updated_at: Any
    ) -> State:
        return {
            "id": scope_id,
            self.SCOPE_ATTR: scope_id,
            "sections": dict(sections),
            "version": version,
            "updated_at": updated_at,
        }

    def _updated_at(self, scope_id: str, version: int) -> Any:
        if not version:
            return None
        try:
            return self._client.get_config_version(self.SCOPE, scope_id, version).get("updated_at")
        except NotFoundError:
            return None

    def _scope_exists(self, scope_id: str) -> bool:
        try:
            self._client.get(f"{self.OBJECT_COLLECTION}/{scope_id}")
        except NotFoundError:
            return False
        return True

    def _write(
        self, diags: Diagnostics, scope_id: str, desired: Mapping[str, Any], expected_version: int
    ) -> int:
        """Make the scope hold exactly `desired`; returns the new version. Raises Failed on conflict."""
        try:
            if desired:
                body = self._client.put_config(
                    self.SCOPE,
                    scope_id,
                    sec.upload_text(desired),
                    prune=True,
                    expected_version=expected_version,
                )
                return int(body["version"])
            # An upload must hold a document, so an empty map deletes section by section.
            current = self._client.get_config(self.SCOPE, scope_id)
            version = int(current.get("version") or 0)
            if version != expected_version:
                raise ConflictError(
                    409,
                    "version_conflict",
                    "version conflict",
                    {"expected_version": expected_version, "current_version": version},
                )
            for name in sorted(sec.server_sections(current)):
                version = int(
                    self._client.delete_section(
                        self.SCOPE, scope_id, name, expected_version=version
                    )["version"]
                )
            return version
        except ConflictError as exc:
            diags.add_error(
                f"spirl_{self.NAME}: version conflict on {scope_id}",
                conflict_detail(self.SCOPE_KIND, scope_id, exc, expected_version),
                path=["sections"],
            )
            raise Failed from exc

    def _invalid_sections(self, diags: Diagnostics, sections: Mapping[str, Any]) -> bool:
        problems = sec.validate_sections(sections, self.SCOPE)
        for p in problems:
            diags.add_error(p.summary, p.detail, path=["sections", (p.key,)])
        return bool(problems)

    # -- Terraform operations ---------------------------------------------------------------

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        if diags.has_errors():
            return
        scope_id = config.get(self.SCOPE_ATTR)
        if isinstance(scope_id, str) and not scope_id.startswith(self.ID_PREFIX):
            diags.add_error(
                f"Invalid {self.SCOPE_ATTR}",
                f"expected a {self.SCOPE_KIND} id starting with {self.ID_PREFIX!r}, got {scope_id!r}",
                path=[self.SCOPE_ATTR],
            )
        sections = config.get("sections")
        if isinstance(sections, Mapping):
            self._invalid_sections(diags, sections)

    def plan(self, ctx: PlanContext, current: State | None, planned: State) -> State | None:
        if current is None:
            return planned
        prior_sections = current.get("sections")
        wanted = planned.get("sections")
        if sec.maps_equivalent(prior_sections, wanted):
            # Same canonical content: keep the prior text so Terraform sees no change at all.
            # (Terraform accepts a planned value equal to the prior state in place of config.)
            planned["sections"] = prior_sections
            planned["version"] = current.get("version")
            planned["updated_at"] = current.get("updated_at")
        else:
            planned["version"] = Unknown
            planned["updated_at"] = Unknown
        return planned

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        scope_id = planned[self.SCOPE_ATTR]
        desired = planned.get("sections") or {}
        with reported(ctx.diagnostics, f"write the config of {self.SCOPE_KIND} {scope_id}"):
            if self._invalid_sections(ctx.diagnostics, desired):
                return None
            current = self._client.get_config(self.SCOPE, scope_id)
            existing = sec.server_sections(current)
            version = int(current.get("version") or 0)
            if existing:
                # Owning the scope would silently replace config someone else wrote: refuse.
                ctx.diagnostics.add_error(
                    f"spirl_{self.NAME}: {scope_id} already has configuration",
                    f"The {self.SCOPE_KIND} {scope_id} already holds sections "
                    f"{', '.join(sorted(existing))} (version {version}). Import it instead: "
                    f"`terraform import <address> {scope_id}`, or remove them first.",
                )
                return None
            version = self._write(ctx.diagnostics, scope_id, desired, version)
            return self._state(scope_id, desired, version, self._updated_at(scope_id, version))
        return None

    def read(self, ctx: ReadContext, current: State) -> State | None:
        scope_id = current.get(self.SCOPE_ATTR) or current.get("id")
        if not isinstance(scope_id, str):
            return None
        with reported(ctx.diagnostics, f"read the config of {self.SCOPE_KIND} {scope_id}"):
            try:
                body = self._client.get_config(self.SCOPE, scope_id)
            except NotFoundError:
                return None  # the scope object is gone, and its config with it
            if not body.get("version") and not self._scope_exists(scope_id):
                return None
            merged = sec.merge_server_sections(current.get("sections"), sec.server_sections(body))
            return self._state(
                scope_id, merged, int(body.get("version") or 0), body.get("updated_at")
            )
        return current

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        scope_id = planned[self.SCOPE_ATTR]
        desired = planned.get("sections") or {}
        expected = int(current.get("version") or 0)
        with reported(ctx.diagnostics, f"write the config of {self.SCOPE_KIND} {scope_id}"):
            if self._invalid_sections(ctx.diagnostics, desired):  # values unknown at plan time
                return None
            version = self._write(ctx.diagnostics, scope_id, desired, expected)
            # Return exactly the planned text: Terraform insists the result equals the plan.
            return self._state(scope_id, desired, version, self._updated_at(scope_id, version))
        return None

    def delete(self, ctx: DeleteContext, current: State) -> None:
        scope_id = current.get(self.SCOPE_ATTR) or current.get("id")
        if not isinstance(scope_id, str):
            return
        expected = int(current.get("version") or 0)
        # NotFound: the scope object is gone already, and its config with it.
        action = f"remove the config of {self.SCOPE_KIND} {scope_id}"
        with reported(ctx.diagnostics, action), contextlib.suppress(NotFoundError):
            self._write(ctx.diagnostics, scope_id, {}, expected)

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        scope_id = id.strip()
        if not scope_id.startswith(self.ID_PREFIX):
            ctx.diagnostics.add_error(
                f"Cannot import spirl_{self.NAME}",
                f"import by the {self.SCOPE_KIND} id (`{self.ID_PREFIX}…`), got {id!r}",
            )
            return None
        with reported(ctx.diagnostics, f"import the config of {self.SCOPE_KIND} {scope_id}"):
            try:
                body = self._client.get_config(self.SCOPE, scope_id)
            except NotFoundError:
                ctx.diagnostics.add_error(
                    f"Cannot import spirl_{self.NAME}", f"no {self.SCOPE_KIND} with id {scope_id!r}"
                )
                return None
            return self._state(
                scope_id,
                sec.server_sections(body),
                int(body.get("version") or 0),
                body.get("updated_at"),
            )
        return None


class ClusterConfigResource(_ConfigResource):
    NAME = "cluster_config"
    SCOPE = "cluster"
    SCOPE_ATTR = "cluster_id"
    SCOPE_KIND = "cluster"
    ID_PREFIX = "c-"
    OBJECT_COLLECTION = "/v1/clusters"


class DeploymentConfigResource(_ConfigResource):
    NAME = "trust_domain_deployment_config"
    SCOPE = "trust-domain-deployment"
    SCOPE_ATTR = "trust_domain_deployment_id"
    SCOPE_KIND = "trust domain deployment"
    ID_PREFIX = "tdd-"
    OBJECT_COLLECTION = "/v1/trust-domain-deployments"
