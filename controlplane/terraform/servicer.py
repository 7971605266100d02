"""The provider's gRPC servicer: tf's, plus a resource hook for plans that create.

tf (1.2) plans a create without asking the resource, so a resource could only find out at apply
that it will fail: the scope already holds config (import it instead), the scope's trust domain
refuses a section. `SpirlServicer` calls `plan_create(ctx, planned)` on resources that define it
after tf built the plan, and returns its diagnostics with the plan: `terraform plan` fails
there, before anything is written.
"""

from __future__ import annotations

from typing import Any

from tf.iface import PlanContext
from tf.provider import ProviderServicer, _decode_state
from tf.utils import Diagnostics, read_dynamic_value

__all__ = ["SpirlServicer", "install"]


class SpirlServicer(ProviderServicer):
    def PlanResourceChange(self, request: Any, context: Any) -> Any:
        response = super().PlanResourceChange(request, context)
        klass = self._get_res_cls(request.type_name)
        hook = getattr(klass, "plan_create", None)
        if hook is None or read_dynamic_value(request.prior_state) is not None:
            return response
        diags = Diagnostics()
        attrs = self._get_res_attrs(request.type_name)
        blocks = self._get_res_blocks(request.type_name)
        _, planned = _decode_state(diags, attrs, blocks, response.planned_state)
        if planned is None or diags.has_errors():
            return response  # tf reported the problem already
        resource = self.app.new_resource(klass)
        resource.plan_create(PlanContext(diags, request.type_name, changed_fields=set()), planned)
        response.diagnostics.extend(diags.to_pb())
        return response


def install() -> None:
    """Make tf's runner serve SpirlServicer: `tf.runner.run_provider` imports
    `tf.provider.ProviderServicer` when called, so this must run before it."""
    import tf.provider

    tf.provider.ProviderServicer = SpirlServicer  # type: ignore[misc]
