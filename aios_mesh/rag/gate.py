"""The groundedness gate: a RAG answer's groundedness as a policy obligation.

The ``groundedness_gate`` step runs after ``invoke`` (and the output guard), before
``confidence_gate``, for RAG capabilities only (:func:`~aios_mesh.rag.rag`). It asks the
capability's policy package a second time — the *output check* — with the answer's
groundedness in the policy input::

    input.attributes.groundedness = {
        "score": 0.42, "mean": 0.61, "threshold": 0.5, "sentences": 2,
        "citations": ["kb-7"], "bad_citations": [], "retrieved": ["kb-7", "kb-2"]}

(the call's own attributes are kept beside it; a caller's ``groundedness`` attribute is
replaced). What the policy answers is applied like any decision:

* ``allow`` false → :class:`~aios_mesh.errors.PolicyDenied` with the policy's reason and
  ``reason_code`` (outcome ``denied``, no answer);
* ``obligations.require_human`` → the answer goes to the review queue (outcome ``review``,
  ``result.output`` None until a reviewer decides);
* otherwise the answer goes out.

A Rego package that does both (before the call ``groundedness`` is undefined, so the same
package also gates the call on the way in)::

    package support.answer
    import rego.v1

    g := input.attributes.groundedness
    bad_citation if count(g.bad_citations) > 0

    default allow := false
    allow if not bad_citation
    reason := "the answer cites a chunk that was not retrieved" if bad_citation
    reason_code := "citation_not_retrieved" if bad_citation
    obligations := {"require_human": true} if {
        not bad_citation
        g.score < g.threshold
    }

A RAG capability without a policy gets the same rule built in (deny a bad citation, review a
score under ``min_groundedness``); its record names the policy ``builtin:groundedness``.

The record keeps the check in ``policy.checks[]`` with ``"stage": "output"`` and a
``groundedness`` entry: the score, the threshold, each sentence's overlap, the citations, the
bad citations, the retrieved chunk ids, the index and its snapshot, and the writer's record
id, model and prompt versions — ids and numbers only, never the answer's or the chunks' text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import PolicyDenied
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import Pipeline, StepBase
from aios_mesh.ports.policy import Decision, Obligations, Policy, PolicyCheck, PolicyInput
from aios_mesh.rag.pattern import GroundedAnswer, RagHandler, RagTrace, rag_settings
from aios_mesh.review import ReviewQueue

__all__ = ["BUILTIN_POLICY", "CITATION_NOT_RETRIEVED", "GROUNDEDNESS_BELOW", "GroundednessCheck",
           "GroundednessGate", "builtin_decision", "install_groundedness_gate"]

#: The name a record gives the rule a RAG capability without a policy gets.
BUILTIN_POLICY: Final = "builtin:groundedness"
CITATION_NOT_RETRIEVED: Final = "citation_not_retrieved"
GROUNDEDNESS_BELOW: Final = "groundedness_below_threshold"

_HINT: Final = ("the answer cites a chunk that was not retrieved for it; see the record's "
                "policy.checks[] groundedness entry")


@dataclass(frozen=True, slots=True)
class GroundednessCheck(PolicyCheck):
    """The output check of a RAG call, as the record shows it: the policy's decision plus
    ``stage: "output"`` and the ``groundedness`` entry (see the module docstring)."""

    grounding: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """``policy.checks[]`` entry: the decision, the stage and the groundedness."""
        doc = PolicyCheck.to_record(self)
        doc["stage"] = "output"
        doc["groundedness"] = self.grounding
        return doc


def builtin_decision(groundedness: dict[str, Any]) -> Decision:
    """The rule a RAG capability without a policy gets: a bad citation denies, a score under
    the threshold asks for a human."""
    if groundedness["bad_citations"]:
        return Decision(False, "the answer cites a chunk that was not retrieved",
                        policy=BUILTIN_POLICY, reason_code=CITATION_NOT_RETRIEVED)
    if groundedness["score"] < groundedness["threshold"]:
        return Decision(True, f"groundedness {groundedness['score']:.3f} below "
                        f"{groundedness['threshold']}",
                        Obligations(require_human=True), policy=BUILTIN_POLICY,
                        reason_code=GROUNDEDNESS_BELOW)
    return Decision(True, None, policy=BUILTIN_POLICY)


class GroundednessGate(StepBase):
    """The ``groundedness_gate`` step (see the module docstring).

    Args:
        policy: the Policy port (``lambda: ports.policy``), asked only for RAG capabilities
            with a policy.
        review: the review queue (built on first use).
    """

    name = "groundedness_gate"

    def __init__(self, policy: Callable[[], Policy], review: Callable[[], ReviewQueue]) -> None:
        self._policy = policy
        self._review = review

    def applies(self, spec: CapabilitySpec) -> bool:
        return rag_settings(spec) is not None

    async def before(self, call: Call) -> None:
        handler = rag_settings(call.spec)
        if handler is None:
            return
        trace = handler.take_trace(call.record_id)
        out = call.output
        if not isinstance(out, GroundedAnswer) or call.review_id is not None:
            return  # nothing answered (parked, or a stream): nothing to check
        facts = self._facts(handler, out, trace)
        spec = call.spec
        if spec.policy is None:
            decision = builtin_decision(facts)
        else:
            attributes = {**call.attributes, "groundedness": facts}
            pin = PolicyInput(tenant=call.tenant, caller=call.caller, capability=spec.name,
                              capability_version=spec.version,
                              data_classification=spec.data_classification, model=spec.model,
                              cost_estimate=round(spec.price.cost(spec.estimate), 6),
                              attributes=attributes)
            decision = await self._policy().decide(spec.policy, pin)
        call.policy_checks = (*call.policy_checks,
                              GroundednessCheck(decision, grounding=self._grounding(
                                  facts, trace)))
        if not decision.allow:
            raise PolicyDenied(f"policy {decision.policy} denied the answer of {spec.name} for "
                               f"tenant {call.tenant}: {decision.reason}",
                               reason=decision.reason, reason_code=decision.reason_code,
                               policy=decision.policy or None, hint=_HINT)
        if decision.obligations.require_human:
            self._park(call, decision, facts)

    @staticmethod
    def _facts(handler: RagHandler, out: GroundedAnswer, trace: RagTrace | None
               ) -> dict[str, Any]:
        retrieved = set(out.retrieved)
        report = trace.report if trace is not None else None
        return {"score": out.groundedness,
                "mean": report.mean if report is not None else out.groundedness,
                "threshold": handler.min_groundedness,
                "sentences": len(report.sentences) if report is not None else None,
                "citations": list(out.citations),
                "bad_citations": [c for c in out.citations if c not in retrieved],
                "retrieved": list(out.retrieved)}

    @staticmethod
    def _grounding(facts: dict[str, Any], trace: RagTrace | None) -> dict[str, Any]:
        doc = dict(facts)
        if trace is not None:
            doc["overlaps"] = [s.overlap for s in trace.report.sentences]
            doc["index"] = {"collection": trace.collection, "snapshot": trace.snapshot}
            doc["writer"] = trace.writer or None
        return doc

    def _park(self, call: Call, decision: Decision, facts: dict[str, Any]) -> None:
        base = call.decision or decision
        call.decision = dataclasses.replace(base, obligations=dataclasses.replace(
            base.obligations, require_human=True))
        reason = (f"policy obligation require_human ({decision.policy}): groundedness "
                  f"{facts['score']:.3f}, threshold {facts['threshold']}")
        call.review_reason = reason
        proposed = None if call.output is None else call.output.model_dump(mode="json")
        call.review_id = self._review().enqueue(
            record_id=call.record_id, tenant=call.tenant, capability=call.spec.key,
            reason=reason, payload=call.payload or {}, resume=call.resume, proposed=proposed,
            confidence=call.confidence)
        call.output = None  # held back until a reviewer approves


def install_groundedness_gate(pipeline: Pipeline, gate: GroundednessGate) -> None:
    """Put ``gate`` right before ``confidence_gate`` (at the end when there is none),
    replacing a step of the same name.

    Example::

        install_groundedness_gate(mesh.pipeline, GroundednessGate(
            lambda: mesh.ports.policy, mesh.review_queue))
    """
    if gate.name in pipeline.names:
        pipeline.remove(gate.name)
    if "confidence_gate" in pipeline.names:
        pipeline.add(gate, before="confidence_gate")
    else:
        pipeline.add(gate)
