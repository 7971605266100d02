"""Data sources: look objects up (`spirl_trust_domain`, `spirl_trust_domain_deployment`,
`spirl_cluster`), read a deployment's effective config (`spirl_effective_config`) and its
servers' status (`spirl_servers`)."""

from __future__ import annotations

from typing import Any, ClassVar

from tf import schema, types
from tf.iface import Config, DataSource, ReadDataContext, State
from tf.utils import Diagnostics

from controlplane.fleet import key_manager_type
from controlplane.terraform import lookup
from controlplane.terraform.client import NotFoundError
from controlplane.terraform.common import (
    ProviderBound,
    check_id_prefixes,
    computed,
    optional,
    reported,
    required,
)
from controlplane.terraform.tftypes import Field, Object

CREATED_AT = "Creation time (RFC 3339)."


class _LookupDataSource(lookup.OfScope, ProviderBound, DataSource):
    """Find one object by `id`, or by `name` (narrowed by its parent's id where names are only
    unique per parent)."""

    NAME: ClassVar[str]
    FILTER: ClassVar[tuple[str, str] | None] = None  # (attribute, id prefix) of the parent
    EXTRA: ClassVar[tuple[tuple[str, str], ...]] = ()  # (computed attribute, description)
    DESCRIPTION: ClassVar[str]

    @classmethod
    def _fields(cls) -> list[str]:
        fields = ["id", "name"]
        if cls.FILTER:
            fields.append(cls.FILTER[0])
        return fields + [name for name, _ in cls.EXTRA] + ["created_at"]

    @classmethod
    def get_schema(cls) -> schema.Schema:
        attrs = [
            optional(
                "id", f"The {cls.KIND} id (`{cls.ID_PREFIX}…`). Set `id` or `name`.", computed=True
            ),
            optional("name", f"The {cls.KIND} name. Set `id` or `name`.", computed=True),
        ]
        if cls.FILTER:
            attribute, parent_prefix = cls.FILTER
            attrs.append(
                optional(
                    attribute,
                    f"Id of the parent (`{parent_prefix}…`): narrows a lookup by name, which is "
                    "unique only within it.",
                    computed=True,
                )
            )
        attrs += [computed(name, desc) for name, desc in cls.EXTRA]
        attrs.append(computed("created_at", CREATED_AT))
        return schema.Schema(attributes=attrs, description=cls.DESCRIPTION)

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        if config.get("id") is None and config.get("name") is None:
            diags.add_error(
                f"{type_name}: set `id` or `name`",
                f"{type_name} looks a {self.KIND} up by id or by name.",
            )
        prefixes = {"id": self.ID_PREFIX}
        if self.FILTER:
            prefixes[self.FILTER[0]] = self.FILTER[1]
        check_id_prefixes(diags, config, prefixes)

    def _state(self, body: dict[str, Any]) -> State:
        return {f: body.get(f) for f in self._fields()}

    def read(self, ctx: ReadDataContext, config: Config) -> State | None:
        object_id, name = config.get("id"), config.get("name")
        collection = lookup.COLLECTIONS[self.SCOPE][0]
        with reported(ctx.diagnostics, f"look up the {self.KIND}"):
            client = self.provider.client
            if isinstance(object_id, str):
                try:
                    found = self._state(client.get(lookup.object_path(self.SCOPE, object_id)))
                except NotFoundError:
                    ctx.diagnostics.add_error(
                        f"No {self.KIND} {object_id}", f"no {self.KIND} has id {object_id!r}"
                    )
                    return None
                if isinstance(name, str) and found["name"] != name:
                    ctx.diagnostics.add_error(
                        f"{self.KIND} {object_id} is not named {name!r}",
                        f"its name is {found['name']!r}",
                    )
                    return None
                return found
            params = {}
            narrow = config.get(self.FILTER[0]) if self.FILTER else None
            if self.FILTER and isinstance(narrow, str):
                params[self.FILTER[0]] = narrow
            matches = [
                i for i in client.list_items(collection, params or None) if i.get("name") == name
            ]
            if len(matches) != 1:
                hint = (
                    f" (set `{self.FILTER[0]}` or `id` to choose)"
                    if self.FILTER and matches
                    else ""
                )
                ctx.diagnostics.add_error(
                    f"{len(matches)} {self.KIND}s named {name!r}",
                    f"expected exactly one {self.KIND} named {name!r}, found "
                    f"{', '.join(str(m.get('id')) for m in matches) or 'none'}{hint}",
                )
                return None
            return self._state(matches[0])
        return None


class TrustDomainDataSource(_LookupDataSource):
    NAME = "trust_domain"
    SCOPE = lookup.TRUST_DOMAIN
    DESCRIPTION = "Look up a trust domain by id or name."


class DeploymentDataSource(_LookupDataSource):
    NAME = "trust_domain_deployment"
    SCOPE = lookup.DEPLOYMENT
    FILTER = ("trust_domain_id", lookup.PREFIX[lookup.TRUST_DOMAIN])
    EXTRA = (("trust_domain_name", "Name of the trust domain the deployment serves."),)
    DESCRIPTION = "Look up a trust domain deployment by id, or by name (within one trust domain)."


class ClusterDataSource(_LookupDataSource):
    NAME = "cluster"
    SCOPE = lookup.CLUSTER
    FILTER = ("trust_domain_deployment_id", lookup.PREFIX[lookup.DEPLOYMENT])
    DESCRIPTION = "Look up a cluster by id, or by name (optionally within one deployment)."


class _PlacementDataSource(ProviderBound, DataSource):
    """Inputs: a deployment and optionally one of its clusters; outputs: `outputs()`."""

    NAME: ClassVar[str]
    DESCRIPTION: ClassVar[str]
    CLUSTER_DESCRIPTION: ClassVar[str]

    @classmethod
    def outputs(cls) -> list[schema.Attribute]:
        raise NotImplementedError

    @classmethod
    def get_schema(cls) -> schema.Schema:
        return schema.Schema(
            description=cls.DESCRIPTION,
            attributes=[
                required("trust_domain_deployment_id", "Id of the deployment (`tdd-…`)."),
                optional("cluster_id", cls.CLUSTER_DESCRIPTION),
                *cls.outputs(),
            ],
        )

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        check_id_prefixes(
            diags,
            config,
            {
                "trust_domain_deployment_id": lookup.PREFIX[lookup.DEPLOYMENT],
                "cluster_id": lookup.PREFIX[lookup.CLUSTER],
            },
        )


SECTION = Object(
    [
        Field("yaml", types.String(), "The section's document, canonical YAML."),
        Field(
            "scope",
            types.String(),
            "Scope it comes from: `trust-domain`, `trust-domain-deployment` or `cluster`.",
        ),
        Field("scope_id", types.String(), "Id of that scope's object."),
        Field("scope_version", types.Number(), "Config version of that scope."),
    ]
)


class EffectiveConfigDataSource(_PlacementDataSource):
    NAME = "effective_config"
    DESCRIPTION = (
        "The effective config servers of a deployment (in one cluster) receive: per section, "
        "cluster beats deployment beats trust domain."
    )
    CLUSTER_DESCRIPTION = "Id of a cluster of that deployment (`c-…`): include its config."

    @classmethod
    def outputs(cls) -> list[schema.Attribute]:
        return [
            computed(
                "version",
                "Effective version: grows whenever any of the scopes changes; the version "
                "servers report as desired and applied.",
                kind=types.Number(),
            ),
            computed(
                "sections",
                "Section name -> the section and the scope it comes from.",
                kind=types.Map(SECTION),
            ),
        ]

    def read(self, ctx: ReadDataContext, config: Config) -> State | None:
        tdd, cluster = config.get("trust_domain_deployment_id"), config.get("cluster_id")
        with reported(ctx.diagnostics, f"read the effective config of {tdd}"):
            params = {"trust_domain_deployment_id": tdd}
            if isinstance(cluster, str):
                params["cluster_id"] = cluster
            body = self.provider.client.get("/v1/effective-config", params)
            sections = body.get("sections") or {}
            return {
                "trust_domain_deployment_id": tdd,
                "cluster_id": cluster,
                "version": body.get("version"),
                "sections": {
                    name: SECTION.encode(section)
                    for name, section in sections.items()
                    if isinstance(section, dict)
                },
            }
        return None


SERVER = Object(
    [
        Field("id", types.String(), "Server id (`tds-…`)."),
        Field("name", types.String(), "Name the server registered with."),
        Field("cluster_id", types.String(), "Its cluster (`c-…`), or null."),
        Field(
            "state",
            types.String(),
            "`HEALTHY` or `UNHEALTHY` (its last report), `UNKNOWN` (no recent report) or "
            "`UNREACHABLE` (no contact within the staleness window).",
        ),
        Field("health", types.String(), "`HEALTHY` or `UNHEALTHY`, from its last report."),
        Field("desired_version", types.Number(), "Effective config version it should apply."),
        Field("applied_version", types.Number(), "Effective config version it applies."),
        Field("applied_at", types.String(), "When it applied that version (RFC 3339)."),
        Field("error", types.String(), "Why it refused the last version, or null."),
        Field("key_manager", types.String(), "Type of its active key manager."),
        Field("last_contact_at", types.String(), "Last report or long-poll (RFC 3339)."),
    ]
)


class ServersDataSource(_PlacementDataSource):
    NAME = "servers"
    DESCRIPTION = (
        "The trust domain servers registered to a deployment and their status: the version "
        "they applied and their health."
    )
    CLUSTER_DESCRIPTION = "Only the servers of this cluster (`c-…`)."

    @classmethod
    def outputs(cls) -> list[schema.Attribute]:
        return [computed("servers", "One entry per server, by id.", kind=types.List(SERVER))]

    def read(self, ctx: ReadDataContext, config: Config) -> State | None:
        tdd, cluster = config.get("trust_domain_deployment_id"), config.get("cluster_id")
        with reported(ctx.diagnostics, f"read the servers of {tdd}"):
            items = self.provider.client.list_items(
                f"{lookup.object_path(lookup.DEPLOYMENT, str(tdd))}/servers"
            )
            servers = []
            for item in sorted(items, key=lambda i: str(i.get("id"))):
                if isinstance(cluster, str) and item.get("cluster_id") != cluster:
                    continue
                entry = {**item, "key_manager": key_manager_type(item.get("key_manager"))}
                servers.append(SERVER.encode(entry))
            return {"trust_domain_deployment_id": tdd, "cluster_id": cluster, "servers": servers}
        return None
