"""Redis quota store of aios-mesh (scheme ``redis://``): reservations shared by every process.

URL::

    redis://[user:password@]host:port/db?prefix=aios-mesh:quota&fail=closed
        &reservation_ttl_s=300&timeout_s=2&calls_per_minute=60&cost_per_month=25
        &rate_per_s=50&burst=100

Same contract as the embedded :class:`~aios_mesh.embedded.quota.InProcessQuota`: ``reserve``
admits the *estimate* atomically against the tenant-wide limits (the tenant's own, else the
default ones from the URL) and the ``(tenant, capability)`` limits, or raises
``QuotaExceeded``; ``settle`` replaces the estimate by the actual; ``refund`` gives it back;
both are idempotent; ``used`` is settled plus outstanding; ``status`` reports the limits and
every window; ``reset`` forgets settled usage. A token bucket on calls
(``rate_per_s``/``burst``) uses the Redis server's clock, so clients whose clocks disagree
share one bucket. The calendar windows (``calls_per_minute`` ... ``cost_per_month``, UTC)
use the server's clock too, unless ``wall_clock=`` (a callable returning epoch seconds,
e.g. a test's fake clock) is given; a window's counters expire a minute after it ends.

Each operation is one Lua script (``EVALSHA``; loaded once, reloaded if the server lost it),
so many processes and threads never over-admit. Limits set with :meth:`RedisQuota.set_limits`
live in Redis too, so every process sees them. Money and GPU-seconds are integer nano-units
(exact, never negative after a refund), exact up to 2**53 nano-units per counter.

Reservations expire after ``reservation_ttl_s`` (default 300): a crashed client's estimate
is given back on the next operation of that tenant. A settle that arrives after the expiry
(within ``late_settle_s``, default one day) still charges the actual usage.

When Redis cannot be reached, ``fail=closed`` (default) raises
:class:`~aios_mesh.errors.BackendUnavailable` from ``reserve``/``settle``/``refund``;
``fail=open`` admits the call without recording it and logs a warning (rate-limited): calls
made while Redis is down are not counted against any budget, so a long outage lets tenants
overspend. ``used`` and ``set_limits`` always raise when Redis is down.

Thread and loop safety: the async methods use ``redis.asyncio`` with one client per running
event loop (the mesh may call from several threads, each with its own loop); ``set_limits``
(sync in the port) uses a thread-safe sync client.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Self

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from aios_mesh.backends import BackendURL, redact_url
from aios_mesh.errors import BackendUnavailable, ConfigError, InvalidInput, QuotaExceeded
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
)
from aios_mesh.ports.serving import Usage

from . import _lua

__all__ = ["RedisQuota"]

log = logging.getLogger(__name__)

_NANO: Final = 1_000_000_000
_OPTIONS: Final = frozenset({"prefix", "fail", "reservation_ttl_s", "late_settle_s",
                             "timeout_s", "connect_timeout_s"})
_UNRECORDED: Final = "unrecorded-"
_DOWN_HINT: Final = ("start Redis or fix the quota URL (check with `aios-mesh doctor`); "
                     "fail=open admits calls while Redis is down, at the risk of overspending")


class _Script:
    """A Lua script run with ``EVALSHA``; loaded into the server once, again after a flush."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # Redis names scripts so

    async def __call__(self, client: aioredis.Redis, keys: Sequence[str],
                      args: Sequence[str | int]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


_RESERVE: Final = _Script("reserve", _lua.RESERVE)
_SETTLE: Final = _Script("settle", _lua.SETTLE)
_REFUND: Final = _Script("refund", _lua.REFUND)
_USED: Final = _Script("used", _lua.USED)
_STATUS: Final = _Script("status", _lua.STATUS)
_RESET: Final = _Script("reset", _lua.RESET)


def _num(value: float) -> str:
    return repr(float(value))


def _to_units(index: int, value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if index < 2 else str(round(value * _NANO))


def _from_units(index: int, text: str) -> int | float | None:
    if text == "":
        return None
    return int(text) if index < 2 else int(text) / _NANO


def _encode_limits(limits: QuotaLimits) -> str:
    """Validate ``limits`` and write them as the 22 fields the scripts read: lifetime
    ``calls,tokens,gpu_ns,cost_nano``, ``rate,burst``, then the four per window."""
    limits.check()
    rate, burst = limits.rate_per_s, limits.burst
    parts = [_to_units(i, limits.cap(m)) for i, m in enumerate(METRICS)]
    parts += ["" if rate is None else _num(rate), "" if burst is None else str(burst)]
    parts += [_to_units(i, limits.cap(m, w)) for w in WINDOWS for i, m in enumerate(METRICS)]
    return ",".join(parts)


def _decode_limits(text: str) -> QuotaLimits:
    """The inverse of :func:`_encode_limits` (fewer fields: written before windows)."""
    if not text:
        return QuotaLimits()
    parts = [*text.split(","), *[""] * 22][:22]
    found: dict[str, Any] = {}
    for i, m in enumerate(METRICS):
        found[m] = _from_units(i, parts[i])
        for j, w in enumerate(WINDOWS):
            found[f"{m}_per_{w}"] = _from_units(i, parts[6 + j * 4 + i])
    found["rate_per_s"] = float(parts[4]) if parts[4] else None
    found["burst"] = int(float(parts[5])) if parts[4] and parts[5] else None
    return QuotaLimits(**found)


def _units(usage: Usage, cost: float, what: str) -> tuple[str, str, str, str]:
    calls, tokens, gpu = usage.calls, usage.tokens, usage.gpu_seconds
    if calls < 0 or tokens < 0 or not 0 <= gpu < math.inf or not 0 <= cost < math.inf:
        raise InvalidInput(f"invalid {what}: {usage}, cost={cost!r}",
                           hint="calls, tokens, gpu_seconds and cost must be finite and >= 0")
    return (str(int(calls)), str(int(tokens)), str(round(gpu * _NANO)),
            str(round(cost * _NANO)))


def _human(index: int, units: int) -> int | float:
    return units if index < 2 else units / _NANO


def _usage(values: Sequence[Any]) -> tuple[Usage, float]:
    c, t, g, m = (int(_text(v)) for v in values)
    return Usage(calls=c, tokens=t, gpu_seconds=g / _NANO), m / _NANO


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(name: str, raw: Any, *, positive: bool = True) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"quota option {name}={raw!r} is not a number of seconds",
                          hint=f"write {name}=<seconds>") from exc
    if not (value > 0 if positive else value >= 0) or not math.isfinite(value):
        raise ConfigError(f"quota option {name}={raw!r} must be a finite number > 0",
                          hint=f"write e.g. {name}=300")
    return value


class RedisQuota:
    """Reservation-based quota store in Redis; see the module docstring for the contract.

    Args:
        url: the Redis server, ``redis://host:port/db`` (no aios-mesh options in it).
        prefix: prefix of every key (no ``{`` or ``}``).
        fail: ``"closed"`` (raise ``BackendUnavailable`` when Redis is down) or ``"open"``
            (admit unrecorded calls and log a warning).
        reservation_ttl_s: a reservation neither settled nor refunded after this long is
            given back (a crashed client's estimate is reclaimed).
        late_settle_s: how long after its expiry a settle still charges the actual.
        default_limits: tenant-wide limits for every tenant without its own.
        limits: ``{"tenant": QuotaLimits | dict, "tenant/capability": ...}`` written to
            Redis on construction.
        timeout_s / connect_timeout_s: socket timeouts of every Redis command.
        wall_clock: epoch seconds for the calendar windows; default: the server's clock.
    """

    features: ClassVar[frozenset[Feature]] = frozenset()

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *,
                 prefix: str = "aios-mesh:quota", fail: str = "closed",
                 reservation_ttl_s: float = 300.0, late_settle_s: float = 86400.0,
                 default_limits: QuotaLimits | None = None,
                 limits: Mapping[str, QuotaLimits | Mapping[str, Any]] | None = None,
                 timeout_s: float = 2.0, connect_timeout_s: float = 1.0,
                 wall_clock: Callable[[], float] | None = None) -> None:
        if fail not in ("closed", "open"):
            raise ConfigError(f"quota option fail={fail!r} is not closed or open",
                              hint="write fail=closed (raise when Redis is down) or fail=open "
                                   "(admit unrecorded calls)")
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigError(f"quota option prefix={prefix!r} must be non-empty, without "
                              "braces", hint="write e.g. prefix=aios-mesh:quota")
        self.url = url
        self._shown_url = redact_url(url)
        self.prefix = prefix
        self.fail_open = fail == "open"
        self.reservation_ttl_s = _seconds("reservation_ttl_s", reservation_ttl_s)
        self._ttl_ms = max(1, round(self.reservation_ttl_s * 1000))
        self._keep_ms = round(_seconds("late_settle_s", late_settle_s, positive=False) * 1000)
        self._timeout_s = _seconds("timeout_s", timeout_s)
        self._connect_timeout_s = _seconds("connect_timeout_s", connect_timeout_s)
        self._default = "" if default_limits is None else _encode_limits(default_limits)
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary())
        self._sync: redis.Redis | None = None
        self._closed = False
        self._last_warning = 0.0
        self.unrecorded = 0  # calls admitted by fail=open without Redis
        for key, value in (limits or {}).items():
            tenant, _, capability = key.partition("/")
            self.set_limits(tenant, QuotaLimits.from_mapping(value, repr(key)),
                            capability=capability or None)

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path | None = None,
                 **options: Any) -> Self:
        """Build from ``redis://host:port/db?prefix=&fail=&reservation_ttl_s=&...``.

        Query options and keywords (keywords win): ``prefix``, ``fail``,
        ``reservation_ttl_s``, ``late_settle_s``, ``timeout_s``, ``connect_timeout_s``, the
        default tenant-wide limits (every name of :class:`QuotaLimits`, e.g. ``calls``,
        ``cost_per_month``, ``rate_per_s``), and keywords ``limits=`` and ``wall_clock=``.
        """
        del base_dir  # nothing on disk
        limits = options.pop("limits", None)
        wall_clock = options.pop("wall_clock", None)
        url = url.with_options(options)
        url.check_options({*_OPTIONS, *LIMIT_FIELDS, "limits"}, what="redis:// quota")
        if not url.host and not url.path.strip("/"):
            raise ConfigError(f"{url.redacted()} names no Redis server",
                              hint="write redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0")
        server = url.without_options({*_OPTIONS, *LIMIT_FIELDS})
        limit_opts = {k: url.value(k) for k in LIMIT_FIELDS if url.value(k) is not None}
        default = QuotaLimits.from_mapping(limit_opts, url.redacted()) if limit_opts else None
        kwargs: dict[str, float] = {}
        for name in ("reservation_ttl_s", "late_settle_s", "timeout_s", "connect_timeout_s"):
            seconds = url.seconds_option(name)
            if seconds is not None:
                kwargs[name] = seconds
        return cls(server, prefix=url.option("prefix", "aios-mesh:quota") or "aios-mesh:quota",
                   fail=url.choice_option("fail", ("closed", "open"), "closed"),
                   default_limits=default, limits=limits, wall_clock=wall_clock, **kwargs)

    # -- clients -------------------------------------------------------------------------

    def _client(self) -> aioredis.Redis:
        """The async client of the running event loop (created on first use in that loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise BackendUnavailable(f"the quota store {self._shown_url} is closed",
                                         hint="use it before aclose(), or build a new one")
            client = self._clients.get(loop)
            if client is None:
                for old in [lp for lp in self._clients if lp.is_closed()]:
                    del self._clients[old]  # its loop is gone; the sockets close with it
                client = aioredis.Redis.from_url(
                    self.url, socket_timeout=self._timeout_s,
                    socket_connect_timeout=self._connect_timeout_s, decode_responses=True)
                self._clients[loop] = client
            return client

    def _sync_client(self) -> redis.Redis:
        with self._lock:
            if self._sync is None:
                self._sync = redis.Redis.from_url(
                    self.url, socket_timeout=self._timeout_s,
                    socket_connect_timeout=self._connect_timeout_s, decode_responses=True)
            return self._sync

    def _keys(self, tenant: str) -> list[str]:
        base = f"{self.prefix}:{{{tenant}}}:"
        return [base + "limits", base + "usage", base + "res", base + "exp", base + "buckets",
                base + "w:"]

    def _wall(self) -> str:
        """The windows' time for a script: this client's clock if one was given, else the
        server's (empty)."""
        return "" if self._wall_clock is None else repr(float(self._wall_clock()))

    def _down(self, what: str, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"Redis quota store {self._shown_url} is unavailable ({what}): "
            f"{type(exc).__name__}: {exc}", hint=_DOWN_HINT, url=self._shown_url)

    def _warn_open(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 5.0:
            self._last_warning = now
            log.warning("Redis quota store %s is unavailable (%s: %s); fail=open: %s is not "
                        "recorded (%d unrecorded so far)", self._shown_url,
                        type(exc).__name__, exc, what, self.unrecorded)

    async def _run(self, script: _Script, tenant: str, args: Sequence[str | int]) -> Any:
        try:
            return await script(self._client(), self._keys(tenant), args)
        except (RedisError, OSError) as exc:
            raise self._down(script.name, exc) from exc

    # -- configuration -------------------------------------------------------------------

    def set_limits(self, tenant: str, limits: QuotaLimits, *,
                   capability: str | None = None) -> None:
        """Set (replace) the limits of ``tenant`` or of one of its capabilities, in Redis.

        Counters are kept; the token bucket of that scope starts full. Raises
        ``BackendUnavailable`` when Redis is down (whatever ``fail`` says).
        """
        encoded = _encode_limits(limits)
        scope = "*" if capability is None else f"c|{capability}"
        keys = self._keys(tenant)
        try:
            pipe = self._sync_client().pipeline(transaction=True)
            pipe.hset(keys[0], scope, encoded)
            pipe.hdel(keys[4], "n" + scope, "w" + scope)
            pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._down("set_limits", exc) from exc

    # -- the port ------------------------------------------------------------------------

    async def reserve(self, tenant: str, capability: str, usage: Usage,
                      cost: float) -> Reservation:
        """Atomically admit the estimate against every applicable limit or raise
        ``QuotaExceeded``; nothing is drawn when any limit refuses."""
        est = _units(usage, cost, "quota estimate")
        rid = secrets.token_hex(12)
        try:
            answer = await self._run(_RESERVE, tenant, [
                capability, *est, rid, self._ttl_ms, self._keep_ms, self._default,
                self._wall()])
        except BackendUnavailable as exc:
            if not self.fail_open:
                raise
            self.unrecorded += 1
            self._warn_open(f"reserve for tenant {tenant!r}", exc.__cause__ or exc)
            return Reservation(_UNRECORDED + rid, tenant, capability, usage, cost)
        verdict = [_text(v) for v in answer]
        if verdict[0] != "ok":
            raise self._exceeded(tenant, capability, est, verdict)
        return Reservation(rid, tenant, capability, usage, cost)

    def _exceeded(self, tenant: str, capability: str, est: tuple[str, ...],
                  verdict: list[str]) -> QuotaExceeded:
        kind, scope = verdict[0], verdict[1]
        cap_name = None if scope == "*" else capability
        if kind == "limit":
            i, w = int(verdict[2]) - 1, int(verdict[5])
            return over_limit(tenant, cap_name, METRICS[i], WINDOWS[w - 1] if w else None,
                              cap=_human(i, int(verdict[3])), drawn=_human(i, int(verdict[4])),
                              asks=_human(i, int(est[i])), now=float(verdict[7]),
                              end=int(verdict[6]) if verdict[6] else None)
        return over_rate(tenant, cap_name, rate=float(verdict[3]), burst=float(verdict[4]),
                         tokens=float(verdict[2]), need=int(est[0]))

    async def _close(self, script: _Script, reservation: Reservation,
                     args: Sequence[str | int]) -> None:
        if reservation.id.startswith(_UNRECORDED):
            return  # admitted by fail=open while Redis was down: nothing to take back
        try:
            await self._run(script, reservation.tenant, args)
        except BackendUnavailable as exc:
            if not self.fail_open:
                raise
            self._warn_open(f"{script.name} of {reservation.id}", exc.__cause__ or exc)

    async def settle(self, reservation: Reservation, usage: Usage, cost: float) -> None:
        """Replace the reserved estimate by the actual usage (idempotent; a settle after
        the reservation expired charges the actual)."""
        actual = _units(usage, cost, "actual usage")
        await self._close(_SETTLE, reservation,
                          [reservation.id, *actual, self._keep_ms, self._wall()])

    async def refund(self, reservation: Reservation) -> None:
        """Give the reserved estimate back (idempotent). Rate tokens are not returned."""
        await self._close(_REFUND, reservation, [reservation.id, self._keep_ms, self._wall()])

    async def used(self, tenant: str, capability: str | None = None) -> tuple[Usage, float]:
        """Drawn in total (settled plus outstanding): tenant-wide, or of one capability."""
        scope = "*" if capability is None else f"c|{capability}"
        return _usage(await self._run(_USED, tenant, [scope, self._keep_ms, self._wall()]))

    async def status(self, tenant: str, capability: str | None = None) -> QuotaStatus:
        """The limits in effect and the usage of every window now (one atomic read)."""
        scope = "*" if capability is None else f"c|{capability}"
        out = [_text(v) for v in await self._run(
            _STATUS, tenant, [scope, self._keep_ms, self._wall(), self._default])]
        windows = []
        for w, name in enumerate((None, *WINDOWS)):
            start, end, *counters = out[2 + w * 6: 8 + w * 6]
            windows.append(WindowUsage(name, int(start) if start else None,
                                       int(end) if end else None, *_usage(counters)))
        return QuotaStatus(tenant, capability, float(out[1]), _decode_limits(out[0]),
                           tuple(windows))

    async def reset(self, tenant: str, *, window: Window | None = None) -> None:
        """Forget the tenant's settled usage (every scope) in the current ``window``, or in
        every window and the lifetime counters; outstanding reservations stay counted."""
        if window is not None and window not in WINDOWS:
            raise ConfigError(f"unknown quota window {window!r}",
                              hint=f"windows are: {', '.join(WINDOWS)} (or none for all)")
        which = 0 if window is None else WINDOWS.index(window) + 1
        await self._run(_RESET, tenant, [self._keep_ms, self._wall(), which])

    async def health(self) -> None:
        """PING the server; raise ``BackendUnavailable`` (with a hint) when it does not
        answer."""
        try:
            await self._client().ping()
        except (RedisError, OSError) as exc:
            raise self._down("ping", exc) from exc

    async def aclose(self) -> None:
        """Close the clients (the one of this loop is awaited; others are dropped)."""
        with self._lock:
            self._closed = True
            clients, self._clients = dict(self._clients), weakref.WeakKeyDictionary()
            sync, self._sync = self._sync, None
        loop = asyncio.get_running_loop()
        for owner, client in clients.items():
            if owner is loop:
                try:
                    await client.aclose()
                except (RedisError, OSError):
                    pass
        if sync is not None:
            sync.close()
