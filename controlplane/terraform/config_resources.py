"""`spirl_trust_domain_config`, `spirl_trust_domain_deployment_config`, `spirl_cluster_config`.

A config resource owns its whole scope: every write is a PUT with prune=true, and destroying it
removes every section. Writes carry the version Terraform last read as `expected_version`, so a
change made meanwhile by someone else (spirlctl, another Terraform run) is a clear error and never
a silent overwrite.

`sections` is compared by canonical form (see sections.py): a reformatted YAML value plans no
change, a change made on the control plane shows as drift and plans an update.

What can be known before apply is checked at plan time: null or empty entries, the documents with
the control plane's rules including those of the scope's trust domain, a scope that does not
exist, and (on create) a scope that already holds config, which must be imported instead.

With `wait_for_rollout`, create and update wait for the servers after the write (rollout_wait.py).
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

from controlplane.terraform import lookup, rollout_wait
from controlplane.terraform import sections as sec
from controlplane.terraform.client import ApiClient, ConflictError, NotFoundError
from controlplane.terraform.common import (
    Failed,
    ProviderBound,
    check_id_prefixes,
    computed,
    import_instead,
    no_scope,
    reported,
    required,
)

MIXING_WARNING = (
    "An authoritative config resource (spirl_trust_domain_config, "
    "spirl_trust_domain_deployment_config, spirl_cluster_config) owns its whole scope and "
    "cannot be mixed with spirl_config_section on the same scope: each apply of one undoes the "
    "other."
)


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


class _ConfigResource(lookup.OfScope, ProviderBound, Resource):
    NAME: ClassVar[str]
    SCOPE_ATTR: ClassVar[str]  # "cluster_id"
    IMPORT: ClassVar[tuple[str, str]]  # an id and a name path, for the docs
    NOTES = ("scope_config", "wait_for_rollout")  # docs/templates/resources/<note>.md

    @classmethod
    def get_schema(cls) -> schema.Schema:
        return schema.Schema(
            version=1,
            description=(
                f"All configuration sections at {cls.KIND} scope. The resource owns the "
                "scope: sections not listed are removed. " + MIXING_WARNING
            ),
            attributes=[
                computed("id", f"Same as `{cls.SCOPE_ATTR}`."),
                required(
                    cls.SCOPE_ATTR,
                    f"Id of the {cls.KIND} (`{cls.ID_PREFIX}…`).",
                    replace=True,
                ),
                required(
                    "sections",
                    "Section name -> YAML text of one document of that section, e.g. "
                    "`KeyManager = <<-YAML ... YAML`. Compared by canonical form: reformatting "
                    "is not a change. An empty map keeps the scope empty; a null or empty entry "
                    "is an error.",
                    kind=types.Map(types.String()),
                ),
                computed(
                    "version",
                    "Config version at this scope (0: nothing was ever written).",
                    kind=types.Number(),
                ),
                computed("updated_at", "Time of that version (RFC 3339); null for version 0."),
                *rollout_wait.schema_attributes(),
            ],
        )

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _client(self) -> ApiClient:
        return self.provider.client

    def _state(
        self,
        scope_id: str,
        sections: Mapping[str, str],
        version: Any,
        updated_at: Any,
        options: Mapping[str, Any] | None = None,
    ) -> State:
        """The resource's state; `options` (the plan or the prior state) gives the settings that
        only steer the provider (`wait_for_rollout`, `timeouts`): null after an import."""
        options = options or {}
        return {
            "id": scope_id,
            self.SCOPE_ATTR: scope_id,
            "sections": dict(sections),
            "version": version,
            "updated_at": updated_at,
            "wait_for_rollout": options.get("wait_for_rollout"),
            "timeouts": options.get("timeouts"),
        }

    def _updated_at(self, scope_id: str, version: int) -> Any:
        if not version:
            return None
        try:
            return self._client.get_config_version(self.SCOPE, scope_id, version).get("updated_at")
        except NotFoundError:
            return None

    def _invalid_sections(
        self, diags: Diagnostics, sections: Mapping[str, Any], scope_id: str | None = None
    ) -> bool:
        """Report every problem of `sections`; with `scope_id`, by the rules of the scope's
        trust domain too (asks the control plane). True when there is any."""
        trust_domain = None
        if scope_id is not None and sec.all_known(sections):
            trust_domain = self.provider.trust_domain_of(self.SCOPE, scope_id)
        problems = sec.validate_sections(sections, self.SCOPE, trust_domain)
        for p in problems:
            diags.add_error(p.summary, p.detail, path=["sections", (p.key,)])
        return bool(problems)

    def _check_create(
        self, diags: Diagnostics, scope_id: str, sections: Mapping[str, Any]
    ) -> int | None:
        """Everything that stops a create, each an error: the scope does not exist, it already
        holds sections (which this resource would silently replace), `sections` breaks a rule
        of the scope's trust domain. Returns the scope's version when the create may go on."""
        try:
            current = self._client.get_config(self.SCOPE, scope_id)
        except NotFoundError:
            no_scope(diags, self.KIND, scope_id, self.SCOPE_ATTR)
            return None
        existing = sec.server_sections(current)
        if existing:
            diags.add_error(
                f"spirl_{self.NAME}: {scope_id} already has configuration",
                f"The {self.KIND} {scope_id} already holds the sections "
                f"{', '.join(sorted(existing))} (version {current.get('version')}), written "
                "outside this resource, which owns the whole scope and would replace them. "
                + import_instead(f"spirl_{self.NAME}", scope_id, it="them"),
                path=[self.SCOPE_ATTR],
            )
        invalid = self._invalid_sections(diags, sections, scope_id)
        if existing or invalid:
            return None
        return int(current.get("version") or 0)

    def _write(
        self, diags: Diagnostics, scope_id: str, desired: Mapping[str, Any], expected_version: int
    ) -> int:
        """Make the scope hold exactly `desired`; returns the new version. Raises Failed on conflict.

        Every create, update and destroy ends here; create and update then wait for the rollout
        (`_wait`) when asked to.
        """
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
                conflict_detail(self.KIND, scope_id, exc, expected_version),
                path=["sections"],
            )
            raise Failed from exc

    def _wait(
        self, diags: Diagnostics, planned: State, operation: str, scope_id: str, version: int
    ) -> None:
        rollout_wait.wait_after_write(
            diags,
            self._client,
            planned,
            operation,
            self.SCOPE,
            scope_id,
            version,
            ["sections"],
            f"spirl_{self.NAME}",
        )

    # -- Terraform operations ---------------------------------------------------------------

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        if diags.has_errors():
            return
        check_id_prefixes(diags, config, {self.SCOPE_ATTR: self.ID_PREFIX})
        rollout_wait.check_timeouts(diags, config)
        sections = config.get("sections")
        if isinstance(sections, Mapping):
            self._invalid_sections(diags, sections)

    def plan(self, ctx: PlanContext, current: State | None, planned: State) -> State | None:
        if current is None:
            return planned
        rollout_wait.check_timeouts(ctx.diagnostics, planned)
        prior_sections = current.get("sections")
        wanted = planned.get("sections")
        if sec.maps_equivalent(prior_sections, wanted):
            # Same canonical content: keep the prior text so Terraform sees no change at all.
            # (Terraform accepts a planned value equal to the prior state in place of config.)
            planned["sections"] = prior_sections
            planned["version"] = current.get("version")
            planned["updated_at"] = current.get("updated_at")
            return planned
        planned["version"] = Unknown
        planned["updated_at"] = Unknown
        scope_id = planned.get(self.SCOPE_ATTR)
        if self.provider.configured and isinstance(scope_id, str) and isinstance(wanted, Mapping):
            with reported(ctx.diagnostics, f"check the config of {self.KIND} {scope_id}"):
                self._invalid_sections(ctx.diagnostics, wanted, scope_id)
        return planned

    def plan_create(self, ctx: PlanContext, planned: State) -> None:
        """Called by SpirlServicer when the plan creates this resource."""
        scope_id = planned.get(self.SCOPE_ATTR)
        sections = planned.get("sections")
        if rollout_wait.check_timeouts(ctx.diagnostics, planned):
            return
        if not (self.provider.configured and isinstance(scope_id, str)):
            return  # not known until apply: create() checks then
        if not isinstance(sections, Mapping):
            return
        with reported(ctx.diagnostics, f"check the config of {self.KIND} {scope_id}"):
            self._check_create(ctx.diagnostics, scope_id, sections)

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        scope_id = planned[self.SCOPE_ATTR]
        desired = planned.get("sections") or {}
        with reported(ctx.diagnostics, f"write the config of {self.KIND} {scope_id}"):
            expected = self._check_create(ctx.diagnostics, scope_id, desired)
            if expected is None:
                return None
            version = self._write(ctx.diagnostics, scope_id, desired, expected)
            state = self._state(
                scope_id, desired, version, self._updated_at(scope_id, version), planned
            )
            self._wait(ctx.diagnostics, planned, "create", scope_id, version)
            return state
        return None

    def read(self, ctx: ReadContext, current: State) -> State | None:
        scope_id = current.get(self.SCOPE_ATTR) or current.get("id")
        if not isinstance(scope_id, str):
            return None
        with reported(ctx.diagnostics, f"read the config of {self.KIND} {scope_id}"):
            try:
                body = self._client.get_config(self.SCOPE, scope_id)
            except NotFoundError:
                return None  # the control plane says the scope is gone, and its config with it
            server = sec.server_sections(body)
            prior = current.get("sections")
            added = sorted(set(server) - set(prior if isinstance(prior, Mapping) else {}))
            if added:
                ctx.diagnostics.add_warning(
                    f"Sections added to {self.KIND} {scope_id} outside spirl_{self.NAME}",
                    f"{', '.join(added)} appeared on the control plane; this resource owns the "
                    "scope and plans to remove them. If a spirl_config_section manages them, "
                    f"remove one of the two: {MIXING_WARNING}",
                )
            merged = sec.merge_server_sections(prior, server)
            return self._state(
                scope_id, merged, int(body.get("version") or 0), body.get("updated_at"), current
            )
        return current

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        scope_id = planned[self.SCOPE_ATTR]
        desired = planned.get("sections") or {}
        expected = int(current.get("version") or 0)
        if sec.maps_equivalent(current.get("sections"), desired):
            # Only wait_for_rollout or timeouts changed: nothing to write, nothing to wait for.
            return self._state(
                scope_id, desired, current.get("version"), current.get("updated_at"), planned
            )
        with reported(ctx.diagnostics, f"write the config of {self.KIND} {scope_id}"):
            if self._invalid_sections(ctx.diagnostics, desired, scope_id):
                return None
            version = self._write(ctx.diagnostics, scope_id, desired, expected)
            # Return exactly the planned text: Terraform insists the result equals the plan.
            state = self._state(
                scope_id, desired, version, self._updated_at(scope_id, version), planned
            )
            self._wait(ctx.diagnostics, planned, "update", scope_id, version)
            return state
        return None

    def delete(self, ctx: DeleteContext, current: State) -> None:
        scope_id = current.get(self.SCOPE_ATTR) or current.get("id")
        if not isinstance(scope_id, str):
            return
        expected = int(current.get("version") or 0)
        # NotFound: the control plane says the scope object is gone, and its config with it.
        action = f"remove the config of {self.KIND} {scope_id}"
        with reported(ctx.diagnostics, action), contextlib.suppress(NotFoundError):
            self._write(ctx.diagnostics, scope_id, {}, expected)

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        with reported(ctx.diagnostics, f"import the config of {self.KIND} {id!r}"):
            try:
                scope_id = str(lookup.find(self._client, self.SCOPE, id)["id"])
            except lookup.LookupFailed as exc:
                ctx.diagnostics.add_error(
                    f"Cannot import spirl_{self.NAME}",
                    f"{exc}. Import by the {self.KIND}'s id ({self.ID_PREFIX}…) or name "
                    f"({lookup.name_path(self.SCOPE)}).",
                )
                return None
            body = self._client.get_config(self.SCOPE, scope_id)
            return self._state(
                scope_id,
                sec.server_sections(body),
                int(body.get("version") or 0),
                body.get("updated_at"),
            )
        return None


class TrustDomainConfigResource(_ConfigResource):
    NAME = "trust_domain_config"
    SCOPE = lookup.TRUST_DOMAIN
    SCOPE_ATTR = "trust_domain_id"
    IMPORT = ("td-0a1b2c3d4e5f", "example.org")


class DeploymentConfigResource(_ConfigResource):
    NAME = "trust_domain_deployment_config"
    SCOPE = lookup.DEPLOYMENT
    SCOPE_ATTR = "trust_domain_deployment_id"
    IMPORT = ("tdd-0a1b2c3d4e5f", "example.org/prod")


class ClusterConfigResource(_ConfigResource):
    NAME = "cluster_config"
    SCOPE = lookup.CLUSTER
    SCOPE_ATTR = "cluster_id"
    IMPORT = ("c-0a1b2c3d4e5f", "example.org/prod/east")
