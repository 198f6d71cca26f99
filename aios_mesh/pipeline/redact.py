"""Redaction before external backends (or when a policy obligation names kinds)."""

from __future__ import annotations

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.redaction import Redactor
from aios_mesh.redaction.tokens import Reversible

__all__ = ["RedactStep"]


class RedactStep(StepBase):
    name = "redact"

    def applies(self, spec: CapabilitySpec) -> bool:
        # a policy may oblige redaction: the capability's own, or the mesh-wide default
        return spec.external or spec.policy is not None or self.default_policy

    def __init__(self, redactor: Redactor, *, default_policy: bool = False) -> None:
        self.redactor = redactor
        self.default_policy = default_policy  # [policy] default: every call may be obliged
        # checked once: a Protocol isinstance costs microseconds per call
        self.reversible = redactor if isinstance(redactor, Reversible) else None

    async def before(self, call: Call) -> None:
        kinds = call.decision.obligations.redact if call.decision is not None else ()
        if not (call.spec.external or kinds) or call.payload is None:
            return
        # An external backend gets every kind removed; otherwise only what policy demands.
        wanted = None if call.spec.external else kinds
        # A reversible redactor keeps its tokens in the vault before the backend sees them.
        result = (await self.reversible.tokenize(call.payload, tenant=call.tenant, kinds=wanted)
                  if self.reversible is not None
                  else self.redactor.redact(call.payload, tenant=call.tenant, kinds=wanted))
        call.redaction = result
        call.payload = result.payload

    async def after(self, call: Call) -> None:
        # Reversible redaction: map this tenant's tokens in the answer back to the values,
        # also when this payload held none (the answer may quote tokens of earlier calls,
        # kept in a durable vault).
        if self.reversible is None or call.redaction is None or call.output is None:
            return
        doc = await self.reversible.restore(call.output.model_dump(mode="json"),
                                            tenant=call.tenant)
        call.output = call.spec.output.model_validate(doc)
