"""SLO contracts that route: each call goes to the cheapest candidate backend that currently
meets the capability's SLO, and an error budget burning too fast raises an alert.

A capability lists the serving backends that can answer it (the same model version deployed
on each) and its SLO::

    [[capabilities]]
    name = "extract-invoice-fields"
    model = "invoice-extractor@champion"
    slo = { timeout_s = 2, p95_ms = 50, max_cost = 0.002, objective = 0.95 }
    candidates = [
      { serving = "bentoml-spot", price = { per_call = 0.0005 } },
      { serving = "triton-gpu",   price = { per_call = 0.0015 } },
    ]

:class:`SLORouter`, an admission controller, keeps live statistics per candidate
(capability × backend × model version: the latency and errors of its latest ``recent`` calls
within ``window_s``) and sends each call to the cheapest candidate that meets the SLO (p95 at most
``p95_ms``, error rate within the error budget, price at most ``max_cost``). A model version
whose reviewed accuracy (:class:`~aios_mesh.lifecycle.live_quality.LiveQuality`) is below
``min_quality`` meets it on no backend: its calls are best effort (``route.slo_met: false``,
``route.quality``) or refused, and count against the error budget. A candidate with
too little evidence counts as meeting it (so a new backend gets traffic), and a breached one
is probed with one call per ``probe_s`` so its recovery is seen. The model version is not
the router's to choose: the rollout split (canary) and the lock file decided it before the
admission stage, so a canary keeps its share.

When the preferred candidate changes, the audit log gets a ``slo_route`` entry with the
evidence. When no candidate meets the SLO the call goes to the best one (lowest p95) and its
record says ``route.slo_met: false`` — or, with ``on_unmet = "reject"``, the call is refused
with :class:`SLOUnattainable` (503).

**Burn-rate alerts** follow the multi-window style of the Google SRE workbook ("Alerting on
SLOs"): a call is *bad* when it fails or takes longer than ``p95_ms``; the budget is
``1 - objective``; an alert fires when the burn rate (bad share / budget) exceeds a window
pair's factor over both its long and its short window — by default 14.4 over 1 h and 5 min
(page), 6 over 6 h and 30 min (ticket). A firing alert is an audit entry (``slo_alert``), an
event on ``aios.mesh.slo`` and a warning in the log; it fires again only after it cleared.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aios_mesh.errors import Overloaded
from aios_mesh.lifecycle.stats import p95 as latency_p95
from aios_mesh.pipeline.call import Call, Release
from aios_mesh.ports.events import Event

if TYPE_CHECKING:
    from aios_mesh.capabilities import Candidate, CapabilitySpec
    from aios_mesh.ports.audit import AuditLog

__all__ = ["DEFAULT_BURN_WINDOWS", "SLO_TOPIC", "BurnWindow", "SLORouter", "SLOUnattainable"]

_log = logging.getLogger("aios_mesh.lifecycle")

#: where burn-rate alerts go (through the mesh's outbox)
SLO_TOPIC = "aios.mesh.slo"


class SLOUnattainable(Overloaded):
    """No candidate backend currently meets the capability's SLO and it declares
    ``on_unmet = "reject"``."""

    code = "slo_unattainable"


@dataclass(frozen=True, slots=True)
class BurnWindow:
    """One multi-window alert: fire when the burn rate exceeds ``factor`` over both the
    ``long_s`` and the ``short_s`` window."""

    name: str
    long_s: float
    short_s: float
    factor: float


#: The SRE workbook's page and ticket alerts for a 30-day budget.
DEFAULT_BURN_WINDOWS = (BurnWindow("page", 3600.0, 300.0, 14.4),
                        BurnWindow("ticket", 21600.0, 1800.0, 6.0))


@dataclass(slots=True)
class _Stats:
    """Recent calls of one candidate: (when, latency ms, failed)."""

    calls: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=512))
    probed_at: float = 0.0
    breached: bool = False

    def recent(self, now: float, window_s: float) -> list[tuple[float, float, bool]]:
        while self.calls and now - self.calls[0][0] > window_s:
            self.calls.popleft()
        return list(self.calls)


@dataclass(slots=True)
class _Budget:
    """Good and bad calls of one capability, in 10-second buckets (for burn rates)."""

    buckets: deque[list[float]] = field(default_factory=deque)  # [start, good, bad]
    firing: set[str] = field(default_factory=set)

    def add(self, now: float, bad: bool, keep_s: float) -> None:
        start = now - now % 10.0
        if not self.buckets or self.buckets[-1][0] != start:
            while self.buckets and now - self.buckets[0][0] > keep_s:
                self.buckets.popleft()
            self.buckets.append([start, 0.0, 0.0])
        self.buckets[-1][2 if bad else 1] += 1

    def bad_share(self, now: float, span_s: float) -> tuple[float, int]:
        good = bad = 0.0
        for start, g, b in reversed(self.buckets):
            if now - start > span_s:
                break
            good, bad = good + g, bad + b
        total = good + bad
        return (bad / total if total else 0.0), int(total)


class SLORouter:
    """Routes each call of a capability with ``candidates`` to the cheapest backend that
    meets its SLO (see the module docs).

    Args:
        audit: where route changes and alerts are recorded (``lambda: mesh.ports.audit``).
        publish: queues an alert event (``mesh.publish``); None: no event.
        window_s: how far back a candidate's statistics reach.
        recent: at most this many of its latest calls are judged (p95, error rate).
        min_calls: evidence below which a candidate counts as meeting the SLO.
        probe_s: a breached candidate gets one call per this many seconds.
        burn_windows: the alert window pairs.
        quality: ``(capability, model version) -> (reviewed accuracy, labels)`` for
            ``SLO.min_quality`` (the mesh's :class:`~aios_mesh.lifecycle.live_quality.
            LiveQuality`); None: not judged.
    """

    name = "slo-router"

    def __init__(self, audit: Callable[[], AuditLog],
                 publish: Callable[[str, Event], Awaitable[None]] | None = None, *,
                 window_s: float = 30.0, recent: int = 50, min_calls: int = 20,
                 probe_s: float = 1.0,
                 burn_windows: Sequence[BurnWindow] = DEFAULT_BURN_WINDOWS,
                 quality: Callable[[str, str], tuple[float, int] | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._audit = audit
        self._publish = publish
        self.window_s = window_s
        self.recent = max(recent, min_calls)
        self.min_calls = min_calls
        self.probe_s = probe_s
        self.burn_windows = tuple(burn_windows)
        self._quality = quality
        self._clock = clock
        self._stats: dict[tuple[str, str, str], _Stats] = {}
        self._budgets: dict[str, _Budget] = {}
        self._preferred: dict[str, str] = {}
        self._lock = threading.Lock()
        self.shifts: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self._unsent: deque[dict[str, Any]] = deque()

    def applies(self, spec: CapabilitySpec) -> bool:
        return bool(spec.candidates)

    # ------------------------------------------------------------------ choosing
    def _judge(self, spec: CapabilitySpec, version: str, now: float
               ) -> list[tuple[Candidate, float | None, float, bool]]:
        """Each candidate: (candidate, p95 or None when too little evidence, error rate,
        meets the SLO)."""
        slo = spec.slo
        budget = 1.0 - slo.objective
        out = []
        for cand in spec.candidates:
            stats = self._stats.get((spec.name, cand.label, version))
            # the latest ``recent`` calls within the window: a degrading backend shows in a
            # few calls, not after it has spoiled a twentieth of a long history
            calls = stats.recent(now, self.window_s)[-self.recent:] if stats is not None else []
            if stats is None or (len(calls) < self.min_calls and not stats.breached):
                p95, errors, meets = None, 0.0, True  # new: it gets traffic to show itself
            elif not calls:
                p95, errors, meets = None, 0.0, False  # breached, and no probe back yet
            else:
                # enough evidence, or a breached candidate judged on its probes: it stays
                # breached until its recent calls (the probes) meet the SLO again
                p95 = latency_p95([c[1] for c in calls if not c[2]])
                errors = sum(c[2] for c in calls) / len(calls)
                meets = (errors <= budget and p95 is not None
                         and (slo.p95_ms is None or p95 <= slo.p95_ms))
                stats.breached = not meets
            if not _affordable(spec, cand):
                meets = False
            out.append((cand, p95, errors, meets))
        return out

    async def admit(self, call: Call) -> Release:
        if self._unsent:
            await self.send_alerts()
        spec = call.spec
        version = call.model_ref.version if call.model_ref is not None else ""
        now = self._clock()
        judged = self._judge(spec, version, now)
        # a version answering below min_quality does so on every backend: the SLO is unmet
        # whichever serves the call, so the choice of backend stays the latency/cost one
        low = self._low_quality(spec, version)
        meeting = [j for j in judged if j[3]]
        slo_met = bool(meeting) and low is None
        if not slo_met and spec.slo.on_unmet == "reject":
            why = (f"model version {version} keeps {low:.0%} of its reviewed answers, "
                   f"below min_quality {spec.slo.min_quality}" if low is not None else
                   f"p95 ≤ {spec.slo.p95_ms} ms, errors within "
                   f"{1 - spec.slo.objective:.3g}")
            raise SLOUnattainable(
                f"no backend of {spec.name} meets its SLO now ({why})",
                hint="retry later; the mesh probes the backends and routes back as soon "
                     "as one recovers", retry_after=self.probe_s)
        if meeting:
            chosen = min(meeting, key=lambda j: ((j[0].price or spec.price).per_call,
                                                 j[1] if j[1] is not None else 0.0))
        else:
            # best effort: the fastest backend within the cost limit (a hard limit), else
            # the cheapest
            affordable = [j for j in judged if _affordable(spec, j[0])]
            chosen = (min(affordable, key=lambda j: j[1] if j[1] is not None else 0.0)
                      if affordable else
                      min(judged, key=lambda j: (j[0].price or spec.price).per_call))
        cand = chosen[0]
        # a breached candidate gets a probe now and then, so its recovery is seen
        for other in judged:
            if not other[3] and other[0] is not cand and _affordable(spec, other[0]):
                stats = self._stats.get((spec.name, other[0].label, version))
                if stats is not None and now - stats.probed_at >= self.probe_s:
                    stats.probed_at = now
                    cand = other[0]
                    break
        if cand is chosen[0]:
            await self._note_preference(spec, version, cand, judged, slo_met)
        call.backend = cand.serving
        call.price = cand.price
        call.route = ({"backend": cand.label, "slo_met": slo_met} if low is None else
                      {"backend": cand.label, "slo_met": False, "quality": round(low, 4)})
        key = (spec.name, cand.label, version)
        stats = self._stats.get(key)
        if stats is None:
            with self._lock:
                stats = self._stats.setdefault(key, _Stats())
        started = self._clock()

        def release() -> None:
            end = self._clock()
            latency_ms = (end - started) * 1000.0
            failed = call.error is not None
            stats.calls.append((end, latency_ms, failed))
            self._account(spec, end, failed or low is not None
                          or (spec.slo.p95_ms is not None and latency_ms > spec.slo.p95_ms))

        return release

    def _low_quality(self, spec: CapabilitySpec, version: str) -> float | None:
        """The version's reviewed accuracy when it is below ``min_quality`` (on at least
        ``min_calls`` verdicts), else None."""
        floor = spec.slo.min_quality
        if floor is None or self._quality is None:
            return None
        found = self._quality(spec.name, version)
        if found is None or found[1] < self.min_calls or found[0] >= floor:
            return None
        return found[0]

    async def _note_preference(self, spec: CapabilitySpec, version: str, cand: Candidate,
                               judged: list[tuple[Candidate, float | None, float, bool]],
                               slo_met: bool) -> None:
        before = self._preferred.get(spec.name)
        if before == cand.label:
            return
        self._preferred[spec.name] = cand.label
        if before is None:
            return  # the first choice is no shift
        entry = {"kind": "slo_route", "capability": spec.name, "model_version": version,
                 "from": before, "to": cand.label, "slo_met": slo_met,
                 "reason": _reason(judged, before),
                 "candidates": [{"backend": c.label, "p95_ms": None if p is None
                                 else round(p, 3), "error_rate": round(e, 4), "meets": m}
                                for c, p, e, m in judged],
                 "at": datetime.now(UTC).isoformat()}
        self.shifts.append(entry)
        _log.warning("SLO routing of %s moved from %s to %s: %s", spec.name, before,
                     cand.label, entry["reason"])
        await self._audit().append(entry)

    # ------------------------------------------------------------------ error budget
    def _account(self, spec: CapabilitySpec, now: float, bad: bool) -> None:
        if not self.burn_windows:
            return
        budget = self._budgets.get(spec.name)
        if budget is None:
            with self._lock:
                budget = self._budgets.setdefault(spec.name, _Budget())
        keep = max((w.long_s for w in self.burn_windows), default=0.0)
        budget.add(now, bad, keep)
        allowed = 1.0 - spec.slo.objective
        for window in self.burn_windows:
            long_share, long_n = budget.bad_share(now, window.long_s)
            short_share, _ = budget.bad_share(now, window.short_s)
            burning = (long_n >= self.min_calls and long_share / allowed > window.factor
                       and short_share / allowed > window.factor)
            if burning and window.name not in budget.firing:
                budget.firing.add(window.name)
                self._alert(spec, window, long_share / allowed, short_share / allowed)
            elif not burning and window.name in budget.firing:
                budget.firing.discard(window.name)

    def _alert(self, spec: CapabilitySpec, window: BurnWindow, long_rate: float,
               short_rate: float) -> None:
        entry = {"kind": "slo_alert", "capability": spec.name, "alert": window.name,
                 "burn_rate_long": round(long_rate, 3), "burn_rate_short": round(short_rate, 3),
                 "factor": window.factor, "long_s": window.long_s, "short_s": window.short_s,
                 "objective": spec.slo.objective, "p95_ms": spec.slo.p95_ms,
                 "at": datetime.now(UTC).isoformat()}
        self.alerts.append(entry)
        _log.warning("SLO alert (%s) for %s: burn rate %.1f over %.0f s and %.1f over %.0f s",
                     window.name, spec.name, long_rate, window.long_s, short_rate,
                     window.short_s)
        # a release cannot await: the audit entry and the event go out at the next admit
        # (or :meth:`send_alerts`)
        self._unsent.append(entry)

    async def send_alerts(self) -> None:
        """Record the alerts raised since the last call: audit entry, then event."""
        while self._unsent:
            entry = self._unsent.popleft()
            await self._audit().append(entry)
            if self._publish is not None:
                await self._publish(SLO_TOPIC, Event(
                    type=SLO_TOPIC, source="aios-mesh/slo-router", tenant="aios-mesh",
                    subject=entry["capability"], key=entry["capability"], data=entry))


def _affordable(spec: CapabilitySpec, candidate: Candidate) -> bool:
    limit = spec.slo.max_cost
    return limit is None or (candidate.price or spec.price).per_call <= limit


def _reason(judged: list[tuple[Candidate, float | None, float, bool]], before: str) -> str:
    for cand, p95, errors, meets in judged:
        if cand.label == before:
            if meets:
                return f"{cand.label} still meets the SLO; a cheaper candidate does too"
            return (f"{cand.label} breached: p95 {p95 if p95 is None else round(p95, 1)} ms, "
                    f"error rate {errors:.3f}")
    return "the previous backend is no longer a candidate"
