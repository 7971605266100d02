"""Shared helpers for resources and data sources: schema attributes, id checks, and turning
failures into Terraform diagnostics."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, Protocol

from tf import schema, types
from tf.types import TfType, Unknown
from tf.utils import Diagnostics

from controlplane.terraform.client import ApiClient, ApiError

log = logging.getLogger(__name__)


class NotConfiguredError(RuntimeError):
    """A resource needs the control plane but the provider has no usable endpoint or token."""


class ProviderState(Protocol):
    """What resources and data sources use of the provider (controlplane.terraform.provider
    implements it); a Protocol so that imports flow provider -> resources -> common only."""

    @property
    def configured(self) -> bool: ...

    @property
    def client(self) -> ApiClient: ...

    def trust_domain_of(self, scope: str, scope_id: str) -> str: ...


class Failed(Exception):
    """Raised inside `reported()` after a diagnostic was added, to stop the operation."""


@contextmanager
def reported(diags: Diagnostics, action: str) -> Iterator[None]:
    """Run an operation; an API or configuration failure becomes one error diagnostic.

    `Failed` is swallowed too (its diagnostic is already there). Anything else is a bug and
    propagates (tf prints the traceback to Terraform's log).
    """
    from controlplane.terraform.lookup import LookupFailed

    try:
        yield
    except Failed:
        pass
    except NotConfiguredError as exc:
        diags.add_error(f"Cannot {action}", f"{exc}.")
    except (ApiError, LookupFailed) as exc:
        detail = api_error_detail(exc) if isinstance(exc, ApiError) else str(exc)
        diags.add_error(f"Cannot {action}", detail)


def api_error_detail(exc: ApiError) -> str:
    """The error line plus, for a 422, every validation issue the control plane listed."""
    lines = [str(exc)]
    errors = exc.body.get("errors")
    if isinstance(errors, list):
        for err in errors:
            if isinstance(err, dict):
                where = " ".join(str(err.get(k)) for k in ("section", "pointer") if err.get(k))
                lines.append(f"- {where}: {err.get('reason', '')}")
    return "\n".join(lines)


class ProviderBound:
    """Base for resources/data sources: tf builds one instance per request with the provider.
    Terraform's type name is `spirl_<NAME>`."""

    NAME: ClassVar[str]

    def __init__(self, provider: ProviderState):
        self.provider = provider

    @classmethod
    def get_name(cls) -> str:
        return cls.NAME


# -- schema attributes (String unless `kind` says otherwise) --------------------------------------


def required(
    name: str, description: str, *, replace: bool = False, kind: TfType | None = None
) -> schema.Attribute:
    return schema.Attribute(
        name,
        kind or types.String(),
        required=True,
        requires_replace=replace or None,
        description=description,
    )


def optional(
    name: str,
    description: str,
    *,
    computed: bool = False,
    replace: bool = False,
    kind: TfType | None = None,
    default: Any = Unknown,
) -> schema.Attribute:
    return schema.Attribute(
        name,
        kind or types.String(),
        optional=True,
        computed=computed,
        requires_replace=replace or None,
        default=default,
        description=description,
    )


def computed(
    name: str, description: str, *, kind: TfType | None = None, sensitive: bool = False
) -> schema.Attribute:
    return schema.Attribute(
        name, kind or types.String(), computed=True, sensitive=sensitive, description=description
    )


def check_id_prefixes(
    diags: Diagnostics, config: Mapping[str, Any], prefixes: Mapping[str, str]
) -> None:
    """An error for each attribute whose (known) value does not start with its id prefix."""
    for attribute, prefix in prefixes.items():
        value = config.get(attribute)
        if isinstance(value, str) and not value.startswith(prefix):
            diags.add_error(
                f"Invalid {attribute}",
                f"expected an id starting with {prefix!r}, got {value!r}",
                path=[attribute],
            )


def no_scope(diags: Diagnostics, kind: str, scope_id: str, attribute: str) -> None:
    """The error for a config resource whose scope does not exist."""
    diags.add_error(
        f"No {kind} {scope_id}",
        f"The control plane has no {kind} with id {scope_id!r}.",
        path=[attribute],
    )


def import_instead(resource: str, import_id: str, it: str = "it") -> str:
    """How to take config written outside Terraform into `resource` (e.g. spirl_config_section)
    rather than replace it: the end of a refused create's error."""
    return (
        f"Import {it} into this resource instead, then plan again:\n"
        f"  terraform import {resource}.<name> {import_id}\n"
        f'(or an `import` block with id = "{import_id}"), where {resource}.<name> is the '
        f"address of this resource; or remove {it} on the control plane first. If this "
        "resource is tainted by a create whose rollout failed, "
        f"`terraform untaint {resource}.<name>` keeps what it wrote."
    )
