"""Resources for the object hierarchy: trust domain -> deployment -> cluster.

The API has no rename, so every input forces a replacement; `update` is never needed for a real
change and only echoes the plan.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tf import schema, types
from tf.iface import (
    Config,
    CreateContext,
    DeleteContext,
    ImportContext,
    ReadContext,
    Resource,
    State,
    UpdateContext,
)
from tf.utils import Diagnostics

from controlplane.terraform.client import ApiError, NotFoundError
from controlplane.terraform.common import ProviderBound, reported


class _ObjectResource(ProviderBound, Resource):
    """One API collection. Subclasses name the collection and the input attributes."""

    NAME: ClassVar[str]
    COLLECTION: ClassVar[str]  # "/v1/trust-domains"
    KIND: ClassVar[str]  # for messages: "trust domain"
    ID_PREFIX: ClassVar[str]
    INPUTS: ClassVar[tuple[tuple[str, str], ...]]  # (attribute, description)
    EXTRA_COMPUTED: ClassVar[tuple[tuple[str, str], ...]] = ()
    DESCRIPTION: ClassVar[str]

    @classmethod
    def get_name(cls) -> str:
        return cls.NAME

    @classmethod
    def get_schema(cls) -> schema.Schema:
        attrs = [
            schema.Attribute(
                "id",
                types.String(),
                computed=True,
                description=f"The {cls.KIND} id (`{cls.ID_PREFIX}…`).",
            ),
        ]
        attrs += [
            schema.Attribute(
                name, types.String(), required=True, requires_replace=True, description=desc
            )
            for name, desc in cls.INPUTS
        ]
        attrs += [
            schema.Attribute(name, types.String(), computed=True, description=desc)
            for name, desc in cls.EXTRA_COMPUTED
        ]
        attrs.append(
            schema.Attribute(
                "created_at", types.String(), computed=True, description="Creation time (RFC 3339)."
            )
        )
        return schema.Schema(version=1, attributes=attrs, description=cls.DESCRIPTION)

    def _state(self, body: dict[str, Any]) -> State:
        names = [
            "id",
            *(n for n, _ in self.INPUTS),
            *(n for n, _ in self.EXTRA_COMPUTED),
            "created_at",
        ]
        return {n: body.get(n) for n in names}

    def _path(self, object_id: str) -> str:
        return f"{self.COLLECTION}/{object_id}"

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        for name, _ in self.INPUTS:
            value = config.get(name)
            if isinstance(value, str) and not value.strip():
                diags.add_error(
                    f"Empty {name}", f"{type_name}.{name} may not be empty", path=[name]
                )

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        with reported(ctx.diagnostics, f"create the {self.KIND}"):
            payload = {name: planned[name] for name, _ in self.INPUTS}
            return self._state(self.provider.client.post(self.COLLECTION, payload))
        return None

    def read(self, ctx: ReadContext, current: State) -> State | None:
        object_id = current.get("id")
        if not isinstance(object_id, str):
            return None
        with reported(ctx.diagnostics, f"read the {self.KIND} {object_id}"):
            try:
                return self._state(self.provider.client.get(self._path(object_id)))
            except NotFoundError:
                return None  # deleted outside Terraform: plan will create it again
        return current

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        # Inputs force replacement, so nothing can change here; keep server-side values.
        return {**planned, **{k: current.get(k) for k in ("id", "created_at")}}

    def delete(self, ctx: DeleteContext, current: State) -> None:
        object_id = current.get("id")
        if not isinstance(object_id, str):
            return
        with reported(ctx.diagnostics, f"delete the {self.KIND} {object_id}"):
            try:
                self.provider.client.delete(self._path(object_id))
            except NotFoundError:
                pass  # already gone is what we wanted
            except ApiError as exc:
                if exc.code == "has_children":
                    ctx.diagnostics.add_error(
                        f"Cannot delete the {self.KIND} {object_id}",
                        f"{exc.message}. Delete what belongs to it first (Terraform does this for "
                        "objects it manages; others were made outside this configuration).",
                    )
                    return
                raise

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        object_id = id.strip()
        if not object_id.startswith(self.ID_PREFIX):
            ctx.diagnostics.add_error(
                f"Cannot import spirl_{self.NAME}",
                f"expected a {self.KIND} id starting with {self.ID_PREFIX!r}, got {id!r}",
            )
            return None
        with reported(ctx.diagnostics, f"import the {self.KIND} {object_id}"):
            try:
                return self._state(self.provider.client.get(self._path(object_id)))
            except NotFoundError:
                ctx.diagnostics.add_error(
                    f"Cannot import spirl_{self.NAME}", f"no {self.KIND} with id {object_id!r}"
                )
        return None


class TrustDomainResource(_ObjectResource):
    NAME = "trust_domain"
    COLLECTION = "/v1/trust-domains"
    KIND = "trust domain"
    ID_PREFIX = "td-"
    INPUTS = (("name", "The SPIFFE trust domain name, e.g. `example.org`."),)
    DESCRIPTION = "A SPIFFE trust domain."


class TrustDomainDeploymentResource(_ObjectResource):
    NAME = "trust_domain_deployment"
    COLLECTION = "/v1/trust-domain-deployments"
    KIND = "trust domain deployment"
    ID_PREFIX = "tdd-"
    INPUTS = (
        ("name", "Deployment name, unique within the trust domain."),
        ("trust_domain_id", "Id of the trust domain (`td-…`) this deployment serves."),
    )
    EXTRA_COMPUTED = (("trust_domain_name", "Name of the trust domain."),)
    DESCRIPTION = "A set of trust domain servers serving one trust domain."


class ClusterResource(_ObjectResource):
    NAME = "cluster"
    COLLECTION = "/v1/clusters"
    KIND = "cluster"
    ID_PREFIX = "c-"
    INPUTS = (
        ("name", "Cluster name, unique within the deployment."),
        ("trust_domain_deployment_id", "Id of the deployment (`tdd-…`) the cluster belongs to."),
    )
    DESCRIPTION = "A placement of servers of one deployment (a Kubernetes cluster, a region)."
