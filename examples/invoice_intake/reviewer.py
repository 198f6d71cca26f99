"""A **simulated** reviewer: decides a fixed sample of the review queue against the corpus's
ground truth, so the main job's "Quality from reviewers" shows real numbers.

This is a simulation, not a person. The job generates its invoices (:mod:`.corpus`), so it
knows every invoice's true fields and vendor; a real deployment learns them only from its
reviewers (the review console, ``aios-mesh review approve|reject``). The simulated reviewer
decides through the same call a person's decision takes
(:meth:`aios_mesh.Mesh.aresolve_review`: the queue, the label, the audit entry), as the
reviewer ``simulated-reviewer``, with the note ``simulated: decided against the corpus's
ground truth``, so nobody mistakes its labels for a human's.

Which items: the review items of the run in invoice order (the corpus is generated from a
fixed seed, so the order is the same on every run and every profile), taken round-robin over
the capabilities that parked them, so each capability gets labels; at most ``sample``, and
never more than half the items waiting (:data:`MAX_SHARE`), so the review queue keeps work
for the console and ``aios-mesh review``.

How it decides, per capability (the proposal is what the model answered):

* ``extract-invoice-fields`` — approve when every field (vendor name, invoice number, date,
  currency, total to the cent) is right; otherwise *correct* it to the true fields;
* ``match-vendor`` — approve when the proposed vendor is the invoice's true vendor; otherwise
  correct it to the true vendor id;
* anything else (``route-invoice``: the policy asked a human to approve a payment) — approve
  when the invoice's extracted fields and vendor are right (a genuine invoice, read
  correctly), reject otherwise.

    >>> from examples.invoice_intake.reviewer import REVIEWER, NOTE
    >>> REVIEWER, NOTE.startswith("simulated")
    ('simulated-reviewer', True)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_SAMPLE", "MAX_SHARE", "NOTE", "REVIEWER", "Decision", "decide",
           "simulate_reviews"]

#: Who the simulated reviewer decides as (in the queue, the labels and the audit log).
REVIEWER = "simulated-reviewer"
#: The note on every decision it makes.
NOTE = "simulated: decided against the corpus's ground truth"
#: Review items decided by default (``--reviewer-sample``): enough labels for a reliability
#: curve, few enough that the job's time hardly moves.
DEFAULT_SAMPLE = 60
#: The largest share of the waiting items it decides: the rest stay for people.
MAX_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Decision:
    """What the simulated reviewer does with one item: ``approve`` (True/False) and, for a
    correction, the ``output`` it approves instead of the proposal."""

    verdict: str  # "approved", "corrected" or "rejected"
    approve: bool
    output: dict[str, Any] | None = None


def _fields_right(fields: Mapping[str, Any] | None, truth: Any) -> bool:
    from examples.invoice_intake.extractor import FIELDS, field_correct

    return bool(fields) and all(field_correct(name, (fields or {}).get(name),
                                              getattr(truth, name)) for name in FIELDS)


def decide(capability: str, proposed: Mapping[str, Any] | None, item: Mapping[str, Any],
           truth: Any) -> Decision:
    """The simulated reviewer's decision on one review item of ``capability`` (``name`` or
    ``name@version``), given the job's ``item`` for the invoice and its ``truth``."""
    from examples.invoice_intake.extractor import FIELDS

    name = capability.partition("@")[0]
    if name == "extract-invoice-fields":
        if proposed is not None and _fields_right(proposed, truth):
            return Decision("approved", True)
        corrected = {field: getattr(truth, field) for field in FIELDS}
        corrected["confidence"] = (proposed or {}).get("confidence")
        return Decision("corrected", True, corrected)
    if name == "match-vendor":
        if proposed is not None and proposed.get("vendor_id") == truth.vendor_id:
            return Decision("approved", True)
        corrected = {**(proposed or {"score": 0.0, "confidence": 0.0}),
                     "vendor_id": truth.vendor_id, "name": truth.vendor_name}
        return Decision("corrected", True, corrected)
    genuine = _fields_right(item.get("fields"), truth) and \
        (item.get("vendor") or {}).get("vendor_id") == truth.vendor_id
    return Decision("approved", True) if genuine else Decision("rejected", False)


def _sample(items: Sequence[dict[str, Any]], capability_of: Mapping[str, str],
            sample: int) -> list[dict[str, Any]]:
    """Up to ``sample`` parked items, round-robin over capabilities, each in invoice order."""
    by_capability: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in sorted(items, key=lambda i: str(i["invoice"])):
        review = item.get("review") or {}
        if review.get("status") == "pending" and review.get("id") in capability_of:
            by_capability[capability_of[review["id"]].partition("@")[0]].append(item)
    queues = [by_capability[name] for name in sorted(by_capability)]
    picked: list[dict[str, Any]] = []
    while len(picked) < sample and any(queues):
        for queue in queues:
            if queue and len(picked) < sample:
                picked.append(queue.pop(0))
    return picked


def simulate_reviews(mesh: Any, items: list[dict[str, Any]], truth: Mapping[str, Any],
                     sample: int) -> dict[str, Any]:
    """Decide up to ``sample`` of the run's review items against ``truth`` (invoice id →
    :class:`~examples.invoice_intake.corpus.Truth`); each decided item's ``review`` in
    ``items`` is updated. Returns the summary's ``reviewer`` section: how many were decided,
    per capability and verdict, and that it was a simulation."""
    queue = mesh.review_queue()
    waiting = [i for i in items if (i.get("review") or {}).get("status") == "pending"]
    parked = {r.id: r for r in queue.list("pending")} if waiting and sample > 0 else {}
    limit = min(sample, int(len(waiting) * MAX_SHARE))
    picked = _sample(waiting, {k: v.capability for k, v in parked.items()}, limit)
    verdicts: Counter[tuple[str, str]] = Counter()

    async def run() -> None:
        for item in picked:
            review = parked[item["review"]["id"]]
            decision = decide(review.capability, review.proposed, item,
                              truth[item["invoice"]])
            await mesh.aresolve_review(review.id, approve=decision.approve, reviewer=REVIEWER,
                                       output=decision.output, note=NOTE)
            item["review"] = {"id": review.id, "status": "approved" if decision.approve
                              else "rejected", "reviewer": REVIEWER,
                              "verdict": decision.verdict, "simulated": True}
            verdicts[(review.capability.partition("@")[0], decision.verdict)] += 1

    if picked:
        mesh.run_sync(run())
    per_capability: dict[str, dict[str, int]] = defaultdict(dict)
    for (capability, verdict), n in sorted(verdicts.items()):
        per_capability[capability][verdict] = n
    return {"simulated": True, "reviewer": REVIEWER, "sample": sample,
            "waiting": len(waiting), "decided": len(picked), "limit": limit,
            "by_capability": dict(per_capability), "note": NOTE}
