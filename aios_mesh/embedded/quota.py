"""In-process quota store (scheme ``memory://``): reservations, budgets and a token bucket.

Every call of the pipeline reserves its *estimate* before the backend runs and settles the
*actual* afterwards (or refunds it when the call failed). Outstanding reservations count as
drawn, so concurrent calls can never overshoot a budget together::

    quota = InProcessQuota()
    quota.set_limits("acme", QuotaLimits(calls_per_minute=60, cost_per_month=100.0,
                                         rate_per_s=50, burst=100))
    quota.set_limits("acme", QuotaLimits(tokens_per_day=200_000),
                     capability="summarize-document")
    r = await quota.reserve("acme", "summarize-document", Usage(tokens=800), cost=0.002)
    ...                                   # call the backend
    await quota.settle(r, Usage(tokens=612), cost=0.0015)   # or: await quota.refund(r)

Limits come from :meth:`InProcessQuota.set_limits` or from configuration: the URL's query
options (``memory://?calls_per_minute=60&cost=25&rate_per_s=50&burst=100``) or the same
names as keyword arguments of :meth:`InProcessQuota.from_url` set the *default tenant-wide
limits*, applied to every tenant that has no tenant-wide limits of its own; ``limits=`` maps
``"tenant"`` or ``"tenant/capability"`` to a :class:`QuotaLimits` (or a dict of its fields).

Windows are fixed calendar windows in UTC (:func:`aios_mesh.ports.quota.window_bounds`) read
from ``wall_clock`` (default :func:`time.time`); a call counts in the windows that hold the
moment it was reserved, and its settle or refund adjusts those windows only while they are
still the current ones. Every scope counts every window, limited or not, so a limit set
later sees what was drawn in its window already.

Money and GPU-seconds are kept as integer nano-units inside, so reserve followed by refund
returns *exactly* to the previous value (no float drift, never negative).

All state sits behind one :class:`threading.Lock` and the async methods run their critical
section inline without awaiting, so the store is safe from many threads and many asyncio
tasks at once. Counters live as long as the process; :meth:`reset` forgets settled usage.
"""

from __future__ import annotations

import itertools
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Self

from aios_mesh.backends import BackendURL
from aios_mesh.errors import ConfigError, InvalidInput, QuotaExceeded
from aios_mesh.ports.base import Feature
from aios_mesh.ports.quota import (
    LIMIT_FIELDS,
    METRICS,
    WINDOWS,
    QuotaLimits,
    QuotaStatus,
    Reservation,
    Window,
    WindowUsage,
    over_limit,
    over_rate,
    window_bounds,
)
from aios_mesh.ports.serving import Usage

__all__ = ["InProcessQuota"]

_NANO: Final = 1_000_000_000
_INF: Final = math.inf
# (calls, tokens, gpu_seconds in ns, cost in nano-units)
_Units = tuple[int, int, int, int]
_Key = tuple[str, str | None]
_LIFETIME: Final = len(WINDOWS)  # a scope's counter lists: one per window, then lifetime
#: the order budgets are checked in (lifetime first, then the windows, shortest first)
_CHECK_ORDER: Final = (_LIFETIME, *range(len(WINDOWS)))


def _nano(value: float) -> int:
    return round(value * _NANO)


def _human(index: int, units: int) -> int | float:
    """A counter in the unit people read (calls and tokens as ints, the rest as floats)."""
    return units if index < 2 else units / _NANO


@dataclass(slots=True)
class _Compiled:
    """A :class:`QuotaLimits` in integer units, checked on every reserve."""

    source: QuotaLimits
    caps: tuple[tuple[int, int, int], ...]  # (counter list, metric, cap) of the limits set
    rate: float | None
    burst: float


def _compile(limits: QuotaLimits) -> _Compiled:
    limits.check()
    rate = limits.rate_per_s
    burst = float(limits.burst) if limits.burst is not None else float(
        max(1, math.ceil(rate or 1)))
    caps = []
    for w in _CHECK_ORDER:
        for i, metric in enumerate(METRICS):
            cap = limits.cap(metric, None if w == _LIFETIME else WINDOWS[w])
            if cap is not None:
                caps.append((w, i, int(cap) if i < 2 else _nano(cap)))
    return _Compiled(limits, tuple(caps), rate, burst)


@dataclass(slots=True)
class _Counters:
    """The counters of one scope: a list per window (for the windows starting at
    ``starts``), then the lifetime list; each list is ``[calls, tokens, gpu_ns, nano]``."""

    starts: tuple[int, ...]
    lists: list[list[int]]

    def roll(self, starts: tuple[int, ...]) -> None:
        """Move to the windows starting at ``starts``; a window that changed starts at 0
        with a *new* list, so reservations of the old one no longer touch it."""
        if self.starts != starts:
            for w, start in enumerate(starts):
                if self.starts[w] != start:
                    self.lists[w] = [0, 0, 0, 0]
            self.starts = starts


@dataclass(slots=True)
class _Slot:
    """Everything one ``(tenant, capability)`` reserve touches, found with one lookup."""

    tkey: _Key
    ckey: _Key
    tc: _Counters
    cc: _Counters
    tlim: _Compiled | None
    clim: _Compiled | None
    tbucket: list[float] | None  # [tokens, time of the last refill]; shared per key
    cbucket: list[float] | None


def _units(usage: Usage, cost: float, what: str) -> _Units:
    calls, tokens, gpu = usage.calls, usage.tokens, usage.gpu_seconds
    if calls < 0 or tokens < 0 or not 0 <= gpu < _INF or not 0 <= cost < _INF:
        raise InvalidInput(f"invalid {what}: {usage}, cost={cost!r}",
                           hint="calls, tokens, gpu_seconds and cost must be finite and >= 0")
    return (calls, tokens, round(gpu * _NANO) if gpu else 0,
            round(cost * _NANO) if cost else 0)


class InProcessQuota:
    """Reservation-based quota store held in this process (the embedded default).

    Args:
        default_limits: tenant-wide limits for every tenant without its own.
        limits: ``{"tenant": QuotaLimits | dict, "tenant/capability": ...}``.
        clock: monotonic seconds for the token bucket (tests inject a fake one).
        wall_clock: epoch seconds for the calendar windows (tests inject a fake one).
    """

    features: ClassVar[frozenset[Feature]] = frozenset()

    def __init__(self, *, default_limits: QuotaLimits | None = None,
                 limits: Mapping[str, QuotaLimits | Mapping[str, Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._wall = wall_clock
        self._default = _compile(default_limits) if default_limits is not None else None
        self._limits: dict[_Key, _Compiled] = {}
        self._counters: dict[_Key, _Counters] = {}
        self._buckets: dict[_Key, list[float]] = {}  # [tokens, last refill time]
        self._slots: dict[tuple[str, str], _Slot] = {}
        # reservation id -> (tenant, the counter lists it drew from, estimate)
        self._outstanding: dict[str, tuple[str, tuple[list[int], ...], _Units]] = {}
        self._prefix = f"q{secrets.token_hex(4)}-"
        self._ids = itertools.count(1)
        # the current windows, recomputed when the clock leaves the current minute
        self._minute = (0.0, -1.0)
        self._starts: tuple[int, ...] = ()
        self._ends: tuple[int, ...] = ()
        for key, value in (limits or {}).items():
            tenant, _, capability = key.partition("/")
            self.set_limits(tenant, QuotaLimits.from_mapping(value, repr(key)),
                            capability=capability or None)

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path | None = None,
                 **options: Any) -> Self:
        """Build from ``memory://[?<limit>=...]`` (every name of :class:`QuotaLimits`).

        Query options and keyword arguments with those names set the default tenant-wide
        limits (keywords win); ``limits=``, ``clock=`` and ``wall_clock=`` are passed to the
        constructor.
        """
        del base_dir  # nothing on disk
        limits = options.pop("limits", None)
        clock = options.pop("clock", time.monotonic)
        wall_clock = options.pop("wall_clock", time.time)
        url = url.with_options(options)
        url.check_options(LIMIT_FIELDS, what="memory:// quota")
        merged = {k: url.value(k) for k in LIMIT_FIELDS if url.value(k) is not None}
        default = QuotaLimits.from_mapping(merged, url.redacted()) if merged else None
        return cls(default_limits=default, limits=limits, clock=clock, wall_clock=wall_clock)

    # -- configuration -------------------------------------------------------------------

    def set_limits(self, tenant: str, limits: QuotaLimits, *,
                   capability: str | None = None) -> None:
        """Set (replace) the limits of ``tenant``, or of one ``capability`` of it.

        Counters are kept; the token bucket of that key starts full.
        """
        compiled = _compile(limits)
        key = (tenant, capability)
        with self._lock:
            self._limits[key] = compiled
            self._buckets.pop(key, None)
            self._slots.clear()

    def reset_sync(self, tenant: str, window: Window | None = None) -> None:
        """Thread-safe :meth:`reset`."""
        if window is not None and window not in WINDOWS:
            raise ConfigError(f"unknown quota window {window!r}",
                              hint=f"windows are: {', '.join(WINDOWS)} (or none for all)")
        with self._lock:
            starts = self._windows(self._wall())
            targets: dict[int, list[int]] = {}
            for key, counters in self._counters.items():
                if key[0] != tenant:
                    continue
                counters.roll(starts)
                for w in ([WINDOWS.index(window)] if window else range(_LIFETIME + 1)):
                    counters.lists[w][:] = [0, 0, 0, 0]
                    targets[id(counters.lists[w])] = counters.lists[w]
            for owner, refs, est in self._outstanding.values():
                if owner == tenant:
                    for ref in refs:
                        if id(ref) in targets:
                            for i in range(4):
                                ref[i] += est[i]

    # -- the sync core (also usable from threads directly) -------------------------------

    def _windows(self, now: float) -> tuple[int, ...]:
        """The starts of the current windows (cached while ``now`` stays in one minute)."""
        lo, hi = self._minute
        if not lo <= now < hi:
            bounds = [window_bounds(w, now) for w in WINDOWS]
            self._starts = tuple(b[0] for b in bounds)
            self._ends = tuple(b[1] for b in bounds)
            self._minute = bounds[0]
        return self._starts

    def _refuse(self, slot: _Slot, capability: str, est: _Units,
                now: float) -> QuotaExceeded | None:
        """The error of the budget that binds longest, or ``None`` when all admit.

        A budget that waiting cannot fix (lifetime, or one the call alone overflows) wins,
        the first in check order; otherwise the window that ends last (its reset is when
        every refusing budget admits the call again)."""
        found: list[tuple[str | None, int, int, int, int]] = []
        for lim, counters, cap_name in ((slot.tlim, slot.tc, None),
                                        (slot.clim, slot.cc, capability)):
            if lim is None:
                continue
            for w, i, cap in lim.caps:
                drawn = counters.lists[w][i]
                if drawn + est[i] > cap:
                    found.append((cap_name, w, i, cap, drawn))
        if not found:
            return None

        def waits(v: tuple[str | None, int, int, int, int]) -> float:
            _, w, i, cap, _ = v
            return _INF if w == _LIFETIME or est[i] > cap else self._ends[w]

        cap_name, w, i, cap, drawn = max(found, key=waits)  # max keeps the first of ties
        window = None if w == _LIFETIME else WINDOWS[w]
        return over_limit(slot.tkey[0], cap_name, METRICS[i], window, cap=_human(i, cap),
                          drawn=_human(i, drawn), asks=_human(i, est[i]), now=now,
                          end=None if window is None else self._ends[w])

    @staticmethod
    def _take_rate(limit: _Compiled, bucket: list[float], key: _Key, need: int,
                   now: float) -> None:
        """Refill ``bucket``; raise unless ``need`` tokens are there (taken by the caller)."""
        rate = limit.rate
        assert rate is not None
        tokens = bucket[0] + (now - bucket[1]) * rate
        bucket[0] = tokens if tokens < limit.burst else limit.burst
        bucket[1] = now
        if bucket[0] < need:
            raise over_rate(key[0], key[1], rate=rate, burst=limit.burst, tokens=bucket[0],
                            need=need)

    def _bucket(self, key: _Key, limit: _Compiled | None) -> list[float] | None:
        if limit is None or limit.rate is None:
            return None
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [limit.burst, self._clock()]
        return bucket

    def _scope(self, key: _Key) -> _Counters:
        counters = self._counters.get(key)
        if counters is None:
            counters = self._counters[key] = _Counters(
                self._starts, [[0, 0, 0, 0] for _ in range(_LIFETIME + 1)])
        return counters

    def _slot(self, tenant: str, capability: str) -> _Slot:
        tkey: _Key = (tenant, None)
        ckey: _Key = (tenant, capability)
        tlim = self._limits.get(tkey, self._default)
        clim = self._limits.get(ckey)
        slot = _Slot(tkey, ckey, self._scope(tkey), self._scope(ckey), tlim, clim,
                     self._bucket(tkey, tlim), self._bucket(ckey, clim))
        self._slots[(tenant, capability)] = slot
        return slot

    def reserve_sync(self, tenant: str, capability: str, usage: Usage,
                     cost: float) -> Reservation:
        """Thread-safe :meth:`reserve` without the event loop."""
        est = _units(usage, cost, "quota estimate")
        with self._lock:
            now = self._wall()
            starts = self._windows(now)
            slot = self._slots.get((tenant, capability))
            if slot is None:
                slot = self._slot(tenant, capability)
            tc, cc, tlim, clim = slot.tc, slot.cc, slot.tlim, slot.clim
            if tc.starts is not starts:
                tc.roll(starts)
            if cc.starts is not starts:
                cc.roll(starts)
            for lim, counters in ((tlim, tc), (clim, cc)):
                if lim is not None:
                    lists = counters.lists
                    for w, i, cap in lim.caps:
                        if lists[w][i] + est[i] > cap:
                            refused = self._refuse(slot, capability, est, now)
                            assert refused is not None
                            raise refused
            tb, cb, c = slot.tbucket, slot.cbucket, est[0]
            if (tb is not None or cb is not None) and c:
                mono = self._clock()
                if tb is not None and tlim is not None:
                    self._take_rate(tlim, tb, slot.tkey, c, mono)
                if cb is not None and clim is not None:
                    self._take_rate(clim, cb, slot.ckey, c, mono)
                # every check passed: take the rate tokens together with the budget
                if tb is not None:
                    tb[0] -= c
                if cb is not None:
                    cb[0] -= c
            c, t, g, m = est
            refs = (*tc.lists, *cc.lists)
            for drawn in refs:
                drawn[0] += c
                drawn[1] += t
                drawn[2] += g
                drawn[3] += m
            rid = f"{self._prefix}{next(self._ids)}"
            self._outstanding[rid] = (tenant, refs, est)
        return Reservation(rid, tenant, capability, usage, cost)

    def settle_sync(self, reservation: Reservation, usage: Usage, cost: float) -> None:
        """Thread-safe :meth:`settle`; a second settle or refund is a no-op."""
        ac, at, ag, am = _units(usage, cost, "actual usage")
        with self._lock:
            held = self._outstanding.pop(reservation.id, None)
            if held is None:
                return
            _, refs, (c, t, g, m) = held
            ac, at, ag, am = ac - c, at - t, ag - g, am - m
            for drawn in refs:
                drawn[0] += ac
                drawn[1] += at
                drawn[2] += ag
                drawn[3] += am

    def refund_sync(self, reservation: Reservation) -> None:
        """Thread-safe :meth:`refund`; a second refund or settle is a no-op."""
        with self._lock:
            held = self._outstanding.pop(reservation.id, None)
            if held is None:
                return
            _, refs, (c, t, g, m) = held
            for drawn in refs:
                drawn[0] -= c
                drawn[1] -= t
                drawn[2] -= g
                drawn[3] -= m

    def used_sync(self, tenant: str, capability: str | None = None) -> tuple[Usage, float]:
        """Thread-safe :meth:`used`."""
        with self._lock:
            counters = self._counters.get((tenant, capability))
            c, t, g, m = counters.lists[_LIFETIME] if counters is not None else (0, 0, 0, 0)
        return Usage(calls=c, tokens=t, gpu_seconds=g / _NANO), m / _NANO

    def status_sync(self, tenant: str, capability: str | None = None) -> QuotaStatus:
        """Thread-safe :meth:`status`."""
        with self._lock:
            now = self._wall()
            starts = self._windows(now)
            counters = self._counters.get((tenant, capability))
            if counters is not None:
                counters.roll(starts)
            lists = [list(x) for x in counters.lists] if counters is not None else \
                [[0, 0, 0, 0] for _ in range(_LIFETIME + 1)]
            lim = self._limits.get((tenant, capability),
                                   self._default if capability is None else None)
            ends = self._ends
        windows = [WindowUsage(None, None, None, *_usage(lists[_LIFETIME]))]
        windows += [WindowUsage(w, starts[i], ends[i], *_usage(lists[i]))
                    for i, w in enumerate(WINDOWS)]
        return QuotaStatus(tenant, capability, now,
                           lim.source if lim is not None else QuotaLimits(), tuple(windows))

    @property
    def outstanding(self) -> int:
        """How many reservations are neither settled nor refunded."""
        return len(self._outstanding)

    # -- the port (async face) -----------------------------------------------------------

    async def reserve(self, tenant: str, capability: str, usage: Usage,
                      cost: float) -> Reservation:
        """Admit the estimate against every applicable limit or raise ``QuotaExceeded``.

        Applicable limits: the tenant's own tenant-wide limits (else the default ones) and
        the limits of ``(tenant, capability)``. Nothing is drawn when any of them refuses.
        """
        return self.reserve_sync(tenant, capability, usage, cost)

    async def settle(self, reservation: Reservation, usage: Usage, cost: float) -> None:
        """Replace the reserved estimate by the actual usage (idempotent)."""
        self.settle_sync(reservation, usage, cost)

    async def refund(self, reservation: Reservation) -> None:
        """Give the reserved estimate back (idempotent). Rate tokens are not returned."""
        self.refund_sync(reservation)

    async def used(self, tenant: str, capability: str | None = None) -> tuple[Usage, float]:
        """Drawn in total (settled plus outstanding): tenant-wide, or of one capability."""
        return self.used_sync(tenant, capability)

    async def status(self, tenant: str, capability: str | None = None) -> QuotaStatus:
        """The limits in effect and the usage of every window now."""
        return self.status_sync(tenant, capability)

    async def reset(self, tenant: str, *, window: Window | None = None) -> None:
        """Forget the tenant's settled usage (every scope) in the current ``window``, or in
        every window and the lifetime counters; outstanding reservations stay counted."""
        self.reset_sync(tenant, window)

    async def aclose(self) -> None:
        """Nothing to release; the counters stay readable."""


def _usage(drawn: list[int]) -> tuple[Usage, float]:
    c, t, g, m = drawn
    return Usage(calls=c, tokens=t, gpu_seconds=g / _NANO), m / _NANO
