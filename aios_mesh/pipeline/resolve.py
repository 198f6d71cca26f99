"""Model-alias resolution (TTL cache, lock file) and the canary split."""

from __future__ import annotations

import hashlib

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import ConfigError
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.ports.registry import ModelRef
from aios_mesh.resolver import AliasResolver

__all__ = ["ResolveModel"]


class ResolveModel(StepBase):
    name = "resolve_model"

    def __init__(self, resolver: AliasResolver) -> None:
        self.resolver = resolver

    async def before(self, call: Call) -> None:
        spec = call.spec
        if spec.model is None:  # a function capability: its handler is the "model"
            call.model_ref = self._function(spec)
            return
        canary = spec.canary
        if canary is not None and not canary.shadow and canary.percent > 0:
            # Sticky per tenant and question (feature-flag style bucketing): the same input
            # always meets the same version, so answers stay consistent, the response cache
            # keeps hitting, and a replayed record lands on the same side.
            sticky = call.input_sha256 or call.record_id
            digest = hashlib.sha256(f"{call.tenant}\0{sticky}".encode()).digest()
            bucket = int.from_bytes(digest[:4], "big") % 10_000
            if bucket < canary.percent * 100:
                call.variant = "canary"  # the prompt step renders a canary prompt for it
                if canary.model is not None:
                    call.model_ref = await self.resolver.resolve(canary.model)
                    await self._note_live(call, canary.model)
                    return
            else:
                call.variant = "primary"
        # Most calls find the model in the cache: no coroutine for them (~8 µs cold each).
        call.model_ref = self.resolver.cached(spec.model) or await self.resolver.resolve(
            spec.model)
        if self.resolver.lock is not None:
            await self._note_live(call, spec.model)

    def _function(self, spec: CapabilitySpec) -> ModelRef:
        """A handler's "model": its name and version, and for a capability defined beyond
        its code (an agent) the digest of that definition, which must be the one the lock
        pins (the record's ``model.source`` names it)."""
        sha = spec.definition_sha256
        if sha is None:
            return ModelRef(name=f"function:{spec.name}", version=spec.version)
        lock = self.resolver.lock
        pin = lock.definitions.get(spec.key) if lock is not None else None
        if pin is not None and pin.sha256 != sha:
            raise ConfigError(
                f"{spec.key} is not the definition the lock file pins (its instructions, "
                "tools, LLM or budgets changed)",
                hint=f"bump the version of {spec.name!r} for a changed definition, or run "
                     "`aios-mesh lock` to pin this one", pinned=pin.sha256[:12],
                found=sha[:12])
        return ModelRef(name=f"function:{spec.name}", version=spec.version,
                        source=f"definition:sha256:{sha}")

    async def _note_live(self, call: Call, model: str) -> None:
        # A pinned model answers at its pinned version; the record says whether the
        # registry's alias has moved on since (model_drift).
        if self.resolver.pinned(model):
            live = await self.resolver.live(model)
            if live is not None:
                call.live_versions[model] = live
