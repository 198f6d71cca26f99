"""Review briefs: for invoices the classical models and the policy sent to a human, an LLM
drafts a structured brief (why a human, what is missing, a question for the vendor) under
constrained decoding. The brief is attached to the review item, so the review console shows
it beside the invoice; it advises, it never decides.

The LLM is slow next to the classical models (seconds per brief on a laptop CPU), so the job
briefs a sample — ``limit`` invoices, taken in turn from each tenant — and says so.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from aios_mesh.errors import MeshError
from examples.invoice_intake.capabilities import BRIEF, ReviewBriefRequest
from examples.invoice_intake.intake import CALLER, REQUIRED

__all__ = ["LLM_MODEL", "LLM_SOURCE", "brief_reviews", "publish_llm", "sample"]

#: The registry entry the brief capability asks for (``review-writer@champion``): a name for
#: the LLM the ``llm`` serving backend runs, so records and the lock file pin it like a model.
LLM_MODEL = "review-writer"
#: What the entry points at: the weights (where they run is the ``llm`` backend's URL). An
#: MLflow server takes only absolute, artifact-like sources, hence a URI of this form.
LLM_SOURCE = "gguf://gemma-3-270m/Q4_K_M"

Item = dict[str, Any]


async def publish_llm(registry: Any, alias: str = "champion") -> Any:
    """Register the LLM under :data:`LLM_MODEL` and point ``alias`` at it."""
    ref = await registry.register(LLM_MODEL, LLM_SOURCE, tags={"engine": "llama.cpp",
                                                               "weights": "gemma-3-270m Q4_K_M"})
    await registry.set_alias(LLM_MODEL, alias, ref.version)
    return ref


def sample(items: Sequence[Item], limit: int) -> list[Item]:
    """Up to ``limit`` invoices waiting for a human, taken in turn from each tenant (so every
    tenant's reviewers get some briefs), in the order the job processed them."""
    queues: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if (item.get("review") or {}).get("status") == "pending":
            queues[item["tenant"]].append(item)
    chosen: list[Item] = []
    while len(chosen) < limit and any(queues.values()):
        for tenant in sorted(queues):
            if queues[tenant] and len(chosen) < limit:
                chosen.append(queues[tenant].pop(0))
    return chosen


def _request(item: Item, why: str) -> ReviewBriefRequest:
    fields = item.get("fields") or {}
    missing = [name for name in REQUIRED if fields.get(name) in (None, "")]
    return ReviewBriefRequest(
        vendor=str(fields.get("vendor_name") or "unknown")[:300],
        invoice_number=str(fields.get("invoice_number") or "missing")[:100],
        total=str(fields.get("total") if fields.get("total") is not None else "missing"),
        currency=str(fields.get("currency") or "?")[:10], why=why[:300],
        missing=", ".join(missing) or "none")


def brief_reviews(mesh: Any, items: Sequence[Item], limit: int,
                  advance: Callable[[], None] | None = None) -> dict[str, Any]:
    """Draft a brief for up to ``limit`` invoices waiting for a human; attach each to its
    review item and to the invoice (``item["brief"]``). Returns what the summary reports."""
    queue = mesh.review_queue()
    chosen = sample(items, limit)
    latencies: list[float] = []
    tokens: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    cost: dict[str, float] = defaultdict(float)
    failed = 0
    for item in chosen:
        review = queue.get(item["review"]["id"])
        try:
            result = mesh.invoke(BRIEF.name, _request(item, review.reason).model_dump(),
                                 tenant=item["tenant"], caller=CALLER)
        except MeshError as exc:  # recorded by the mesh; the invoice still waits for a human
            item["brief"] = {"error": exc.code, "record_id": exc.record_id}
            failed += 1
        else:
            record = result.record
            brief = result.output.model_dump()
            queue.annotate(review.id, "brief", brief)
            item["brief"] = {**brief, "record_id": record.record_id}
            item["records"].append(record.record_id)
            latencies.append(record.latency_ms)
            tokens[item["tenant"]][0] += int(record.usage.get("input_tokens", 0))
            tokens[item["tenant"]][1] += int(record.usage.get("output_tokens", 0))
            cost[item["tenant"]] += record.cost
        if advance is not None:
            advance()
    waiting = sum(1 for i in items if (i.get("review") or {}).get("status") == "pending")
    return {"briefed": len(chosen) - failed, "failed": failed, "waiting": waiting,
            "limit": limit,
            "latency_ms_p50": statistics.median(latencies) if latencies else None,
            "tokens": {t: {"input": v[0], "output": v[1]} for t, v in sorted(tokens.items())},
            "cost": dict(sorted(cost.items()))}
