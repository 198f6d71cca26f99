"""Circuit breaker: closed → open after N consecutive failures → half-open after a cool-down,
where one probe call decides between closed and open again."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

from aios_mesh.errors import CircuitOpen

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.StrEnum):
    """Where a breaker stands; compares equal to its string (``state == "open"``)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Thread-safe breaker. Call :meth:`acquire` before a backend call, then exactly one of
    :meth:`record_success`, :meth:`record_failure` (the backend failed) or :meth:`release`
    (the call ended for another reason, e.g. the caller's own mistake: no evidence either way).

    Args:
        name: names the breaker in errors (``label/model``, plus ``#tenant`` for a tenant's
            compartment).
        failure_threshold: consecutive failures that open it.
        reset_timeout_s: how long it stays open before one probe is let through.
        min_sources: distinct failure sources (tenants) the consecutive failures must come
            from before it opens; 1 for a breaker that serves one source.
    """

    def __init__(self, name: str, *, failure_threshold: int = 5, reset_timeout_s: float = 10.0,
                 min_sources: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.min_sources = min_sources
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._sources: set[str] = set()
        self._last_error: str | None = None
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._lock = threading.Lock()
        self.transitions: list[tuple[BreakerState, BreakerState]] = []

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._maybe_half_open()
            return self._state

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self.transitions.append((self._state, state))
            self._state = state

    def _maybe_half_open(self) -> None:
        if self._state is BreakerState.OPEN and \
                self._clock() - self._opened_at >= self.reset_timeout_s:
            self._set(BreakerState.HALF_OPEN)
            self._probe_in_flight = False

    def acquire(self) -> bool:
        """Raise :class:`CircuitOpen` unless a call may go through now; True when the call
        is the half-open breaker's one probe."""
        with self._lock:
            self._maybe_half_open()
            if self._state is BreakerState.CLOSED:
                return False
            if self._state is BreakerState.HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            wait = max(0.0, self.reset_timeout_s - (self._clock() - self._opened_at))
            last = f" (last: {self._last_error})" if self._last_error else ""
            why = (f"failures of {self.min_sources} tenants" if self.min_sources > 1
                   else f"{self.failure_threshold} failures in a row")
            raise CircuitOpen(f"circuit for {self.name} is open after {why}{last}",
                              hint=f"the backend kept failing; next probe in {wait:.1f}s",
                              backend=self.name)

    def record_success(self) -> None:
        """The backend answered: close (a probe that succeeded) and forget the failures."""
        with self._lock:
            self._failures = 0
            self._sources.clear()
            self._probe_in_flight = False
            self._set(BreakerState.CLOSED)

    def record_failure(self, source: str = "", error: str | None = None) -> bool:
        """The backend failed a call made for ``source`` (a tenant) with ``error`` (the
        error's class name, kept for the next :class:`CircuitOpen` message). True when this
        failure opened the breaker."""
        with self._lock:
            self._failures += 1
            self._sources.add(source)
            self._last_error = error
            self._probe_in_flight = False
            if self._state is BreakerState.HALF_OPEN or (
                    self._failures >= self.failure_threshold
                    and len(self._sources) >= self.min_sources):
                opened = self._state is not BreakerState.OPEN
                self._opened_at = self._clock()
                self._set(BreakerState.OPEN)
                return opened
            return False

    def release(self) -> None:
        """The call that :meth:`acquire` let through says nothing about the backend (a caller
        error, another breaker refused it): the probe slot, if it held one, is free again."""
        with self._lock:
            self._probe_in_flight = False
