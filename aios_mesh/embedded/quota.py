"""In-process quota store (scheme ``memory://``): reservations, budgets and a token bucket.

Every call of the pipeline reserves its *estimate* before the backend runs and settles the
*actual* afterwards (or refunds it when the call failed). Outstanding reservations count as
drawn, so concurrent calls can never overshoot a budget together::

    quota = InProcessQuota()
    quota.set_limits("acme", QuotaLimits(calls=1000, cost=25.0, rate_per_s=50, burst=100))
    quota.set_limits("acme", QuotaLimits(tokens=200_000), capability="summarize-document")
    r = await quota.reserve("acme", "summarize-document", Usage(tokens=800), cost=0.002)
    ...                                   # call the backend
    await quota.settle(r, Usage(tokens=612), cost=0.0015)   # or: await quota.refund(r)

Limits come from :meth:`InProcessQuota.set_limits` or from configuration: the URL's query
options (``memory://?calls=1000&cost=25&rate_per_s=50&burst=100``) or the same names as
keyword arguments of :meth:`InProcessQuota.from_url` set the *default tenant-wide limits*,
applied to every tenant that has no tenant-wide limits of its own; ``limits=`` maps
``"tenant"`` or ``"tenant/capability"`` to a :class:`QuotaLimits` (or a dict of its fields).

Money and GPU-seconds are kept as integer nano-units inside, so reserve followed by refund
returns *exactly* to the previous value (no float drift, never negative).

All state sits behind one :class:`threading.Lock` and the async methods run their critical
section inline without awaiting, so the store is safe from many threads and many asyncio
tasks at once. Counters live as long as the process (no windows); :meth:`reset` clears the
settled part of a tenant's counters.
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
from aios_mesh.errors import InvalidInput, QuotaExceeded
from aios_mesh.ports.base import Feature
from aios_mesh.ports.quota import LIMIT_FIELDS, QuotaLimits, Reservation
from aios_mesh.ports.serving import Usage

__all__ = ["InProcessQuota"]

_NANO: Final = 1_000_000_000
_INF: Final = math.inf
# (calls, tokens, gpu_seconds in ns, cost in nano-units)
_Units = tuple[int, int, int, int]
_Key = tuple[str, str | None]
_NAMES: Final = ("calls", "tokens", "gpu_seconds", "cost")


def _nano(value: float) -> int:
    return round(value * _NANO)


def _shown(index: int, units: int) -> str:
    """A counter in the unit people read (calls and tokens as ints, the rest as floats)."""
    return str(units) if index < 2 else f"{units / _NANO:g}"


@dataclass(slots=True)
class _Compiled:
    """A :class:`QuotaLimits` in integer units, checked on every reserve."""

    source: QuotaLimits
    caps: tuple[tuple[int, int], ...]  # (counter index, cap) of the limits that are set
    rate: float | None
    burst: float


def _compile(limits: QuotaLimits) -> _Compiled:
    limits.check()
    rate = limits.rate_per_s
    burst = float(limits.burst) if limits.burst is not None else float(
        max(1, math.ceil(rate or 1)))
    raw = (limits.calls, limits.tokens,
           None if limits.gpu_seconds is None else _nano(limits.gpu_seconds),
           None if limits.cost is None else _nano(limits.cost))
    caps = tuple((i, cap) for i, cap in enumerate(raw) if cap is not None)
    return _Compiled(limits, caps, rate, burst)


@dataclass(slots=True)
class _Slot:
    """Everything one ``(tenant, capability)`` reserve touches, found with one lookup."""

    tkey: _Key
    ckey: _Key
    tdrawn: list[int]
    cdrawn: list[int]
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
    """

    features: ClassVar[frozenset[Feature]] = frozenset()

    def __init__(self, *, default_limits: QuotaLimits | None = None,
                 limits: Mapping[str, QuotaLimits | Mapping[str, Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._default = _compile(default_limits) if default_limits is not None else None
        self._limits: dict[_Key, _Compiled] = {}
        self._drawn: dict[_Key, list[int]] = {}
        self._buckets: dict[_Key, list[float]] = {}  # [tokens, last refill time]
        self._slots: dict[tuple[str, str], _Slot] = {}
        # reservation id -> (tenant, tenant-wide counters, capability counters, estimate)
        self._outstanding: dict[str, tuple[str, list[int], list[int], _Units]] = {}
        self._prefix = f"q{secrets.token_hex(4)}-"
        self._ids = itertools.count(1)
        for key, value in (limits or {}).items():
            tenant, _, capability = key.partition("/")
            self.set_limits(tenant, QuotaLimits.from_mapping(value, repr(key)),
                            capability=capability or None)

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path | None = None,
                 **options: Any) -> Self:
        """Build from ``memory://[?calls=&tokens=&cost=&gpu_seconds=&rate_per_s=&burst=]``.

        Query options and keyword arguments with those names set the default tenant-wide
        limits (keywords win); ``limits=`` and ``clock=`` are passed to the constructor.
        """
        del base_dir  # nothing on disk
        limits = options.pop("limits", None)
        clock = options.pop("clock", time.monotonic)
        url = url.with_options(options)
        url.check_options(LIMIT_FIELDS, what="memory:// quota")
        merged = {k: url.value(k) for k in LIMIT_FIELDS if url.value(k) is not None}
        default = QuotaLimits.from_mapping(merged, url.redacted()) if merged else None
        return cls(default_limits=default, limits=limits, clock=clock)

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

    def reset(self, tenant: str | None = None) -> None:
        """Forget settled usage (of one tenant, or all); outstanding reservations stay."""
        with self._lock:
            for key, drawn in self._drawn.items():
                if tenant is None or key[0] == tenant:
                    drawn[:] = [0, 0, 0, 0]
            for owner, tdrawn, cdrawn, est in self._outstanding.values():
                if tenant is None or owner == tenant:
                    for drawn in (tdrawn, cdrawn):
                        for i in range(4):
                            drawn[i] += est[i]

    # -- the sync core (also usable from threads directly) -------------------------------

    def _check(self, limit: _Compiled, drawn: list[int], est: _Units, key: _Key) -> None:
        for i, cap in limit.caps:
            if drawn[i] + est[i] > cap:
                tenant, capability = key
                scope = f" for capability {capability!r}" if capability else ""
                left = max(0, cap - drawn[i])
                raise QuotaExceeded(
                    f"tenant {tenant!r} is over its {_NAMES[i]} limit{scope}: limit "
                    f"{_shown(i, cap)}, left {_shown(i, left)}, this call asks "
                    f"{_shown(i, est[i])}",
                    hint="wait for running calls to settle, raise the limit "
                         "(set_limits or the quota config), or lower the estimate",
                    tenant=tenant, capability=capability, limit=_NAMES[i],
                    left=left if i < 2 else left / _NANO)

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
            tenant, capability = key
            scope = f" for capability {capability!r}" if capability else ""
            wait = (need - bucket[0]) / rate if need <= limit.burst else math.inf
            raise QuotaExceeded(
                f"tenant {tenant!r} is over its rate limit{scope}: {rate:g} calls/s with "
                f"burst {limit.burst:g}, left {math.floor(bucket[0])} calls now",
                hint=(f"retry in {wait:.3f} s" if math.isfinite(wait)
                      else "this call asks for more calls than the burst allows") +
                     ", or raise rate_per_s/burst",
                tenant=tenant, capability=capability, limit="rate_per_s",
                left=math.floor(bucket[0]), retry_after_s=wait)

    def _bucket(self, key: _Key, limit: _Compiled | None) -> list[float] | None:
        if limit is None or limit.rate is None:
            return None
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [limit.burst, self._clock()]
        return bucket

    def _slot(self, tenant: str, capability: str) -> _Slot:
        tkey: _Key = (tenant, None)
        ckey: _Key = (tenant, capability)
        tlim = self._limits.get(tkey, self._default)
        clim = self._limits.get(ckey)
        slot = _Slot(tkey, ckey, self._drawn.setdefault(tkey, [0, 0, 0, 0]),
                     self._drawn.setdefault(ckey, [0, 0, 0, 0]), tlim, clim,
                     self._bucket(tkey, tlim), self._bucket(ckey, clim))
        self._slots[(tenant, capability)] = slot
        return slot

    def reserve_sync(self, tenant: str, capability: str, usage: Usage,
                     cost: float) -> Reservation:
        """Thread-safe :meth:`reserve` without the event loop."""
        est = _units(usage, cost, "quota estimate")
        with self._lock:
            slot = self._slots.get((tenant, capability))
            if slot is None:
                slot = self._slot(tenant, capability)
            tdrawn, cdrawn, tlim, clim = slot.tdrawn, slot.cdrawn, slot.tlim, slot.clim
            if tlim is not None and tlim.caps:
                self._check(tlim, tdrawn, est, slot.tkey)
            if clim is not None and clim.caps:
                self._check(clim, cdrawn, est, slot.ckey)
            tb, cb, c = slot.tbucket, slot.cbucket, est[0]
            if (tb is not None or cb is not None) and c:
                now = self._clock()
                if tb is not None and tlim is not None:
                    self._take_rate(tlim, tb, slot.tkey, c, now)
                if cb is not None and clim is not None:
                    self._take_rate(clim, cb, slot.ckey, c, now)
                # every check passed: take the rate tokens together with the budget
                if tb is not None:
                    tb[0] -= c
                if cb is not None:
                    cb[0] -= c
            c, t, g, m = est
            tdrawn[0] += c
            tdrawn[1] += t
            tdrawn[2] += g
            tdrawn[3] += m
            cdrawn[0] += c
            cdrawn[1] += t
            cdrawn[2] += g
            cdrawn[3] += m
            rid = f"{self._prefix}{next(self._ids)}"
            self._outstanding[rid] = (tenant, tdrawn, cdrawn, est)
        return Reservation(rid, tenant, capability, usage, cost)

    def settle_sync(self, reservation: Reservation, usage: Usage, cost: float) -> None:
        """Thread-safe :meth:`settle`; a second settle or refund is a no-op."""
        ac, at, ag, am = _units(usage, cost, "actual usage")
        with self._lock:
            held = self._outstanding.pop(reservation.id, None)
            if held is None:
                return
            _, tdrawn, cdrawn, (c, t, g, m) = held
            ac, at, ag, am = ac - c, at - t, ag - g, am - m
            tdrawn[0] += ac
            tdrawn[1] += at
            tdrawn[2] += ag
            tdrawn[3] += am
            cdrawn[0] += ac
            cdrawn[1] += at
            cdrawn[2] += ag
            cdrawn[3] += am

    def refund_sync(self, reservation: Reservation) -> None:
        """Thread-safe :meth:`refund`; a second refund or settle is a no-op."""
        with self._lock:
            held = self._outstanding.pop(reservation.id, None)
            if held is None:
                return
            _, tdrawn, cdrawn, (c, t, g, m) = held
            for drawn in (tdrawn, cdrawn):
                drawn[0] -= c
                drawn[1] -= t
                drawn[2] -= g
                drawn[3] -= m

    def used_sync(self, tenant: str, capability: str | None = None) -> tuple[Usage, float]:
        """Thread-safe :meth:`used`."""
        with self._lock:
            drawn = self._drawn.get((tenant, capability))
            c, t, g, m = drawn if drawn is not None else (0, 0, 0, 0)
        return Usage(calls=c, tokens=t, gpu_seconds=g / _NANO), m / _NANO

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
        """Drawn now (settled plus outstanding): tenant-wide, or of one capability."""
        return self.used_sync(tenant, capability)

    async def aclose(self) -> None:
        """Nothing to release; the counters stay readable."""
