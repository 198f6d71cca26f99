"""Quota: reserve the estimate before the call, settle the actual after, refund on failure."""

from __future__ import annotations

from collections.abc import Callable

from aios_mesh.errors import MeshError
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.ports.quota import QuotaStore

__all__ = ["QuotaStep"]


class QuotaStep(StepBase):
    name = "quota"

    def __init__(self, quota: Callable[[], QuotaStore]) -> None:
        self._quota = quota

    async def before(self, call: Call) -> None:
        spec = call.spec
        store = self._quota()
        # a generation knows its estimate only once its prompt is rendered and counted
        estimate = call.estimate or spec.estimate
        call.reservation = await store.reserve(call.tenant, spec.name, estimate,
                                               spec.price.cost(estimate))

    async def after(self, call: Call) -> None:
        if call.reservation is not None:
            store = self._quota()
            await store.settle(call.reservation, call.usage, call.cost)

    async def on_error(self, call: Call, error: MeshError) -> None:
        if call.reservation is not None:
            store = self._quota()
            if call.usage.calls:  # the backend did work before failing: charge what it used
                await store.settle(call.reservation, call.usage, call.cost)
            else:
                await store.refund(call.reservation)
