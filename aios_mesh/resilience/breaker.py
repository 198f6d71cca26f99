"""Circuit breaker per backend: closed → open after N consecutive failures → half-open after
a cool-down, where one probe call decides between closed and open again."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

from aios_mesh.errors import CircuitOpen

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Thread-safe breaker. Call :meth:`acquire` before a backend call, then
    :meth:`record_success` or :meth:`record_failure`."""

    def __init__(self, name: str, *, failure_threshold: int = 5, reset_timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
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

    def acquire(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go through now."""
        with self._lock:
            self._maybe_half_open()
            if self._state is BreakerState.CLOSED:
                return
            if self._state is BreakerState.HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return
            wait = max(0.0, self.reset_timeout_s - (self._clock() - self._opened_at))
            raise CircuitOpen(f"circuit for {self.name} is open",
                              hint=f"the backend failed {self.failure_threshold} times in a row; "
                                   f"next probe in {wait:.1f}s", backend=self.name)

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probe_in_flight = False
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probe_in_flight = False
            if self._state is BreakerState.HALF_OPEN or \
                    self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                self._set(BreakerState.OPEN)
