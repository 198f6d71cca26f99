"""The gateway's Prometheus metrics (``GET /metrics``), one scrape for every worker.

Counters and histograms are kept with :mod:`prometheus_client`. When the server runs several
worker processes it sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh folder per server under the
state folder) before any worker starts: each worker then writes its samples to its own files
there and a scrape, whichever worker answers it, sums them all (prometheus_client's
multiprocess mode). Without that variable (one process, tests) the samples live in memory.

What is current rather than counted (quota use per tenant, review queue depth, outbox backlog)
is read from the shared stores at scrape time, so it is right whichever worker answers.

**Lifecycle and business KPIs** (:class:`LifecycleMetrics`) come from the durable stores every
process shares — the audit log (calls by outcome, review decisions, alias changes, drift
alarms, pauses), the review queue (time to resolution), the pause store and the reviewers'
labels (:func:`aios_mesh.lifecycle.quality.quality`) — never from the caller's path: a
background task reads them at most every ``refresh_s`` seconds, and only while someone
scrapes; a scrape shows the latest snapshot and never waits for a read. The audit log is
followed incrementally (each refresh reads only the entries appended since the last), so its
counters are totals over the whole log, the same whichever worker answers; a restarted
worker counts the log again from its first entry.
``aios_mesh_lifecycle_refreshed_timestamp_seconds`` says how fresh the snapshot is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["CONTENT_TYPE", "LIFECYCLE_METRICS", "MULTIPROC_ENV", "RESOLUTION_BUCKETS",
           "GatewayMetrics", "LifecycleMetrics", "Live"]

_log = logging.getLogger(__name__)

#: The variable that switches prometheus_client to multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The content type of the text exposition format.
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Call latencies from sub-millisecond cache hits to the longest SLO timeouts.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0)


class Live:
    """Values read at scrape time: ``(name, help, labels, [(label values, value), ...])``."""

    def __init__(self) -> None:
        self.families: list[GaugeMetricFamily] = []

    def gauge(self, name: str, documentation: str, labels: Sequence[str],
              samples: Iterable[tuple[Sequence[str], float]]) -> None:
        """Add one gauge family with its samples."""
        family = GaugeMetricFamily(name, documentation, labels=list(labels))
        for values, value in samples:
            family.add_metric(list(values), value)
        self.families.append(family)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class GatewayMetrics:
    """Calls, errors, latency and cost of every call the gateway made, by capability; with
    ``lifecycle``, the lifecycle and business KPIs of the mesh as well (see
    :class:`LifecycleMetrics`)."""

    def __init__(self, lifecycle: LifecycleMetrics | None = None) -> None:
        self.lifecycle = lifecycle
        self._registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter("aios_mesh_gateway_calls", "Calls made through the gateway.",
                             ["capability", "mode", "outcome"], registry=self._registry)
        self.errors = Counter("aios_mesh_gateway_errors",
                              "Calls that ended with an error, by error code.",
                              ["capability", "code"], registry=self._registry)
        self.latency = Histogram("aios_mesh_gateway_call_seconds",
                                 "Time from request to answer (to the last chunk for a stream).",
                                 ["capability", "mode"], buckets=_BUCKETS,
                                 registry=self._registry)
        self.cost = Counter("aios_mesh_gateway_cost", "Cost of the calls made, in the "
                            "capability's currency.", ["tenant", "capability"],
                            registry=self._registry)
        self.workers = Gauge("aios_mesh_gateway_workers", "Worker processes serving now.",
                             multiprocess_mode="livesum", registry=self._registry)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """While the app is up: this worker counts in ``aios_mesh_gateway_workers``; when it
        stops, its live gauges are dropped (its counters stay in the sums)."""
        self.workers.set(1)
        try:
            if self.lifecycle is None:
                yield
            else:
                async with self.lifecycle.running():
                    yield
        finally:
            self.workers.set(0)
            if os.environ.get(MULTIPROC_ENV):
                mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # untyped

    def observe(self, *, capability: str, tenant: str, mode: str, outcome: str,
                seconds: float, cost: float = 0.0, error_code: str | None = None) -> None:
        """Count one finished call."""
        self.calls.labels(capability, mode, outcome).inc()
        self.latency.labels(capability, mode).observe(seconds)
        if cost:
            self.cost.labels(tenant, capability).inc(cost)
        if error_code is not None:
            self.errors.labels(capability, error_code).inc()

    def render(self, live: Live) -> bytes:
        """The text exposition: every worker's counted samples plus ``live`` (and the latest
        lifecycle snapshot, whose refresh this scrape asks for)."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        else:
            registry = self._registry
        out = generate_latest(registry)
        scratch = CollectorRegistry(auto_describe=False)
        scratch.register(live)
        if self.lifecycle is not None:
            scratch.register(self.lifecycle)
            self.lifecycle.wanted()
        return out + generate_latest(scratch)


# --------------------------------------------------------------------------- lifecycle

#: Time from a call parked for a human to the decision: a minute's triage to a week's backlog.
RESOLUTION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0,
                      8 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0)

#: Every lifecycle metric :class:`LifecycleMetrics` exports (the name as scraped, without a
#: ``_total``/``_bucket`` suffix) with its kind, labels and meaning — the docs' table and the
#: dashboard test read this.
LIFECYCLE_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "aios_mesh_calls_recorded": (
        "counter", ("capability", "tenant", "outcome"),
        "Decision records in the audit log, by how the call ended (ok, degraded, review, "
        "denied, rejected, error, cancelled)."),
    "aios_mesh_task_success": (
        "counter", ("capability", "tenant"),
        "Calls answered without a human: outcome ok or degraded (a fallback answered)."),
    "aios_mesh_human_interventions": (
        "counter", ("capability", "tenant"),
        "Calls sent to a human: outcome review (low confidence, a policy obligation, a "
        "pause to humans, a fallback chain ending in review)."),
    "aios_mesh_automation_rate": (
        "gauge", ("capability", "tenant"),
        "Calls answered ok (no human, no fallback) over answered calls (ok, degraded, "
        "review), over the whole audit log; use rates of the counters for a window."),
    "aios_mesh_reviews_decided": (
        "counter", ("capability", "tenant", "decision"),
        "Review items a human decided (approved or rejected; a correction is an approval "
        "with another output)."),
    "aios_mesh_review_resolution_seconds": (
        "histogram", ("capability", "tenant"),
        "Time to resolution: the review item's creation to its decision, in seconds."),
    "aios_mesh_promotions": (
        "counter", ("capability", "target"),
        "Alias promotions (alias_change, action promote) of a model or a prompt (target)."),
    "aios_mesh_rollbacks": (
        "counter", ("capability", "target", "trigger"),
        "Alias rollbacks: trigger manual (aios-mesh rollback/revert) or automatic (a canary "
        "that breached its gates)."),
    "aios_mesh_promotion_gate_reports": (
        "counter", ("capability", "result"),
        "Promotion gate reports in the audit log: result passed or failed."),
    "aios_mesh_drift_alarms": (
        "counter", ("capability", "model_version"),
        "Drift alarms raised by the drift monitor, per capability and model version."),
    "aios_mesh_pause_changes": (
        "counter", ("capability", "action"),
        "Pauses and resumes in the audit log (action pause or resume)."),
    "aios_mesh_pauses_in_force": (
        "gauge", ("capability", "tenant", "mode"),
        "1 per pause in force now (tenant * = every tenant; mode human or fallback)."),
    "aios_mesh_quality_accuracy": (
        "gauge", ("capability", "capability_version", "model", "model_version"),
        "Accuracy against reviewers: the share of reviewed proposals a human kept."),
    "aios_mesh_quality_override_rate": (
        "gauge", ("capability", "capability_version", "model", "model_version"),
        "Reviewed proposals a human corrected or rejected, over labelled ones."),
    "aios_mesh_quality_ece": (
        "gauge", ("capability", "capability_version", "model", "model_version"),
        "Expected calibration error of the model's confidence against the reviewers' "
        "verdicts (0 = calibrated, at most 1)."),
    "aios_mesh_quality_labels": (
        "gauge", ("capability", "capability_version", "model", "model_version"),
        "Reviewers' labels that judged a proposal of this version."),
    "aios_mesh_quality_automation_rate": (
        "gauge", ("capability", "capability_version", "model", "model_version"),
        "Calls of this model version answered ok over its answered calls."),
    "aios_mesh_lifecycle_refreshed_timestamp_seconds": (
        "gauge", (), "When the lifecycle metrics were last read from the stores (Unix time)."),
    "aios_mesh_lifecycle_refresh_failures": (
        "counter", (), "Lifecycle refreshes that failed (the previous snapshot is kept)."),
}

#: Outcomes in which a call was answered without a human (task success).
_SUCCESS = frozenset({"ok", "degraded"})
_ANSWERED = frozenset({"ok", "degraded", "review"})
#: Audit entries read per page while following the log.
_PAGE = 1000
#: Every pause, whichever tenant (a pause of every tenant has none).
_EVERY_TENANT = "*"

_Labels = tuple[str, ...]


def _family(name: str, samples: dict[_Labels, float]) -> Metric:
    kind, labels, documentation = LIFECYCLE_METRICS[name]
    family: CounterMetricFamily | GaugeMetricFamily = (
        CounterMetricFamily(name, documentation, labels=list(labels)) if kind == "counter"
        else GaugeMetricFamily(name, documentation, labels=list(labels)))
    for values, value in sorted(samples.items()):
        family.add_metric(list(values), value)
    return family


@dataclass
class _Resolution:
    """One histogram series: per-bucket counts (not cumulative), the sum and the count."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(RESOLUTION_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(RESOLUTION_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
                break
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip(RESOLUTION_BUCKETS, self.buckets, strict=True):
            running += n
            out.append((repr(bound), float(running)))
        return [*out, ("+Inf", float(self.count))]


def _name(capability: Any) -> str:
    """A capability as a call record names it (``{"name", "version"}``) or as an entry does
    (``name`` or ``name@version``): the name alone, so a label has one value per capability."""
    if isinstance(capability, dict):
        capability = capability.get("name")
    return str(capability or "").partition("@")[0] or "(unknown)"


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        return max(0.0, (datetime.fromisoformat(end)
                         - datetime.fromisoformat(start)).total_seconds())
    except ValueError:
        return None


@dataclass
class _Tail:
    """What the audit log has said so far: totals, updated entry by entry."""

    after: int = 0
    counts: dict[str, dict[_Labels, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    resolution: dict[_Labels, _Resolution] = field(
        default_factory=lambda: defaultdict(_Resolution))

    def add(self, name: str, labels: _Labels) -> None:
        self.counts[name][labels] += 1

    def entry(self, rec: dict[str, Any], decided: list[str]) -> None:
        kind = rec.get("kind")
        if kind is None:
            if isinstance(rec.get("capability"), dict):  # a call's decision record
                cap, tenant = _name(rec["capability"]), str(rec.get("tenant"))
                outcome = str(rec.get("outcome"))
                self.add("aios_mesh_calls_recorded", (cap, tenant, outcome))
                if outcome in _SUCCESS:
                    self.add("aios_mesh_task_success", (cap, tenant))
                elif outcome == "review":
                    self.add("aios_mesh_human_interventions", (cap, tenant))
            return
        cap = _name(rec.get("capability"))
        if kind == "review_decision":
            self.add("aios_mesh_reviews_decided",
                     (cap, str(rec.get("tenant")), str(rec.get("decision"))))
            if isinstance(rec.get("review_id"), str):
                decided.append(rec["review_id"])
        elif kind == "alias_change":
            target, action = str(rec.get("target") or "model"), rec.get("action")
            if action == "promote":
                self.add("aios_mesh_promotions", (cap, target))
            elif action in ("rollback", "auto_rollback"):
                self.add("aios_mesh_rollbacks", (cap, target, "automatic"
                                                 if action == "auto_rollback" else "manual"))
        elif kind == "promotion_gate":
            self.add("aios_mesh_promotion_gate_reports",
                     (cap, "passed" if rec.get("passed") else "failed"))
        elif kind == "drift_alarm":
            self.add("aios_mesh_drift_alarms", (cap, str(rec.get("model_version"))))
        elif kind in ("pause", "resume"):
            self.add("aios_mesh_pause_changes", (cap, str(kind)))


class LifecycleMetrics:
    """The mesh's lifecycle and business KPIs for ``/metrics`` (every name in
    :data:`LIFECYCLE_METRICS`), read from its durable stores off the caller's path.

    A prometheus_client collector: :meth:`collect` yields the latest snapshot. While
    :meth:`running` is entered (the gateway app's lifetime), a background task refreshes the
    snapshot when a scrape asked for it (:meth:`wanted`), at most every ``refresh_s``
    seconds; :meth:`refresh` does one pass now (tests, a CLI).

    Example::

        lifecycle = LifecycleMetrics(mesh, refresh_s=30)
        await lifecycle.refresh()
        text = generate_latest(registry_with(lifecycle))
    """

    def __init__(self, mesh: Mesh, *, refresh_s: float = 30.0) -> None:
        self.mesh = mesh
        self.refresh_s = refresh_s
        self._tail = _Tail()
        self._snapshot: list[Metric] = []
        self._failures = 0
        self._lock = asyncio.Lock()
        self._want: asyncio.Event | None = None

    def wanted(self) -> None:
        """A scrape saw the snapshot: refresh it when ``refresh_s`` has passed."""
        if self._want is not None:
            self._want.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Refresh in the background until the block ends (the first pass at once)."""
        self._want = asyncio.Event()
        self._want.set()
        task = asyncio.create_task(self._loop(self._want), name="lifecycle-metrics")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._want = None

    async def _loop(self, want: asyncio.Event) -> None:
        while True:
            await want.wait()
            want.clear()
            await self.refresh()
            await asyncio.sleep(self.refresh_s)  # at most one pass per refresh_s

    async def refresh(self) -> bool:
        """Read what changed since the last pass and rebuild the snapshot; ``False`` (and
        the previous snapshot kept, the failure counted) when a store cannot be read."""
        async with self._lock:
            try:
                self._snapshot = await self._read()
            except Exception:  # any store failure: a scrape must not fail for an outage
                self._failures += 1
                _log.warning("lifecycle metrics: a store could not be read; the previous "
                             "snapshot stays", exc_info=True)
                self._snapshot = self._with_failures(self._snapshot)
                return False
            return True

    def collect(self) -> Iterator[Metric]:
        yield from self._snapshot

    # ------------------------------------------------------------------ one pass
    async def _read(self) -> list[Metric]:
        from aios_mesh.lifecycle.pause import list_pauses
        from aios_mesh.lifecycle.quality import quality

        mesh, tail = self.mesh, self._tail
        decided: list[str] = []
        while True:  # the log since the last pass, a page at a time
            page = await mesh.ports.audit.read(since=tail.after, limit=_PAGE)
            if not page:
                break
            for entry in page:
                tail.entry(dict(entry.record), decided)
            tail.after = page[-1].seq
        if decided:
            await asyncio.to_thread(self._resolve, decided)
        report = await quality(mesh)
        pauses = await list_pauses(mesh)
        families = [_family(name, dict(tail.counts.get(name, {})))
                    for name, (kind, _, _) in LIFECYCLE_METRICS.items()
                    if kind == "counter" and name != "aios_mesh_lifecycle_refresh_failures"]
        families.append(_family("aios_mesh_automation_rate", self._automation()))
        _, labels, documentation = LIFECYCLE_METRICS["aios_mesh_review_resolution_seconds"]
        histogram = HistogramMetricFamily("aios_mesh_review_resolution_seconds",
                                          documentation, labels=list(labels))
        for key, series in sorted(tail.resolution.items()):
            histogram.add_metric(list(key), series.cumulative(), series.total)
        families.append(histogram)
        families.append(_family("aios_mesh_pauses_in_force", {
            (p.capability, p.tenant or _EVERY_TENANT, str(p.mode)): 1.0 for p in pauses}))
        per_version: dict[str, dict[_Labels, float]] = defaultdict(dict)
        for v in report.versions:
            key = (v.capability, v.capability_version, v.model, v.model_version)
            for name, value in (("aios_mesh_quality_accuracy", v.accuracy),
                                ("aios_mesh_quality_override_rate", v.override_rate),
                                ("aios_mesh_quality_ece",
                                 v.calibration.ece if v.calibration else None),
                                ("aios_mesh_quality_labels", float(v.labelled)),
                                ("aios_mesh_quality_automation_rate", v.automation_rate)):
                if value is not None:  # no data is no sample, never a zero
                    per_version[name][key] = float(value)
        families += [_family(name, per_version.get(name, {})) for name in (
            "aios_mesh_quality_accuracy", "aios_mesh_quality_override_rate",
            "aios_mesh_quality_ece", "aios_mesh_quality_labels",
            "aios_mesh_quality_automation_rate")]
        families.append(_family("aios_mesh_lifecycle_refreshed_timestamp_seconds",
                                {(): time.time()}))
        return self._with_failures(families)

    def _with_failures(self, families: list[Metric]) -> list[Metric]:
        name = "aios_mesh_lifecycle_refresh_failures"
        kept = [f for f in families if f.name != name]
        return [*kept, _family(name, {(): float(self._failures)})]

    def _automation(self) -> dict[_Labels, float]:
        answered: dict[_Labels, float] = defaultdict(float)
        automated: dict[_Labels, float] = defaultdict(float)
        for (cap, tenant, outcome), n in self._tail.counts["aios_mesh_calls_recorded"].items():
            if outcome in _ANSWERED:
                answered[(cap, tenant)] += n
            if outcome == "ok":
                automated[(cap, tenant)] += n
        return {key: automated[key] / n for key, n in answered.items() if n}

    def _resolve(self, review_ids: list[str]) -> None:
        """Time to resolution of newly decided items, from the review queue's own times
        (an item the queue does not hold — another state — is skipped)."""
        from aios_mesh.errors import NotFound

        queue = self.mesh.review_queue()
        for review_id in review_ids:
            try:
                item = queue.get(review_id)
            except NotFound:
                continue
            seconds = _seconds_between(item.created_at, item.decided_at)
            if seconds is not None:
                self._tail.resolution[(_name(item.capability), item.tenant)].observe(seconds)
