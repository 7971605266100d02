"""Data sources `spirl_trust_domain` and `spirl_cluster`: look up an object by id or by name."""

from __future__ import annotations

from typing import Any, ClassVar

from tf import schema, types
from tf.iface import Config, DataSource, ReadDataContext, State
from tf.utils import Diagnostics

from controlplane.terraform.client import NotFoundError
from controlplane.terraform.common import ProviderBound, reported


class _LookupDataSource(ProviderBound, DataSource):
    NAME: ClassVar[str]
    COLLECTION: ClassVar[str]
    KIND: ClassVar[str]
    # Optional filter narrowing a name lookup (a cluster name is unique only per deployment).
    FILTER: ClassVar[str | None] = None
    EXTRA: ClassVar[tuple[str, ...]] = ()
    DESCRIPTION: ClassVar[str]

    @classmethod
    def get_name(cls) -> str:
        return cls.NAME

    @classmethod
    def _fields(cls) -> list[str]:
        fields = ["id", "name"]
        if cls.FILTER:
            fields.append(cls.FILTER)
        return fields + [*cls.EXTRA, "created_at"]

    @classmethod
    def get_schema(cls) -> schema.Schema:
        attrs = [
            schema.Attribute(
                "id",
                types.String(),
                optional=True,
                computed=True,
                description=f"The {cls.KIND} id.",
            ),
            schema.Attribute(
                "name",
                types.String(),
                optional=True,
                computed=True,
                description=f"The {cls.KIND} name.",
            ),
        ]
        if cls.FILTER:
            attrs.append(
                schema.Attribute(
                    cls.FILTER,
                    types.String(),
                    optional=True,
                    computed=True,
                    description="Narrows a lookup by name.",
                )
            )
        attrs += [schema.Attribute(n, types.String(), computed=True) for n in cls.EXTRA]
        attrs.append(schema.Attribute("created_at", types.String(), computed=True))
        return schema.Schema(attributes=attrs, description=cls.DESCRIPTION)

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        if config.get("id") is None and config.get("name") is None:
            diags.add_error(
                f"{type_name}: set `id` or `name`",
                f"{type_name} looks a {self.KIND} up by id or by name.",
            )

    def _state(self, body: dict[str, Any]) -> State:
        return {f: body.get(f) for f in self._fields()}

    def read(self, ctx: ReadDataContext, config: Config) -> State | None:
        object_id, name = config.get("id"), config.get("name")
        with reported(ctx.diagnostics, f"look up the {self.KIND}"):
            client = self.provider.client
            if isinstance(object_id, str):
                try:
                    found = self._state(client.get(f"{self.COLLECTION}/{object_id}"))
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
            narrow = config.get(self.FILTER) if self.FILTER else None
            if isinstance(narrow, str):
                params[self.FILTER or ""] = narrow
            matches = [
                i
                for i in client.list_items(self.COLLECTION, params or None)
                if i.get("name") == name
            ]
            if len(matches) != 1:
                hint = (
                    f" (set `{self.FILTER}` or `id` to choose)" if self.FILTER and matches else ""
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
    COLLECTION = "/v1/trust-domains"
    KIND = "trust domain"
    DESCRIPTION = "Look up a trust domain by id or name."


class ClusterDataSource(_LookupDataSource):
    NAME = "cluster"
    COLLECTION = "/v1/clusters"
    KIND = "cluster"
    FILTER = "trust_domain_deployment_id"
    DESCRIPTION = "Look up a cluster by id, or by name (optionally within one deployment)."
