"""`spirl_config_section`: one section at one scope, leaving the scope's other sections alone.

For teams that share a scope (the platform team owns KeyLifecycle, the security team KeyManager).
Writes are `PUT prune=false` with the version just read as `expected_version`: a concurrent write
to *another* section is retried (it cannot touch ours), a change to *this* section made since
Terraform read it is a conflict error, never overwritten. It cannot be mixed with an
authoritative config resource on the same scope (see MIXING_WARNING): that one removes every
section it does not list. With `wait_for_rollout`, create and update wait for the servers after
the write (rollout_wait.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tf import schema
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
from controlplane.terraform.config_resources import MIXING_WARNING

# A write loses the race only to a write of another section between our read and our PUT; a few
# attempts are plenty, and a scope that changes faster than that is worth an error.
WRITE_ATTEMPTS = 5


def section_id(scope: str, scope_id: str, section: str) -> str:
    return f"{scope}/{scope_id}/{section}"


class ConfigSectionResource(ProviderBound, Resource):
    NAME = "config_section"
    NOTES = ("config_section", "wait_for_rollout")  # docs/templates/resources/<note>.md
    IMPORT = ("cluster/c-0a1b2c3d4e5f/KeyManager", "cluster/example.org/prod/east/KeyManager")

    @classmethod
    def get_schema(cls) -> schema.Schema:
        return schema.Schema(
            version=1,
            description=(
                "One configuration section at one scope; the scope's other sections are left "
                "alone. " + MIXING_WARNING
            ),
            attributes=[
                computed("id", "`<scope>/<scope_id>/<section>`."),
                required(
                    "scope",
                    "`trust-domain`, `trust-domain-deployment` or `cluster` (the section must be "
                    "allowed there).",
                    replace=True,
                ),
                required(
                    "scope_id", "Id of the scope's object (`td-…`, `tdd-…` or `c-…`).", replace=True
                ),
                required("section", "The section's name, e.g. `KeyManager`.", replace=True),
                required(
                    "yaml",
                    "YAML text of one document of that section. Compared by canonical form: "
                    "reformatting is not a change.",
                ),
                *rollout_wait.schema_attributes(),
            ],
        )

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _client(self) -> ApiClient:
        return self.provider.client

    @staticmethod
    def _state(
        scope: str,
        scope_id: str,
        section: str,
        text: str,
        options: Mapping[str, Any] | None = None,
    ) -> State:
        """`options` (the plan or the prior state) gives `wait_for_rollout` and `timeouts`."""
        options = options or {}
        return {
            "id": section_id(scope, scope_id, section),
            "scope": scope,
            "scope_id": scope_id,
            "section": section,
            "yaml": text,
            "wait_for_rollout": options.get("wait_for_rollout"),
            "timeouts": options.get("timeouts"),
        }

    def _invalid(self, diags: Diagnostics, config: Config, scope_id: str | None = None) -> bool:
        """Report the problems of `yaml`; with `scope_id`, by the rules of the scope's trust
        domain too (asks the control plane). True when there is any."""
        scope, section, text = config.get("scope"), config.get("section"), config.get("yaml")
        if not (isinstance(scope, str) and scope in lookup.COLLECTIONS):
            return False  # reported by validate(), or unknown
        if not isinstance(section, str):
            return False
        trust_domain = None
        if scope_id is not None and sec.is_known_text(text):
            trust_domain = self.provider.trust_domain_of(scope, scope_id)
        problems = sec.entry_problems(
            section, text, scope, trust_domain, key_label="`section`", value_label="`yaml`"
        )
        for p in problems:
            where = f" at {p.pointer}" if p.pointer else ""
            diags.add_error(
                f"Invalid yaml{where}",
                f"`yaml` (section {section}), JSON Pointer {p.pointer or '(document)'}: {p.reason}",
                path=["yaml"],
            )
        return bool(problems)

    def _current_or_none(self, scope: str, scope_id: str) -> dict[str, Any] | None:
        """The scope's config; None when the control plane says the scope is gone."""
        try:
            return self._client.get_config(scope, scope_id)
        except NotFoundError:
            return None

    def _current(self, diags: Diagnostics, scope: str, scope_id: str) -> dict[str, Any]:
        current = self._current_or_none(scope, scope_id)
        if current is None:
            no_scope(diags, lookup.COLLECTIONS[scope][2], scope_id, "scope_id")
            raise Failed
        return current

    def _already_there(self, diags: Diagnostics, scope: str, scope_id: str, section: str) -> None:
        address_id = section_id(scope, scope_id, section)
        diags.add_error(
            f"spirl_config_section: {scope} {scope_id} already has a {section} section",
            "It was written outside this resource, which would replace it. "
            + import_instead("spirl_config_section", address_id),
            path=["section"],
        )
        raise Failed

    def _write(
        self,
        diags: Diagnostics,
        state: State,
        *,
        prior_text: str | None,
        delete: bool = False,
    ) -> int:
        """PUT (or DELETE) our section, re-reading when another section moved the version;
        returns the scope's version after it.

        `prior_text` None: the section must not exist yet (create). Otherwise the server's
        section must still be what Terraform last read (`prior_text`, canonically), or it is a
        conflict: someone changed it since.
        """
        scope, scope_id, section = state["scope"], state["scope_id"], state["section"]
        for _ in range(WRITE_ATTEMPTS):
            if delete:
                current = self._current_or_none(scope, scope_id)
                if current is None:
                    return 0  # the scope is gone, and the section with it
            else:
                current = self._current(diags, scope, scope_id)
            version = int(current.get("version") or 0)
            on_server = sec.server_sections(current).get(section)
            if prior_text is None and on_server is not None:
                self._already_there(diags, scope, scope_id, section)
            if (
                prior_text is not None
                and on_server is not None
                and not sec.texts_equivalent(prior_text, on_server)
            ):
                diags.add_error(
                    f"spirl_config_section: {section} of {scope} {scope_id} changed",
                    f"The section changed on the control plane since Terraform last read it "
                    f"(the scope is at version {version}). Nothing was written. Review the "
                    "change with `terraform apply -refresh-only` (or `terraform plan`), then "
                    "plan and apply again to put your configuration over it.",
                    path=["yaml"],
                )
                raise Failed
            try:
                if delete:
                    if on_server is None:
                        return version
                    body = self._client.delete_section(
                        scope, scope_id, section, expected_version=version
                    )
                else:
                    body = self._client.put_config(
                        scope, scope_id, state["yaml"], prune=False, expected_version=version
                    )
                return int(body["version"])
            except ConflictError:
                continue  # another section was written meanwhile: read again
        diags.add_error(
            f"spirl_config_section: {scope} {scope_id} keeps changing",
            f"Its config changed {WRITE_ATTEMPTS} times while Terraform tried to write the "
            f"{section} section. Nothing was written; try again.",
        )
        raise Failed

    def _wait(self, diags: Diagnostics, planned: State, operation: str, version: int) -> None:
        rollout_wait.wait_after_write(
            diags,
            self._client,
            planned,
            operation,
            planned["scope"],
            planned["scope_id"],
            version,
            ["yaml"],
            "spirl_config_section",
        )

    # -- Terraform operations ---------------------------------------------------------------

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        if diags.has_errors():
            return
        scope = config.get("scope")
        if isinstance(scope, str) and scope not in lookup.COLLECTIONS:
            diags.add_error(
                "Invalid scope",
                f"scope must be one of {', '.join(lookup.COLLECTIONS)}, got {scope!r}",
                path=["scope"],
            )
            return
        if isinstance(scope, str):
            check_id_prefixes(diags, config, {"scope_id": lookup.COLLECTIONS[scope][1]})
        section = config.get("section")
        if isinstance(section, str) and not section.strip():
            diags.add_error(
                "Empty section", "`section` names a section, e.g. KeyManager", path=["section"]
            )
            return
        rollout_wait.check_timeouts(diags, config)
        self._invalid(diags, config)

    def plan(self, ctx: PlanContext, current: State | None, planned: State) -> State | None:
        if current is None:
            return planned
        rollout_wait.check_timeouts(ctx.diagnostics, planned)
        old, new = current.get("yaml"), planned.get("yaml")
        if sec.is_known_text(old) and sec.is_known_text(new) and sec.texts_equivalent(old, new):
            planned["yaml"] = old  # reformatting only: no change
            return planned
        scope_id = planned.get("scope_id")
        if self.provider.configured and isinstance(scope_id, str):
            with reported(ctx.diagnostics, f"check the {planned.get('section')} section"):
                self._invalid(ctx.diagnostics, planned, scope_id)
        return planned

    def plan_create(self, ctx: PlanContext, planned: State) -> None:
        """Called by SpirlServicer when the plan creates this resource."""
        key = _key(planned)
        if not self.provider.configured or key is None or key[0] not in lookup.COLLECTIONS:
            return  # not known until apply: create() checks then
        scope, scope_id, section = key
        if rollout_wait.check_timeouts(ctx.diagnostics, planned):
            return
        with reported(ctx.diagnostics, f"check the {section} section of {scope} {scope_id}"):
            current = self._current(ctx.diagnostics, scope, scope_id)
            self._invalid(ctx.diagnostics, planned, scope_id)
            if section in sec.server_sections(current):
                self._already_there(ctx.diagnostics, scope, scope_id, section)

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        scope, scope_id, section = planned["scope"], planned["scope_id"], planned["section"]
        with reported(ctx.diagnostics, f"write the {section} section of {scope} {scope_id}"):
            if self._invalid(ctx.diagnostics, planned, scope_id):
                return None
            state = self._state(scope, scope_id, section, planned["yaml"], planned)
            version = self._write(ctx.diagnostics, state, prior_text=None)
            self._wait(ctx.diagnostics, planned, "create", version)
            return state
        return None

    def read(self, ctx: ReadContext, current: State) -> State | None:
        key = _key(current)
        if key is None:
            return None
        scope, scope_id, section = key
        with reported(ctx.diagnostics, f"read the {section} section of {scope} {scope_id}"):
            try:
                body = self._client.get_config(scope, scope_id)
            except NotFoundError:
                return None  # the control plane says the scope is gone, and its config with it
            on_server = sec.server_sections(body).get(section)
            if on_server is None:
                return None  # the scope's config has no such section (any more)
            merged = sec.merge_server_sections({section: current.get("yaml")}, {section: on_server})
            return self._state(scope, scope_id, section, merged[section], current)
        return current

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        scope, scope_id, section = planned["scope"], planned["scope_id"], planned["section"]
        state = self._state(scope, scope_id, section, planned["yaml"], planned)
        if planned["yaml"] == current.get("yaml"):
            return state  # only wait_for_rollout or timeouts changed: nothing to write
        with reported(ctx.diagnostics, f"write the {section} section of {scope} {scope_id}"):
            if self._invalid(ctx.diagnostics, planned, scope_id):
                return None
            version = self._write(ctx.diagnostics, state, prior_text=current.get("yaml"))
            self._wait(ctx.diagnostics, planned, "update", version)
            return state
        return None

    def delete(self, ctx: DeleteContext, current: State) -> None:
        key = _key(current)
        if key is None:
            return
        scope, scope_id, section = key
        with reported(ctx.diagnostics, f"remove the {section} section of {scope} {scope_id}"):
            self._write(ctx.diagnostics, current, prior_text=current.get("yaml"), delete=True)

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        scope, _, rest = id.strip().partition("/")
        ref, _, section = rest.rpartition("/")
        if scope not in lookup.COLLECTIONS or not ref or not section:
            ctx.diagnostics.add_error(
                "Cannot import spirl_config_section",
                f"expected <scope>/<id or name>/<section>, e.g. {self.IMPORT[0]} or "
                f"{self.IMPORT[1]}; got {id!r}",
            )
            return None
        with reported(ctx.diagnostics, f"import the {section} section of {scope} {ref}"):
            try:
                scope_id = str(lookup.find(self._client, scope, ref)["id"])
            except lookup.LookupFailed as exc:
                ctx.diagnostics.add_error("Cannot import spirl_config_section", str(exc))
                return None
            on_server = sec.server_sections(self._client.get_config(scope, scope_id)).get(section)
            if on_server is None:
                ctx.diagnostics.add_error(
                    "Cannot import spirl_config_section",
                    f"{scope} {scope_id} has no {section} section",
                )
                return None
            return self._state(scope, scope_id, section, on_server)
        return None


def _key(state: State) -> tuple[str, str, str] | None:
    """(scope, scope_id, section) of a state or plan; None while any is unknown."""
    scope, scope_id, section = state.get("scope"), state.get("scope_id"), state.get("section")
    if isinstance(scope, str) and isinstance(scope_id, str) and isinstance(section, str):
        return scope, scope_id, section
    return None
