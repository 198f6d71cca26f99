"""Building the decision record from a finished call (one place, for every mode)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aios_mesh.errors import MeshError, UnknownTenant
from aios_mesh.lifecycle.versions import announce_deprecation
from aios_mesh.lineage_naming import DatasetNames
from aios_mesh.lockfile import LockFile
from aios_mesh.record import CallMode, DecisionRecord, Outcome, utc_now_iso
from aios_mesh.redaction.scrub import Scrubber, default_scrubber

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from aios_mesh.capabilities import CapabilitySpec
    from aios_mesh.pipeline.call import Call

__all__ = ["CallStart", "build_record", "outcome_of"]


class CallStart:
    """When and as what a call started: taken before the pipeline runs."""

    __slots__ = (
        "caller",
        "capability",
        "mode",
        "parent",
        "record_id",
        "started",
        "started_at",
        "tenant",
    )

    def __init__(self, record_id: str, capability: str, tenant: str, caller: str,
                 parent: Mapping[str, Any] | None, mode: CallMode) -> None:
        self.started = time.perf_counter()
        self.started_at = utc_now_iso()
        self.record_id = record_id
        self.capability = capability
        self.tenant = tenant
        self.caller = caller
        self.parent = dict(parent) if parent else None
        self.mode: CallMode = mode


def outcome_of(error: MeshError | None, review_id: str | None,
               primary_error: MeshError | None = None) -> Outcome:
    """The record's outcome: what the error class says it leads to, else review (parked),
    degraded (a fallback answered after ``primary_error``) or ok."""
    if error is not None:
        return Outcome(error.outcome)
    if review_id:
        return Outcome.REVIEW
    return Outcome.OK if primary_error is None else Outcome.DEGRADED


def build_record(start: CallStart, spec: CapabilitySpec | None, call: Call | None,
                 error: MeshError | None, span: Span | None,
                 lock: LockFile | None, datasets: DatasetNames | None = None,
                 scrubber: Scrubber | None = None) -> DecisionRecord:
    """The immutable decision record of one call (``call`` is None when the call never got a
    pipeline state, e.g. an unknown capability; ``datasets`` names what it read and
    wrote).

    Every field that can carry what a caller sent goes through ``scrubber`` (default: the
    default detectors), and so do the errors (in place: the caller gets the scrubbed
    error); structural fields — ids, hashes, timestamps, numbers, outcome — are exempt.
    """
    scrub = scrubber or default_scrubber()
    text = scrub.text
    name = scrub.name  # declared names (policies, models, indexes): patterns yes, not the
    # randomness guess, which would mask "invoice-clf-f4ed9809"
    if error is not None:
        scrub.error(error)
    # On every call's path: the call-less case is handled apart so the common one reads each
    # field once.
    latency_ms = round((time.perf_counter() - start.started) * 1000.0, 4)
    ended_at = utc_now_iso()
    trace_id = span_id = None
    if span is not None:
        ctx = span.get_span_context()
        if ctx.is_valid:
            trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    if call is None:
        return DecisionRecord(
            record_id=start.record_id, started_at=start.started_at, ended_at=ended_at,
            latency_ms=latency_ms, tenant=text(start.tenant), caller=text(start.caller),
            capability=text(start.capability),
            capability_version=spec.version if spec is not None else "",
            outcome=outcome_of(error, None), mode=start.mode, trace_id=trace_id,
            span_id=span_id, parent=scrub.value(start.parent),
            currency=spec.price.currency if spec else "USD",
            error=error.to_dict() if error is not None else None)
    policy = None
    d = call.decision
    if d is not None:
        path = d.policy or call.spec.policy
        policy = {"path": path if path is None else scrub.name(path), "allow": d.allow,
                  "reason": d.reason if d.reason is None else text(d.reason),
                  "reason_code": d.reason_code,
                  "obligations": {"redact": list(d.obligations.redact),
                                  "require_human": d.obligations.require_human,
                                  "max_cost": d.obligations.max_cost},
                  "bundle_hash": d.bundle_hash, "cached": call.policy_cached,
                  "input": scrub.value(call.policy_input),
                  # each policy asked (the default, the capability's own) and what it said
                  "checks": [scrub.value(c.to_record()) for c in call.policy_checks]}
    r = call.model_ref
    model = None if r is None else {"name": name(r.name), "version": r.version,
                                    "alias": r.alias if r.alias is None else name(r.alias),
                                    "source": text(r.source), "run_id": r.run_id}
    res = call.reservation
    quota = None if res is None else {"reservation_id": res.id, "reserved_cost": res.cost}
    redaction = call.redaction
    usage = call.usage
    # A call that failed says why; one the fallback chain answered (or parked for review)
    # says why its primary did not: a failure is never hidden behind a fallback.
    shown = error if error is not None else call.primary_error
    if call.spec.deprecated is not None:
        announce_deprecation(call.spec)
    if shown is not None and shown is not error:
        scrub.error(shown)
    return DecisionRecord(
        record_id=start.record_id,
        started_at=start.started_at,
        ended_at=ended_at,
        latency_ms=latency_ms,
        # a declared tenant is a name; an undeclared one is only what the caller sent
        tenant=text(start.tenant) if isinstance(error, UnknownTenant) else name(start.tenant),
        caller=text(start.caller),
        capability=name(call.spec.name),  # registered (the caller may have said name@major)
        capability_version=call.spec.version,
        deprecated=None if call.spec.deprecated is None else text(call.spec.deprecated),
        outcome=outcome_of(error, call.review_id, call.primary_error),
        mode=start.mode,
        trace_id=trace_id,
        span_id=span_id,
        parent=scrub.value(start.parent),
        policy=policy,
        redaction={"applied": redaction.applied, "counts": dict(redaction.counts)}
        if redaction is not None else {"applied": False, "counts": {}},
        model=model,
        prompt=None if call.prompt is None else {
            "name": name(call.prompt.name), "version": call.prompt.version,
            "alias": call.prompt.alias if call.prompt.alias is None else name(call.prompt.alias)},
        serving=call.serving,
        index_snapshots={name(c): snap for c, snap in call.index_snapshots.items()},
        index_drift=scrub.names(_index_drift(call, lock)) if call.index_snapshots else None,
        model_drift=scrub.names(_model_drift(call, lock)) if call.live_versions else None,
        datasets=datasets.of(call) if datasets is not None else None,  # scrubbed when named
        attempts=call.attempts,
        fallback=call.fallback if call.fallback is None else name(call.fallback),
        usage=usage.to_dict(),
        cost=round(call.cost, 10),
        currency=call.spec.price.currency,
        quota=quota,
        review_id=call.review_id,
        confidence=call.confidence,
        cache=call.cache,
        variant=call.variant,
        route=call.route,
        error=shown.to_dict() if shown is not None else None,
        input_sha256=call.input_sha256,
        output_sha256=call.output_sha256,
    )


def _index_drift(call: Call, lock: LockFile | None) -> dict[str, dict[str, str]] | None:
    """Indexes that answered at another snapshot than the lock file pins (a reproducible run
    expects none; the record says which ones moved)."""
    if lock is None or not lock.indexes:
        return None
    drift = {c: {"pinned": lock.indexes[c], "answered": snap}
             for c, snap in call.index_snapshots.items()
             if c in lock.indexes and lock.indexes[c] != snap}
    return drift or None


def _model_drift(call: Call, lock: LockFile | None) -> dict[str, dict[str, str]] | None:
    """Model specs the lock file pins to another version than their alias names now (the
    pinned version answered; the record says the registry has moved on)."""
    if lock is None or not lock.models:
        return None
    drift = {spec: {"pinned": lock.models[spec].version, "live": live}
             for spec, live in call.live_versions.items()
             if spec in lock.models and lock.models[spec].version != live}
    return drift or None
