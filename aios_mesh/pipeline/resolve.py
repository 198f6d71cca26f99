"""Model-alias resolution (TTL cache, lock file)."""

from __future__ import annotations

from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.resolver import AliasResolver

__all__ = ["ResolveModel"]


class ResolveModel(StepBase):
    name = "resolve_model"

    def __init__(self, resolver: AliasResolver) -> None:
        self.resolver = resolver

    async def before(self, call: Call) -> None:
        if call.spec.model is not None:
            call.model_ref = await self.resolver.resolve(call.spec.model)
