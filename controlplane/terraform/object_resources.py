"""Resources for the object hierarchy: trust domain -> deployment -> cluster.

The API has no rename, so every input forces a replacement; `update` is never needed for a real
change and only echoes the plan. Names are checked with the control plane's own rules at
`terraform validate`; import takes an id or a name (`example.org/prod/east`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from tf import schema
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

from controlplane.domain import object_name_problem, trust_domain_name_problem
from controlplane.terraform import lookup
from controlplane.terraform.client import ApiError, NotFoundError
from controlplane.terraform.common import (
    ProviderBound,
    check_id_prefixes,
    computed,
    reported,
    required,
)


class _ObjectResource(lookup.OfScope, ProviderBound, Resource):
    """One API collection. Subclasses name the collection and the input attributes."""

    NAME: ClassVar[str]
    PARENT: ClassVar[tuple[str, str] | None] = None  # (attribute, id prefix) of the parent
    INPUTS: ClassVar[tuple[tuple[str, str], ...]]  # (attribute, description)
    EXTRA_COMPUTED: ClassVar[tuple[tuple[str, str], ...]] = ()
    DESCRIPTION: ClassVar[str]
    IMPORT: ClassVar[tuple[str, str]]  # an id and a name path, for the docs

    @classmethod
    def get_schema(cls) -> schema.Schema:
        return schema.Schema(
            version=1,
            description=cls.DESCRIPTION,
            attributes=[
                computed("id", f"The {cls.KIND} id (`{cls.ID_PREFIX}…`)."),
                *(required(name, desc, replace=True) for name, desc in cls.INPUTS),
                *(computed(name, desc) for name, desc in cls.EXTRA_COMPUTED),
                computed("created_at", "Creation time (RFC 3339)."),
            ],
        )

    def _state(self, body: dict[str, Any]) -> State:
        names = [
            "id",
            *(n for n, _ in self.INPUTS),
            *(n for n, _ in self.EXTRA_COMPUTED),
            "created_at",
        ]
        return {n: body.get(n) for n in names}

    def _path(self, object_id: str) -> str:
        return lookup.object_path(self.SCOPE, object_id)

    @classmethod
    def name_problem(cls, name: str) -> str | None:
        return object_name_problem(name, cls.KIND)

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        name = config.get("name")
        if isinstance(name, str):
            problem = self.name_problem(name)
            if problem:
                diags.add_error(f"Invalid name {name!r}", problem, path=["name"])
        if self.PARENT:
            check_id_prefixes(diags, config, dict([self.PARENT]))

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        with reported(ctx.diagnostics, f"create the {self.KIND}"):
            payload = {name: planned[name] for name, _ in self.INPUTS}
            collection = lookup.COLLECTIONS[self.SCOPE][0]
            return self._state(self.provider.client.post(collection, payload))
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
                    # The control plane's message says what is left and how to remove it.
                    ctx.diagnostics.add_error(
                        f"Cannot delete the {self.KIND} {object_id}: something still belongs to it",
                        f"The control plane says: {exc.message}\n"
                        "Terraform deletes what it manages first; anything else (objects made "
                        "outside this configuration, registered trust domain servers) must be "
                        "removed on the control plane before the destroy can finish. Nothing "
                        "was deleted and the state is unchanged.",
                    )
                    return
                raise

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        with reported(ctx.diagnostics, f"import the {self.KIND} {id!r}"):
            try:
                return self._state(lookup.find(self.provider.client, self.SCOPE, id))
            except lookup.LookupFailed as exc:
                ctx.diagnostics.add_error(
                    f"Cannot import spirl_{self.NAME}",
                    f"{exc}. Import by id ({self.ID_PREFIX}…) or by name "
                    f"({lookup.name_path(self.SCOPE)}).",
                )
        return None


class TrustDomainResource(_ObjectResource):
    NAME = "trust_domain"
    SCOPE = lookup.TRUST_DOMAIN
    INPUTS = (
        (
            "name",
            "The SPIFFE trust domain name, e.g. `example.org`: lowercase letters, digits, "
            "`.`, `-` and `_`.",
        ),
    )
    DESCRIPTION = "A SPIFFE trust domain."
    IMPORT = ("td-0a1b2c3d4e5f", "example.org")

    @classmethod
    def name_problem(cls, name: str) -> str | None:
        return trust_domain_name_problem(name)


class TrustDomainDeploymentResource(_ObjectResource):
    NAME = "trust_domain_deployment"
    SCOPE = lookup.DEPLOYMENT
    PARENT = ("trust_domain_id", lookup.PREFIX[lookup.TRUST_DOMAIN])
    IMPORT = ("tdd-0a1b2c3d4e5f", "example.org/prod")
    INPUTS = (
        (
            "name",
            "Deployment name, unique within the trust domain: 1-63 letters, digits, `.`, `_` "
            "or `-`, starting with a letter or digit.",
        ),
        ("trust_domain_id", "Id of the trust domain (`td-…`) this deployment serves."),
    )
    EXTRA_COMPUTED = (("trust_domain_name", "Name of the trust domain."),)
    DESCRIPTION = "A set of trust domain servers serving one trust domain."


class ClusterResource(_ObjectResource):
    NAME = "cluster"
    SCOPE = lookup.CLUSTER
    PARENT = ("trust_domain_deployment_id", lookup.PREFIX[lookup.DEPLOYMENT])
    IMPORT = ("c-0a1b2c3d4e5f", "example.org/prod/east")
    INPUTS = (
        (
            "name",
            "Cluster name, unique within the deployment: 1-63 letters, digits, `.`, `_` or `-`, "
            "starting with a letter or digit.",
        ),
        ("trust_domain_deployment_id", "Id of the deployment (`tdd-…`) the cluster belongs to."),
    )
    DESCRIPTION = "A placement of servers of one deployment (a Kubernetes cluster, a region)."
