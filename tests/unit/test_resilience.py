import pytest

from aios_mesh.errors import CircuitOpen
from aios_mesh.resilience import BreakerState, CircuitBreaker, RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_retry_budget_caps_retries_to_a_fraction_of_calls() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.1, min_per_s=0.0, window_s=10, clock=clock)
    for _ in range(100):
        budget.record_call()
    granted = sum(budget.try_spend() for _ in range(50))
    assert granted == 10
    clock.now = 11  # the window slides: old calls and retries expire
    assert budget.try_spend() is False
    for _ in range(10):
        budget.record_call()
    assert budget.try_spend() is True


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b", failure_threshold=3, reset_timeout_s=5, clock=clock)
    for _ in range(3):
        breaker.acquire()
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen, match="next probe"):
        breaker.acquire()
    clock.now = 5
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.acquire()  # the one probe
    with pytest.raises(CircuitOpen):
        breaker.acquire()  # no second probe while the first is out
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert (BreakerState.HALF_OPEN, BreakerState.CLOSED) in breaker.transitions


def test_failed_probe_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b", failure_threshold=1, reset_timeout_s=1, clock=clock)
    breaker.acquire()
    breaker.record_failure()
    clock.now = 1
    breaker.acquire()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
