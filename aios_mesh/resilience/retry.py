"""Retry budget: retries may be at most ``ratio`` of calls (plus a small floor per second) in a
sliding window, so an outage makes calls fail fast instead of multiplying load
(the scheme Finagle and gRPC's retry throttling use)."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["RetryBudget", "backoff_delay"]


class RetryBudget:
    """Allows a retry while ``retries < min_per_s * window + ratio * calls`` in the window.

    >>> budget = RetryBudget(ratio=0.1, min_per_s=0, window_s=10)
    >>> for _ in range(20): budget.record_call()
    >>> budget.try_spend(), budget.try_spend(), budget.try_spend()
    (True, True, False)
    """

    def __init__(self, ratio: float = 0.2, min_per_s: float = 5.0, window_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.window_s = window_s
        self._clock = clock
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._calls and self._calls[0] < cutoff:
            self._calls.popleft()
        while self._retries and self._retries[0] < cutoff:
            self._retries.popleft()

    def record_call(self) -> None:
        now = self._clock()
        with self._lock:
            self._calls.append(now)
            if len(self._calls) > 4096:
                self._trim(now)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            allowed = self.min_per_s * self.window_s + self.ratio * len(self._calls)
            if len(self._retries) + 1 > allowed:
                return False
            self._retries.append(now)
            return True

    @property
    def retries_in_window(self) -> int:
        with self._lock:
            self._trim(self._clock())
            return len(self._retries)


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th retry (1-based)."""
    return random.uniform(0, min(max_s, base_s * (2 ** (attempt - 1))))
