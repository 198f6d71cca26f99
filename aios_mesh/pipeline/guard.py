"""Output guard: the policy's ``obligations.output`` applied to the answer, after the backend
answered and before the confidence gate (docs/governance/output-guardrails.md).

What it looks for, with the mesh's own detectors (no second set of patterns):

* PII and secrets — the :class:`~aios_mesh.redaction.RuleRedactor` rules the redact step and
  the Recorder's scrubber use (``pii_kinds`` narrows them);
* blocked terms — whole words or phrases, any case, as one more rule of the same kind
  (``[BLOCKED_TERM]`` when masked).

What it does, the strictest action found winning (``deny`` > ``review`` > ``mask``):

* ``mask``: the answer with every found value replaced, validated again against the output
  model (an answer that no longer fits is blocked, never released half-masked);
* ``deny``: :class:`~aios_mesh.errors.PolicyDenied` with ``reason_code`` ``output_blocked``;
  no output reaches the caller;
* ``review``: parked in the review queue like the confidence gate does, with the reason; the
  caller gets no output (outcome ``review``) until a reviewer approves.

Each policy check with output obligations gets ``guard = {"action", "kinds", "count"}`` in
the decision record (``policy.checks[]``); the values found never appear in a record, log,
error or review reason.

Streaming: chunks already sent cannot be taken back, so a stream whose call carries output
obligations is *held*: :class:`OutputHold` (just before ``invoke``) buffers the chunks, the
guard checks the whole answer and then releases them (masked: the generated text as one
chunk), or releases nothing (deny, review). Such a stream's first chunk arrives when the
generation is complete; streams without output obligations are untouched.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import InvalidOutput, PolicyDenied
from aios_mesh.pipeline.call import Call, Emit
from aios_mesh.pipeline.runner import Pipeline, StepBase
from aios_mesh.pipeline.validate import validation_message
from aios_mesh.ports.policy import OUTPUT_ACTIONS, OutputAction, OutputObligations
from aios_mesh.redaction import RuleRedactor, default_rules, walk_strings
from aios_mesh.redaction.rules import Rule
from aios_mesh.review import ReviewQueue

__all__ = ["BLOCKED_TERM", "OUTPUT_BLOCKED", "Finding", "OutputGuard", "OutputHold",
           "OutputScanner", "install_output_guard", "output_obligations", "schema_review"]

#: The kind a blocked term is counted (and masked, ``[BLOCKED_TERM]``) as.
BLOCKED_TERM: Final = "blocked_term"
#: The ``reason_code`` of a denied answer.
OUTPUT_BLOCKED: Final = "output_blocked"
_HINT: Final = ("the policy's obligations.output forbid what the answer held; see the "
                "record's policy.checks[].guard for the kinds found")
_MAX_TERM_RULES: Final = 256  # distinct term lists kept compiled


def output_obligations(call: Call) -> OutputObligations:
    """The output obligations of every policy the call passed (the default and its own),
    merged: the stricter action wins (:meth:`OutputObligations.merge`)."""
    checks = call.policy_checks
    if len(checks) == 1:  # the common case: one policy, nothing to merge
        return checks[0].decision.obligations.output
    return OutputObligations.merge(c.decision.obligations.output for c in checks)


@dataclass(frozen=True, slots=True)
class Finding:
    """What one scan found: ``value`` with every found value masked, and how many of each
    kind (``email``, ``iban``, ..., ``blocked_term``) — never the values themselves."""

    value: Any
    counts: dict[str, int]

    @property
    def pii(self) -> int:
        return sum(n for k, n in self.counts.items() if k != BLOCKED_TERM)

    @property
    def blocked(self) -> int:
        return self.counts.get(BLOCKED_TERM, 0)

    def action(self, obligations: OutputObligations) -> OutputAction | None:
        """The strictest action the obligations attach to what was found (None: clean)."""
        found: list[OutputAction] = []
        if self.pii and obligations.pii is not None:
            found.append(obligations.pii)
        if self.blocked:
            found.append(obligations.on_blocked)
        return max(found, key=OUTPUT_ACTIONS.index) if found else None

    def summary(self) -> str:
        """``"email x1, blocked_term x2"``: kinds and counts, for reasons and errors."""
        return ", ".join(f"{k} x{n}" for k, n in sorted(self.counts.items()))


class OutputScanner:
    """Finds PII, secrets and blocked terms in a JSON-like value with the mesh's detectors
    (``rules``: default :func:`~aios_mesh.redaction.default_rules`, the redact step's)."""

    def __init__(self, rules: Iterable[Rule] | None = None) -> None:
        self.rules = tuple(default_rules() if rules is None else rules)
        self._terms: dict[tuple[str, ...], Rule] = {}

    def term_rule(self, terms: tuple[str, ...]) -> Rule:
        """One rule for a policy's term list, compiled once per list: longest terms first
        (``"acme corp"`` before ``"acme"``), whole words (no letter or digit either side),
        any case."""
        rule = self._terms.get(terms)
        if rule is None:
            alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
            rule = Rule(BLOCKED_TERM, re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)",
                                                 re.IGNORECASE))
            if len(self._terms) >= _MAX_TERM_RULES:
                self._terms.clear()
            self._terms[terms] = rule
        return rule

    def rules_for(self, obligations: OutputObligations) -> tuple[Rule, ...]:
        """PII rules first (a term inside an e-mail address must not break the address up
        and leave the rest of it in clear), then the terms."""
        rules: list[Rule] = []
        if obligations.pii is not None:
            kinds = set(obligations.pii_kinds)
            rules += [r for r in self.rules if not kinds or r.kind in kinds]
        if obligations.blocked_terms:
            rules.append(self.term_rule(obligations.blocked_terms))
        return tuple(rules)

    def scan(self, value: Any, obligations: OutputObligations) -> Finding:
        """``value`` masked and what was found in it (every string, dict keys included)."""
        rules = self.rules_for(obligations)
        counts: Counter[str] = Counter()
        masked = walk_strings(value, lambda s: RuleRedactor.redact_text(s, rules, counts))
        return Finding(masked, dict(counts))


class _Held:
    """Stands in for a stream's ``emit`` while the guard cannot yet know whether the chunks
    may go out: keeps them, in order, for :meth:`OutputGuard.before` to release."""

    __slots__ = ("chunks", "emit")

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.chunks: list[dict[str, Any]] = []

    async def __call__(self, chunk: dict[str, Any]) -> None:
        self.chunks.append(chunk)


def _may_be_obliged(spec: CapabilitySpec, default_policy: bool) -> bool:
    return spec.policy is not None or default_policy


class OutputHold(StepBase):
    """Holds a stream's chunks when the call carries output obligations (put it just before
    ``invoke``; :func:`install_output_guard` does). Other calls pass untouched."""

    name = "guard_output_hold"

    def __init__(self, *, default_policy: bool = False) -> None:
        self.default_policy = default_policy

    def applies(self, spec: CapabilitySpec) -> bool:
        return _may_be_obliged(spec, self.default_policy)

    async def before(self, call: Call) -> None:
        if (call.mode == "stream" and call.emit is not None and call.policy_checks
                and output_obligations(call).checks_content):
            call.emit = _Held(call.emit)


class OutputGuard(StepBase):
    """Applies ``obligations.output`` to the answer; see the module docstring.

    Args:
        review: the review queue (built on first use).
        default_policy: ``[policy] default`` is set, so every capability may be obliged;
            otherwise only capabilities with their own ``policy=`` enter this step.
        rules: the PII and secret detectors (default: the mesh's default rules).
    """

    name = "guard_output"

    def __init__(self, review: Callable[[], ReviewQueue], *, default_policy: bool = False,
                 rules: Iterable[Rule] | None = None) -> None:
        self._review = review
        self.default_policy = default_policy
        self.scanner = OutputScanner(rules)
        self.hold = OutputHold(default_policy=default_policy)

    def applies(self, spec: CapabilitySpec) -> bool:
        return _may_be_obliged(spec, self.default_policy)

    async def before(self, call: Call) -> None:
        if not call.policy_checks:
            return
        obligations = output_obligations(call)
        if not obligations.checks_content:
            return
        held = call.emit if isinstance(call.emit, _Held) else None
        if held is not None:
            call.emit = held.emit  # whatever happens next, the consumer is the real one
        if call.output is not None:
            finding = self.scanner.scan(call.output.model_dump(mode="json"), obligations)
        elif held is not None:  # a stream with no assembled answer: its chunks are it
            finding = self.scanner.scan(held.chunks, obligations)
        else:  # nothing answered (parked by the fallback chain): nothing to check
            return
        action = finding.action(obligations)
        _record(call, {"action": action or "pass", "kinds": sorted(finding.counts),
                       "count": sum(finding.counts.values())})
        if action == "deny":
            self._deny(call, finding.summary())
        if action == "review":
            self._park(call, finding)
            return
        if action == "mask":
            self._mask(call, finding)
        if held is not None:
            await self._release(call, held, obligations, finding if action == "mask" else None)

    def _mask(self, call: Call, finding: Finding) -> None:
        if call.output is None:
            return
        try:
            call.output = call.spec.output.model_validate(finding.value)
        except ValidationError as exc:
            _record(call, {"action": "deny", "kinds": sorted(finding.counts),
                           "count": sum(finding.counts.values())})
            self._deny(call, f"{finding.summary()}; the masked answer no longer matches "
                             f"{call.spec.output.__name__} ({validation_message(exc)})")

    def _park(self, call: Call, finding: Finding) -> None:
        reason = f"policy obligation output: {finding.summary()}"
        proposed = None if call.output is None else call.output.model_dump(mode="json")
        call.review_reason = reason
        call.review_id = self._review().enqueue(
            record_id=call.record_id, tenant=call.tenant, capability=call.spec.key,
            reason=reason, payload=call.payload or {}, resume=call.resume,
            proposed=proposed, confidence=call.confidence)
        call.output = None  # held back until a reviewer approves

    async def _release(self, call: Call, held: _Held, obligations: OutputObligations,
                       masked: Finding | None) -> None:
        """Send the held chunks on: as they came when nothing was masked; else a
        generation's text masked as a whole, other streams' chunks masked one by one."""
        chunks = held.chunks
        if masked is not None:
            chunks = (self._masked_text(held.chunks, obligations)
                      if call.spec.generate is not None
                      else masked.value if call.output is None
                      else self.scanner.scan(held.chunks, obligations).value)
        call.chunks = 0
        for chunk in chunks:
            call.chunks += 1
            await held.emit(chunk)

    def _masked_text(self, chunks: list[dict[str, Any]], obligations: OutputObligations,
                     ) -> list[dict[str, Any]]:
        """A generation's text deltas, joined and masked as one (a value split across two
        deltas is still found), sent as one chunk where the first delta was; the other
        chunks (usage, finish reason) unchanged."""
        text = "".join(c["text"] for c in chunks if isinstance(c.get("text"), str))
        out: list[dict[str, Any]] = []
        placed = False
        for chunk in chunks:
            if not isinstance(chunk.get("text"), str):
                out.append(chunk)
            elif not placed:
                out.append({**chunk, "text": self.scanner.scan(text, obligations).value})
                placed = True
        return out

    @staticmethod
    def _deny(call: Call, what: str) -> None:
        policy = _obliging_policy(call)
        raise PolicyDenied(f"policy {policy} blocked the answer of {call.spec.name} for tenant "
                           f"{call.tenant}: {what}", reason=f"output obligation: {what}",
                           reason_code=OUTPUT_BLOCKED, policy=policy, hint=_HINT)


def _obliging_policy(call: Call) -> str:
    """The policies whose output obligations applied, ``a+b`` when both did."""
    paths = [c.decision.policy for c in call.policy_checks
             if c.decision.obligations.output.checks_content
             or c.decision.obligations.output.schema is not None]
    return "+".join(dict.fromkeys(p for p in paths if p)) or "?"


def _record(call: Call, guard: dict[str, Any]) -> None:
    """What the guard did, on each check whose policy asked for it (the record shows it as
    ``policy.checks[].guard``)."""
    call.policy_checks = tuple(
        dataclasses.replace(c, guard=guard)
        if c.decision.obligations.output.checks_content
        or c.decision.obligations.output.schema is not None else c
        for c in call.policy_checks)


def schema_review(call: Call, error: InvalidOutput, review: Callable[[], ReviewQueue],
                  proposed: dict[str, Any] | None = None) -> bool:
    """Park an off-schema answer for review when a policy says ``output.schema: "review"``
    (the invoke step's hook, after its retries): True when parked (the call ends as
    ``review`` with no output), False when the :class:`InvalidOutput` stands. ``proposed``:
    the raw answer, kept in the review queue only (never in the reason or the record)."""
    if not call.policy_checks or output_obligations(call).schema != "review":
        return False
    reason = f"policy obligation output.schema: the answer does not match " \
             f"{call.spec.output.__name__}"
    call.review_reason = reason
    call.review_id = review().enqueue(
        record_id=call.record_id, tenant=call.tenant, capability=call.spec.key, reason=reason,
        payload=call.payload or {}, resume=call.resume, proposed=proposed)
    call.output = None
    call.done = True
    _record(call, {"action": "review", "kinds": ["schema"], "count": 1,
                   "error": error.code})
    return True


def install_output_guard(pipeline: Pipeline, guard: OutputGuard) -> None:
    """Put ``guard`` right after ``invoke`` and its stream hold right before it, replacing
    the guard steps the pipeline already has (a pipeline built from the default list has
    them; this swaps in one with other detectors, or adds them to a custom pipeline)."""
    for step in (guard.hold, guard):
        if step.name in pipeline.names:
            pipeline.remove(step.name)
    pipeline.add(guard.hold, before="invoke")
    pipeline.add(guard, after="invoke")
