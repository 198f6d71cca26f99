"""The decision record: exactly one per call, immutable, and the source of every other signal.

Audit entry, structlog line, OpenTelemetry span and metrics, OpenLineage events and the
domain event are all derived from :meth:`DecisionRecord.to_dict`, so they cannot disagree.
Payload values never appear here — only hashes, kinds and counts (see docs/dev/RECORD.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["RECORD_SCHEMA_VERSION", "DecisionRecord", "Outcome"]

RECORD_SCHEMA_VERSION = "1"
Outcome = Literal["ok", "review", "denied", "rejected", "error"]


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """Who asked for what, what was decided, who answered, what it cost, how it ended."""

    record_id: str
    started_at: str
    ended_at: str
    latency_ms: float
    tenant: str
    caller: str
    capability: str
    capability_version: str
    outcome: Outcome
    trace_id: str | None = None
    span_id: str | None = None
    parent: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    redaction: dict[str, Any] = field(default_factory=lambda: {"applied": False, "counts": {}})
    model: dict[str, Any] | None = None
    serving: str | None = None
    index_snapshots: dict[str, str] = field(default_factory=dict)
    index_drift: dict[str, dict[str, str]] | None = None
    attempts: int = 0
    fallback: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    cost: float = 0.0
    currency: str = "USD"
    quota: dict[str, Any] | None = None
    review_id: str | None = None
    confidence: float | None = None
    cache: str | None = None
    variant: str | None = None
    error: dict[str, Any] | None = None
    input_sha256: str | None = None
    output_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("ok", "review")

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written to the audit log (stable key names, schema v1)."""
        return {
            "schema_version": RECORD_SCHEMA_VERSION,
            "record_id": self.record_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "latency_ms": self.latency_ms,
            "tenant": self.tenant,
            "caller": self.caller,
            "capability": {"name": self.capability, "version": self.capability_version},
            "trace": {"trace_id": self.trace_id, "span_id": self.span_id},
            "parent": self.parent,
            "policy": self.policy,
            "redaction": self.redaction,
            "model": self.model,
            "serving": self.serving,
            "index_snapshots": self.index_snapshots,
            "index_drift": self.index_drift,
            "attempts": self.attempts,
            "fallback": self.fallback,
            "usage": self.usage,
            "cost": self.cost,
            "currency": self.currency,
            "quota": self.quota,
            "outcome": self.outcome,
            "review_id": self.review_id,
            "confidence": self.confidence,
            "cache": self.cache,
            "variant": self.variant,
            "error": self.error,
            "input_sha256": self.input_sha256,
            "output_sha256": self.output_sha256,
        }
