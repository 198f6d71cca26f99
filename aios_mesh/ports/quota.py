"""Quota port: reserve an estimate before a call, settle the actual after, refund on failure.

Limits are *lifetime* budgets (``calls``, ``tokens``, ``cost``, ``gpu_seconds``: they never
reset by themselves), *window* budgets (``<metric>_per_<window>``, e.g. ``calls_per_minute``,
``cost_per_month``) over fixed calendar windows in UTC (see :func:`window_bounds`), and a
token bucket on calls (``rate_per_s``/``burst``).
"""

from __future__ import annotations

import calendar
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, runtime_checkable

from aios_mesh.errors import ConfigError, QuotaExceeded
from aios_mesh.ports.base import Feature
from aios_mesh.ports.serving import Usage

__all__ = [
    "LIMIT_FIELDS",
    "METRICS",
    "WINDOWS",
    "Metric",
    "QuotaLimits",
    "QuotaStatus",
    "QuotaStore",
    "Reservation",
    "Window",
    "WindowUsage",
    "over_limit",
    "over_rate",
    "window_bounds",
]

Metric = Literal["calls", "tokens", "gpu_seconds", "cost"]
Window = Literal["minute", "hour", "day", "month"]
#: The metrics every store counts, in its counter order.
METRICS: Final[tuple[Metric, ...]] = ("calls", "tokens", "gpu_seconds", "cost")
#: The calendar windows, shortest first.
WINDOWS: Final[tuple[Window, ...]] = ("minute", "hour", "day", "month")
_FIXED: Final = {"minute": 60, "hour": 3600, "day": 86400}


def window_bounds(window: Window, now: float) -> tuple[int, int]:
    """``(start, end)`` in whole epoch seconds of the calendar ``window`` (UTC) holding
    ``now``: ``start <= now < end``; the next window starts at ``end``.

    Windows are fixed, not sliding: a minute is ``hh:mm:00``–``hh:mm+1:00``, a day starts
    at 00:00 UTC, a month on its first day at 00:00 UTC (28 to 31 days long).
    """
    t = math.floor(now)
    size = _FIXED.get(window)
    if size is not None:
        start = t - t % size
        return start, start + size
    if window != "month":
        raise ConfigError(f"unknown quota window {window!r}",
                          hint=f"windows are: {', '.join(WINDOWS)}")
    day = datetime.fromtimestamp(t - t % 86400, UTC)
    start = t - t % 86400 - (day.day - 1) * 86400
    return start, start + calendar.monthrange(day.year, day.month)[1] * 86400


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Budgets for one tenant (optionally one capability of it). ``None`` = unlimited.

    ``calls``/``tokens``/``cost``/``gpu_seconds`` are lifetime budgets; ``<metric>_per_<window>``
    are budgets per calendar window in UTC; ``rate_per_s``/``burst`` add a token-bucket limit
    on calls.
    """

    calls: int | None = None
    tokens: int | None = None
    cost: float | None = None
    gpu_seconds: float | None = None
    rate_per_s: float | None = None
    burst: int | None = None
    calls_per_minute: int | None = None
    calls_per_hour: int | None = None
    calls_per_day: int | None = None
    calls_per_month: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_hour: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    cost_per_minute: float | None = None
    cost_per_hour: float | None = None
    cost_per_day: float | None = None
    cost_per_month: float | None = None
    gpu_seconds_per_minute: float | None = None
    gpu_seconds_per_hour: float | None = None
    gpu_seconds_per_day: float | None = None
    gpu_seconds_per_month: float | None = None

    @classmethod
    def from_mapping(cls, value: QuotaLimits | Mapping[str, Any], where: str) -> QuotaLimits:
        """Limits from a mapping of strings or numbers (URL options, config tables); every
        store parses them this way. Empty values mean unlimited; anything else wrong (an
        unknown name, with the closest valid one; a fraction for a count) is a
        :class:`ConfigError` naming ``where``."""
        if isinstance(value, QuotaLimits):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"quota limits for {where} must be a mapping, got {value!r}",
                              hint="write e.g. {'calls_per_minute': 60, 'cost_per_month': "
                                   f"100.0}}; {_NAMES_HINT}")
        unknown = sorted(str(k) for k in set(value) - set(LIMIT_FIELDS))
        if unknown:
            close = difflib.get_close_matches(unknown[0], LIMIT_FIELDS, n=1, cutoff=0.6)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown quota limit {unknown[0]!r} for {where}{guess}",
                              hint=_NAMES_HINT, key=unknown[0],
                              **({"suggestion": close[0]} if close else {}))
        parsed: dict[str, Any] = {}
        for name, raw in value.items():
            if raw is None or raw == "":
                continue
            parsed[name] = _number(name, raw, where)
        return cls(**parsed)

    def cap(self, metric: Metric, window: Window | None = None) -> int | float | None:
        """The budget of ``metric`` over ``window`` (``None``: the lifetime budget)."""
        value: int | float | None = getattr(
            self, metric if window is None else f"{metric}_per_{window}")
        return value

    def check(self) -> QuotaLimits:
        """Raise :class:`ConfigError` unless every limit is a finite number >= 0, the rate is
        positive and a burst comes with a rate; returns ``self``."""
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)
                                      or not 0 <= value < math.inf):
                raise ConfigError(f"quota limit {name}={value!r} is not a finite number >= 0",
                                  hint=f"set {name} to a non-negative number, or None for "
                                       "unlimited")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ConfigError(f"quota limit rate_per_s={self.rate_per_s!r} must be > 0",
                              hint="leave rate_per_s unset for no rate limit")
        if self.burst is not None and self.rate_per_s is None:
            raise ConfigError("quota limit burst is set without rate_per_s",
                              hint="set rate_per_s too (burst is the bucket size of the "
                                   "rate limit)")
        return self


#: The limit names, in declaration order (also the URL option names of quota stores).
LIMIT_FIELDS: Final = tuple(f.name for f in fields(QuotaLimits))
_INT_FIELDS: Final = frozenset(n for n in LIMIT_FIELDS
                               if n.startswith(("calls", "tokens")) or n == "burst")
_NAMES_HINT: Final = ("quota limits are calls, tokens, cost, gpu_seconds (lifetime), "
                      "<metric>_per_<minute|hour|day|month> (e.g. calls_per_minute, "
                      "cost_per_month; calendar windows in UTC), rate_per_s and burst")


def _number(name: str, raw: Any, where: str) -> int | float:
    """``raw`` (a number or its text) as the type of limit ``name``; counts must be whole."""
    whole = name in _INT_FIELDS
    hint = f"write {name}=<{'integer' if whole else 'number'}>, or leave it out for unlimited"
    number: int | float
    try:
        if isinstance(raw, bool):
            raise TypeError("a flag is not a limit")
        number = raw if isinstance(raw, int) else int(raw) if isinstance(raw, str) \
            and raw.strip().lstrip("+-").isdigit() else float(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"quota limit {name}={raw!r} for {where} is not a number",
                          hint=hint) from exc
    if not whole:
        return float(number)
    if isinstance(number, float):
        if not number.is_integer():
            raise ConfigError(f"quota limit {name}={raw!r} for {where} is not a whole number",
                              hint=hint)
        return int(number)
    return number


def over_limit(tenant: str, capability: str | None, metric: Metric, window: Window | None,
               *, cap: int | float, drawn: int | float, asks: int | float, now: float,
               end: int | None) -> QuotaExceeded:
    """The error of a budget that refuses a call (every store words it this way).

    ``end`` is the end of ``window`` (``None`` for a lifetime budget); the error's
    ``retry_after_s`` is ``end - now``, or ``None`` when waiting does not help (a lifetime
    budget, or a call that alone asks more than the window's whole budget).
    """
    name = metric if window is None else f"{metric}_per_{window}"
    scope = f" for capability {capability!r}" if capability else ""
    left = max(0, cap - drawn)
    text = (f"tenant {tenant!r} is over its {name} limit{scope}: limit {_shown(cap)}, "
            f"left {_shown(left)}, this call asks {_shown(asks)}")
    details: dict[str, Any] = {"tenant": tenant, "capability": capability, "limit": name,
                               "left": left}
    if window is None or end is None:
        return QuotaExceeded(text, hint="wait for running calls to settle, raise the limit "
                                        "(set_limits or the quota config), or lower the "
                                        "estimate", **details)
    resets_at = datetime.fromtimestamp(end, UTC)
    wait = max(0.0, end - now)
    text += f"; this {window} window resets at {resets_at.isoformat()} (in {wait:.0f} s)"
    if asks > cap:
        return QuotaExceeded(text, hint=f"this call alone asks more than {name} allows; "
                                        f"raise {name} or lower the estimate",
                             window=window, resets_at=resets_at, **details)
    return QuotaExceeded(text, hint=f"retry in {math.ceil(wait)} s, raise {name} (set_limits "
                                    "or the quota config), or lower the estimate",
                         window=window, retry_after_s=wait, resets_at=resets_at, **details)


def over_rate(tenant: str, capability: str | None, *, rate: float, burst: float,
              tokens: float, need: int) -> QuotaExceeded:
    """The error of a token bucket with ``tokens`` left that cannot give ``need``."""
    scope = f" for capability {capability!r}" if capability else ""
    wait = (need - tokens) / rate if need <= burst else None
    return QuotaExceeded(
        f"tenant {tenant!r} is over its rate limit{scope}: {rate:g} calls/s with burst "
        f"{burst:g}, left {math.floor(tokens)} calls now",
        hint=(f"retry in {wait:.3f} s" if wait is not None
              else "this call asks for more calls than the burst allows")
             + ", or raise rate_per_s/burst",
        tenant=tenant, capability=capability, limit="rate_per_s", left=math.floor(tokens),
        retry_after_s=wait)


def _shown(value: int | float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What :meth:`QuotaStore.reserve` admitted: the estimate, to settle or refund."""

    id: str
    tenant: str
    capability: str
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """Drawn in one window (settled plus outstanding). ``window`` is ``None`` for the
    lifetime counters (then ``start``/``end`` are ``None``)."""

    window: Window | None
    start: int | None
    end: int | None
    usage: Usage
    cost: float

    def used(self, metric: Metric) -> int | float:
        """The counter of ``metric``."""
        value: int | float = self.cost if metric == "cost" else getattr(self.usage, metric)
        return value


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """Limits in effect and usage of one scope (a tenant, or one capability of it), read
    at ``at`` (epoch seconds of the store's clock)."""

    tenant: str
    capability: str | None
    at: float
    limits: QuotaLimits
    windows: tuple[WindowUsage, ...]  # lifetime first, then WINDOWS in order

    def window(self, window: Window | None) -> WindowUsage:
        """The usage of ``window`` (``None``: lifetime)."""
        return next(w for w in self.windows if w.window == window)

    def rows(self) -> list[dict[str, Any]]:
        """One row per limit that is set: ``metric``, ``window`` (``"total"`` for lifetime),
        ``limit``, ``used``, ``left`` and ``resets_at`` (ISO 8601 UTC, or ``None``)."""
        out = []
        for w in self.windows:
            for metric in METRICS:
                cap = self.limits.cap(metric, w.window)
                if cap is None:
                    continue
                used = w.used(metric)
                out.append({"metric": metric, "window": w.window or "total", "limit": cap,
                            "used": used, "left": max(0, cap - used),
                            "resets_at": None if w.end is None else
                            datetime.fromtimestamp(w.end, UTC).isoformat()})
        return out


@runtime_checkable
class QuotaStore(Protocol):
    """Reservation-based budgets per tenant and capability (see ``docs/ports/quota.md``)."""

    features: frozenset[Feature]

    def set_limits(self, tenant: str, limits: QuotaLimits, *,
                   capability: str | None = None) -> None: ...

    async def reserve(self, tenant: str, capability: str, usage: Usage,
                      cost: float) -> Reservation:
        """Atomically admit the estimate or raise ``QuotaExceeded``."""
        ...

    async def settle(self, reservation: Reservation, usage: Usage, cost: float) -> None:
        """Replace the reserved estimate by the actual usage."""
        ...

    async def refund(self, reservation: Reservation) -> None: ...

    async def used(self, tenant: str, capability: str | None = None) -> tuple[Usage, float]:
        """What is drawn in total (settled plus outstanding reservations): ``(usage, cost)``."""
        ...

    async def status(self, tenant: str, capability: str | None = None) -> QuotaStatus:
        """The limits in effect and the usage of every window now."""
        ...

    async def reset(self, tenant: str, *, window: Window | None = None) -> None:
        """Forget the tenant's settled usage (every scope) in the current ``window``, or in
        every window and the lifetime counters; outstanding reservations stay counted."""
        ...

    async def aclose(self) -> None: ...
