"""Confidence gate: low-confidence answers and ``require_human`` obligations go to review."""

from __future__ import annotations

from collections.abc import Callable

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.review import ReviewQueue

__all__ = ["ConfidenceGate"]


class ConfidenceGate(StepBase):
    name = "confidence_gate"

    def applies(self, spec: CapabilitySpec) -> bool:
        # a policy may oblige human review (require_human): its own or the mesh-wide default
        return (spec.review_threshold is not None or spec.policy is not None
                or self.default_policy)

    def __init__(self, review: Callable[[], ReviewQueue], *,
                 default_policy: bool = False) -> None:
        self._review = review
        self.default_policy = default_policy  # [policy] default: every call may be obliged

    async def before(self, call: Call) -> None:
        if call.output is None or call.review_id is not None:
            return
        reason = None
        if call.decision is not None and call.decision.obligations.require_human:
            reason = "policy obligation require_human"
        threshold = call.spec.review_threshold
        if reason is None and threshold is not None:
            conf = call.confidence
            if conf is None or conf < threshold:
                shown = "unknown" if conf is None else f"{conf:.3f}"
                reason = f"confidence {shown} below {threshold}"
        if reason is None:
            return
        call.review_reason = reason
        call.review_id = self._review().enqueue(
            record_id=call.record_id, tenant=call.tenant, capability=call.spec.key,
            reason=reason, payload=call.payload or {}, resume=call.resume,
            proposed=call.output.model_dump(mode="json"), confidence=call.confidence)
