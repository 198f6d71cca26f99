"""Redaction before external backends (or when a policy obligation names kinds)."""

from __future__ import annotations

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.redaction import Redactor

__all__ = ["RedactStep"]


class RedactStep(StepBase):
    name = "redact"

    def applies(self, spec: CapabilitySpec) -> bool:
        return spec.external or spec.policy is not None  # a policy may oblige redaction

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    async def before(self, call: Call) -> None:
        kinds = call.decision.obligations.redact if call.decision is not None else ()
        if not (call.spec.external or kinds) or call.payload is None:
            return
        # An external backend gets every kind removed; otherwise only what policy demands.
        result = self.redactor.redact(call.payload, tenant=call.tenant,
                                      kinds=None if call.spec.external else kinds)
        call.redaction = result
        call.payload = result.payload

    async def after(self, call: Call) -> None:
        # Reversible redaction: map this tenant's tokens in the answer back to the values.
        restore = getattr(self.redactor, "restore", None)
        if restore is None or call.redaction is None or not call.redaction.applied \
                or call.output is None:
            return
        doc = restore(call.output.model_dump(mode="json"), tenant=call.tenant)
        call.output = call.spec.output.model_validate(doc)
