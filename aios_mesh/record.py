"""The decision record: exactly one per call, immutable, and the source of every other signal.

Audit entry, structlog line, OpenTelemetry span and metrics, OpenLineage events and the
domain event are all derived from :meth:`DecisionRecord.to_dict`, so they cannot disagree.
Payload values never appear here — only hashes, kinds and counts (see docs/dev/RECORD.md).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

__all__ = ["RECORD_SCHEMA_VERSION", "SUCCESSFUL_OUTCOMES", "CallMode", "DecisionRecord",
           "Outcome", "new_record_id", "utc_now_iso"]

RECORD_SCHEMA_VERSION = "1"


class Outcome(StrEnum):
    """How a call ended. The set is open: a new way to end (``partial``) is one member here
    plus, if an error leads to it, that error class's ``outcome`` attribute. Members compare
    equal to their strings (``record.outcome == "ok"``)."""

    OK = "ok"
    DEGRADED = "degraded"  # answered by a fallback; ``error`` is why the primary did not
    REVIEW = "review"  # parked for a human; the answer comes later
    DENIED = "denied"  # the policy said no
    REJECTED = "rejected"  # the caller's own mistake or budget: bad input, quota, unknown
    ERROR = "error"  # the mesh or a backend failed
    CANCELLED = "cancelled"  # the caller went away (a stream closed early, a task cancelled)


#: Outcomes in which the call did what was asked (metrics count the rest as errors; a
#: degraded call was answered, by a fallback: its ``outcome`` label tells it apart).
SUCCESSFUL_OUTCOMES: Final = frozenset({Outcome.OK, Outcome.DEGRADED, Outcome.REVIEW})

#: How the call was made: one answer, a stream of chunks, or one row of a bulk run.
CallMode = Literal["invoke", "stream", "bulk"]

# Record ids must be unique, not secret: a generator seeded from the OS (and reseeded in a
# forked child, so workers never repeat their parent's ids) gives uuid4-shaped ids at a third
# of uuid.uuid4()'s cost, which reads the OS's random source on every call. They are made 64
# at a time: after the CPU idled through a backend call, every piece of code a call touches
# runs ~10x slower than when warm (cache misses), and a pop from a list touches the least.
_ids = random.Random()
_id_pool: list[str] = []
_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_V4_SET = (0x4000 << 64) | (0x8000 << 48)


def _after_fork() -> None:
    _ids.seed()
    _id_pool.clear()  # the parent's unused ids are the parent's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _make_ids(n: int) -> list[str]:
    out = []
    for _ in range(n):
        h = f"{_ids.getrandbits(128) & _V4_CLEAR | _V4_SET:032x}"
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def new_record_id() -> str:
    """A random RFC 4122 version-4 UUID in its 36-character text form."""
    try:
        return _id_pool.pop()  # atomic under the GIL: threads never share an id
    except IndexError:
        _id_pool.extend(_make_ids(64))
        return _id_pool.pop()


_second: tuple[int, str] = (-1, "")


def utc_now_iso() -> str:
    """``datetime.now(UTC).isoformat()``, at half its cost on a cold CPU: the date and time
    of day are formatted once per second, the microseconds on each call."""
    return _iso(time.time_ns())


def _iso(ns: int) -> str:
    global _second
    seconds, micros = divmod(ns // 1000, 1_000_000)
    cached = _second
    if cached[0] != seconds:
        cached = _second = (seconds, datetime.fromtimestamp(seconds, UTC)
                            .strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{micros:06d}+00:00" if micros else f"{cached[1]}+00:00"


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
    #: the served version's deprecation notice (only on calls to a deprecated version)
    deprecated: str | None = None
    mode: CallMode = "invoke"
    trace_id: str | None = None
    span_id: str | None = None
    parent: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    redaction: dict[str, Any] = field(default_factory=lambda: {"applied": False, "counts": {}})
    model: dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    serving: str | None = None
    index_snapshots: dict[str, str] = field(default_factory=dict)
    index_drift: dict[str, dict[str, str]] | None = None
    model_drift: dict[str, dict[str, str]] | None = None
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
    #: the SLO router's choice (``{"backend": ..., "slo_met": ...}``; only when it routed)
    route: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    input_sha256: str | None = None
    output_sha256: str | None = None
    datasets: dict[str, list[dict[str, Any]]] | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in SUCCESSFUL_OUTCOMES

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
            "capability": ({"name": self.capability, "version": self.capability_version}
                           if self.deprecated is None else
                           {"name": self.capability, "version": self.capability_version,
                            "deprecated": self.deprecated}),
            "trace": {"trace_id": self.trace_id, "span_id": self.span_id},
            "parent": self.parent,
            "policy": self.policy,
            "redaction": self.redaction,
            "model": self.model,
            "prompt": self.prompt,
            "serving": self.serving,
            "index_snapshots": self.index_snapshots,
            "index_drift": self.index_drift,
            "model_drift": self.model_drift,
            "attempts": self.attempts,
            "fallback": self.fallback,
            "usage": self.usage,
            "cost": self.cost,
            "currency": self.currency,
            "quota": self.quota,
            "outcome": str(self.outcome),
            "mode": self.mode,
            "review_id": self.review_id,
            "confidence": self.confidence,
            "cache": self.cache,
            "variant": self.variant,
            "error": self.error,
            "input_sha256": self.input_sha256,
            "output_sha256": self.output_sha256,
            "datasets": self.datasets,
            **({} if self.route is None else {"route": self.route}),
        }
