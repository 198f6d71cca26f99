"""A **simulated** reviewer for the support queue: decides a sample of the review items against
the generated tickets' ground truth, so review turnaround and quality have numbers.

This is a simulation, not a person (the same stance as the invoice job's
:mod:`examples.invoice_intake.reviewer`, whose :data:`~examples.invoice_intake.reviewer.NOTE`
wording it shares in spirit). It decides through the call a person's decision takes
(:meth:`aios_mesh.Mesh.aresolve_review`), as ``simulated-reviewer``, with a note saying so.

How it decides, per capability that parked the item:

* ``draft-answer`` (a weakly grounded draft) and ``route-ticket`` (an answer a human must
  see first) — approve when the ticket's category was right and, for a drafted answer, it
  cites the article that really answers the ticket; reject otherwise (a person would
  rewrite it);
* ``exception-agent`` (a run parked before ``open-refund``) — approve when the order exists
  in the tenant's book and is refundable; reject otherwise.

The items are taken in ticket order (fixed seed: the same on every profile), at most
``sample`` and at most :data:`MAX_SHARE` of the queue, so some work stays for people.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from examples.support_triage.corpus import Truth, order_book

__all__ = ["DEFAULT_SAMPLE", "MAX_SHARE", "NOTE", "REVIEWER", "decide", "simulate_reviews"]

REVIEWER = "simulated-reviewer"
NOTE = "simulated: decided against the generated tickets' ground truth"
DEFAULT_SAMPLE = 20
MAX_SHARE = 0.5


def decide(capability: str, proposed: Mapping[str, Any] | None, item: Mapping[str, Any],
           truth: Truth) -> bool:
    """Approve (True) or reject one review item (see the module docstring)."""
    name = capability.partition("@")[0]
    if name == "exception-agent":
        return any(o.id == truth.order_id and o.refundable for o in order_book(item["tenant"]))
    if item.get("category") != truth.category:
        return False
    if item.get("handled_by") == "draft":
        cited = (proposed or {}).get("citations") or item.get("citations") or []
        return truth.article in cited
    return True


def _seconds(start: str, end: str | None) -> float | None:
    if end is None:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def simulate_reviews(mesh: Any, items: list[dict[str, Any]], truth: Mapping[str, Truth],
                     sample: int) -> dict[str, Any]:
    """Decide up to ``sample`` pending review items of this run (route reviews and refund
    approvals); returns the summary's ``reviewer`` section, with the turnaround (created to
    decided) of every item decided."""
    queue = mesh.review_queue()
    pending = {r.id: r for r in queue.list("pending")}
    by_record = {r.record_id: r.id for r in pending.values()}
    by_review: dict[str, dict[str, Any]] = {}
    for item in items:
        for key in ("review", "approval"):  # a route review; a parked refund request
            ref = item.get(key)
            found = ref.get("id") if isinstance(ref, dict) else ref
            review_id = found if found in pending else by_record.get(str(found))
            if review_id is not None:
                by_review[str(review_id)] = item
    if not by_review:
        ordered: list[str] = []
    else:  # refund approvals first (money waits on them), then answers, in ticket order
        ordered = sorted(by_review, key=lambda rid: (
            pending[rid].capability.partition("@")[0] != "exception-agent",
            by_review[rid]["ticket"]))
    limit = min(sample, int(len(by_review) * MAX_SHARE))
    verdicts: Counter[tuple[str, str]] = Counter()

    async def run() -> None:
        for review_id in ordered[:limit]:
            review, item = pending[review_id], by_review[review_id]
            approve = decide(review.capability, review.proposed, item, truth[item["ticket"]])
            await mesh.aresolve_review(review_id, approve=approve, reviewer=REVIEWER,
                                       note=NOTE)
            verdicts[(review.capability.partition("@")[0],
                      "approved" if approve else "rejected")] += 1

    if limit > 0:
        mesh.run_sync(run())
    turnaround = [s for r in queue.list(None) if r.id in by_review
                  and (s := _seconds(r.created_at, r.decided_at)) is not None]
    per: dict[str, dict[str, int]] = {}
    for (capability, verdict), n in sorted(verdicts.items()):
        per.setdefault(capability, {})[verdict] = n
    return {"simulated": True, "reviewer": REVIEWER, "sample": sample,
            "waiting": len(by_review), "decided": sum(verdicts.values()), "limit": limit,
            "by_capability": per, "turnaround_s": sorted(turnaround), "note": NOTE}
