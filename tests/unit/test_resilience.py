from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_mesh.config import BreakerConfig
from aios_mesh.errors import CircuitOpen
from aios_mesh.resilience import BreakerBoard, BreakerState, Bulkhead, CircuitBreaker, RetryBudget


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


# ------------------------------------------------ bulkheads: a compartment per tenant

def board(clock: Clock, **config: Any) -> BreakerBoard:
    return BreakerBoard(BreakerConfig(**{"failure_threshold": 2, "reset_timeout_s": 5,
                                         **config}), clock=clock)


def fail(bulkhead: Bulkhead, times: int = 1) -> None:
    for _ in range(times):
        bulkhead.record_failure(bulkhead.acquire(), "BackendUnavailable")


def test_a_caller_error_in_the_probe_frees_the_probe() -> None:
    """Before: a probe that ended with the caller's own mistake held the half-open slot for
    ever, and the breaker refused every later call."""
    clock = Clock()
    breaker = CircuitBreaker("b", failure_threshold=1, reset_timeout_s=1, clock=clock)
    breaker.acquire()
    breaker.record_failure()
    clock.now = 1
    assert breaker.acquire() is True  # the probe
    breaker.release()  # it was rejected before reaching the backend
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.acquire() is True  # the next call probes
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_one_tenants_failures_open_only_its_compartment() -> None:
    clock = Clock()
    b = board(clock)
    acme, globex = b.bulkhead("triton", "clf", "acme"), b.bulkhead("triton", "clf", "globex")
    fail(acme, 2)
    assert acme.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen, match=r"triton/clf#acme is open .*last: BackendUnavailable"):
        acme.acquire()
    assert globex.state is BreakerState.CLOSED
    globex.acquire()
    globex.record_success()
    assert b.states() == {"triton/clf": "closed", "triton/clf#acme": "open",
                          "triton/clf#globex": "closed"}
    assert b.get("triton", "clf") is acme.shared and b.get("triton", "clf", "acme") is \
        acme.compartment
    clock.now = 5  # acme's compartment half-opens; its probe decides for acme alone
    assert acme.acquire() == (True, False)
    acme.record_success()
    assert acme.state is BreakerState.CLOSED


def test_compartments_of_enough_tenants_open_the_shared_breaker() -> None:
    clock = Clock()
    b = board(clock, min_failing_tenants=2)
    acme, globex, initech = (b.bulkhead("bentoml", "clf", t)
                             for t in ("acme", "globex", "initech"))
    fail(acme, 2)
    initech.acquire()
    initech.record_success()  # the backend answered someone: acme's trip was acme's alone
    fail(globex, 2)
    assert b.get("bentoml", "clf").state is BreakerState.CLOSED
    clock.now = 5  # acme half-opens, fails its probe: its second trip, still one tenant
    fail(acme)
    assert b.get("bentoml", "clf").state is BreakerState.OPEN  # globex and acme since success
    with pytest.raises(CircuitOpen, match="bentoml/clf is open after failures of 2 tenants"):
        initech.acquire()
    assert initech.state is BreakerState.OPEN


def test_a_shared_refusal_gives_the_compartments_probe_back() -> None:
    clock = Clock()
    b = board(clock, min_failing_tenants=1)
    acme = b.bulkhead("s", "m", "acme")
    fail(acme, 2)  # one tenant is enough here: both open
    assert b.states() == {"s/m": "open", "s/m#acme": "open"}
    clock.now = 5
    probes = acme.acquire()  # both half-open: this call is both probes
    assert probes == (True, True)
    acme.release(probes)  # a caller error: no evidence, both probe slots free again
    assert acme.acquire() == (True, True)
    fail_probe = (True, True)
    acme.record_failure(fail_probe, "BackendTimeout")
    assert acme.state is BreakerState.OPEN and b.get("s", "m").state is BreakerState.OPEN


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["acme", "globex", "initech"]), st.booleans()),
                max_size=60))
def test_a_tenant_that_never_fails_is_never_cut_off_by_one_other(
        calls: list[tuple[str, bool]]) -> None:
    """Whatever one failing tenant ("acme") does, the others keep reaching the backend."""
    b = board(Clock(), min_failing_tenants=2)
    for tenant, ok in calls:
        bulkhead = b.bulkhead("s", "m", tenant)
        try:
            probes = bulkhead.acquire()
        except CircuitOpen:
            assert tenant == "acme", f"{tenant} was cut off by acme's failures"
            continue
        if tenant == "acme" and not ok:
            bulkhead.record_failure(probes, "BackendUnavailable")
        else:
            bulkhead.record_success()
