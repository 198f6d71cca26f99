"""InProcessQuota: configuration, exact arithmetic, threads, token bucket, invariants."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_mesh.backends import parse_url
from aios_mesh.embedded.quota import InProcessQuota
from aios_mesh.errors import ConfigError, InvalidInput, QuotaExceeded
from aios_mesh.ports.quota import QuotaLimits, Reservation
from aios_mesh.ports.serving import Usage


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _from(url: str, **options: Any) -> InProcessQuota:
    return InProcessQuota.from_url(parse_url(url), base_dir=Path("."), **options)


def test_url_options_set_default_tenant_limits() -> None:
    q = _from("memory://?calls=2&cost=1.5")
    for tenant in ("a", "b"):
        q.reserve_sync(tenant, "cap", Usage(), 0.5)
        q.reserve_sync(tenant, "cap", Usage(), 0.5)
        with pytest.raises(QuotaExceeded):
            q.reserve_sync(tenant, "cap", Usage(), 0.0)


def test_keyword_options_win_over_the_url() -> None:
    q = _from("memory://?calls=1", calls=3)
    for _ in range(3):
        q.reserve_sync("a", "cap", Usage(), 0.0)
    with pytest.raises(QuotaExceeded):
        q.reserve_sync("a", "cap", Usage(), 0.0)


def test_own_limits_replace_the_default() -> None:
    q = _from("memory://?calls=1")
    q.set_limits("big", QuotaLimits(calls=5))
    for _ in range(5):
        q.reserve_sync("big", "cap", Usage(), 0.0)


def test_limits_mapping_per_tenant_and_capability() -> None:
    q = _from("memory://", limits={"acme": {"calls": 3},
                                    "acme/summarize": QuotaLimits(tokens=100)})
    q.reserve_sync("acme", "summarize", Usage(tokens=100), 0.0)
    with pytest.raises(QuotaExceeded, match="tokens"):
        q.reserve_sync("acme", "summarize", Usage(tokens=1), 0.0)
    q.reserve_sync("acme", "other", Usage(tokens=1000), 0.0)
    q.reserve_sync("acme", "other", Usage(tokens=1000), 0.0)
    with pytest.raises(QuotaExceeded, match="calls"):
        q.reserve_sync("acme", "other", Usage(), 0.0)


@pytest.mark.parametrize(("url", "options", "fragment"), [
    ("memory://?calls=lots", {}, "not a number"),
    ("memory://?cals=1", {}, "unknown option 'cals'"),
    ("memory://", {"budget": 3}, "unknown option 'budget'"),
    ("memory://?burst=3", {}, "without rate_per_s"),
    ("memory://?cost=-1", {}, "finite number >= 0"),
    ("memory://?rate_per_s=0", {}, "must be > 0"),
    ("memory://", {"limits": {"acme": {"call": 1}}}, "unknown quota limit 'call'"),
])
def test_config_errors_say_how_to_fix(url: str, options: dict[str, Any],
                                      fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        _from(url, **options)
    assert info.value.hint


def test_quota_exceeded_details() -> None:
    q = InProcessQuota()
    q.set_limits("acme", QuotaLimits(cost=1.0), capability="extract")
    q.reserve_sync("acme", "extract", Usage(), 0.75)
    with pytest.raises(QuotaExceeded) as info:
        q.reserve_sync("acme", "extract", Usage(), 0.5)
    err = info.value
    assert err.details == {"tenant": "acme", "capability": "extract", "limit": "cost",
                           "left": 0.25}
    assert "'acme'" in err.message
    assert "'extract'" in err.message
    assert "limit 1, left 0.25, this call asks 0.5" in err.message
    assert err.hint


def test_reserve_refund_has_no_float_drift() -> None:
    q = InProcessQuota()
    q.set_limits("a", QuotaLimits(cost=0.3))
    for _ in range(1000):
        r1 = q.reserve_sync("a", "c", Usage(gpu_seconds=0.1), 0.1)
        r2 = q.reserve_sync("a", "c", Usage(gpu_seconds=0.2), 0.2)  # exactly up to 0.3
        q.refund_sync(r1)
        q.settle_sync(r2, Usage(gpu_seconds=0.1), 0.1)
        q.settle_sync(r2, Usage(gpu_seconds=0.1), 0.1)
        assert q.used_sync("a")[1] == 0.1
        q.reset_sync("a")
    assert q.used_sync("a") == (Usage(calls=0), 0.0)
    q.set_limits("a", QuotaLimits(cost=1.0))
    for _ in range(10):  # ten times 0.1 is 1.0 here (as floats it is 0.9999999999999999)
        q.settle_sync(q.reserve_sync("a", "c", Usage(), 0.1), Usage(), 0.1)
    assert q.used_sync("a")[1] == 1.0
    with pytest.raises(QuotaExceeded):
        q.reserve_sync("a", "c", Usage(), 1e-9)


def test_invalid_usage_is_rejected() -> None:
    q = InProcessQuota()
    with pytest.raises(InvalidInput):
        q.reserve_sync("a", "c", Usage(tokens=-1), 0.0)
    with pytest.raises(InvalidInput):
        q.reserve_sync("a", "c", Usage(), float("nan"))
    r = q.reserve_sync("a", "c", Usage(), 0.0)
    with pytest.raises(InvalidInput):
        q.settle_sync(r, Usage(), float("inf"))
    assert q.outstanding == 1  # a refused settle keeps the reservation


def test_unknown_reservation_is_ignored() -> None:
    q = InProcessQuota()
    q.settle_sync(Reservation("nope", "a", "c"), Usage(), 1.0)
    q.refund_sync(Reservation("nope", "a", "c"))
    assert q.used_sync("a") == (Usage(calls=0), 0.0)


def test_reset_keeps_outstanding_reservations() -> None:
    q = InProcessQuota()
    done = q.reserve_sync("a", "c", Usage(tokens=5), 0.5)
    q.settle_sync(done, Usage(tokens=5), 0.5)
    open_ = q.reserve_sync("a", "c", Usage(tokens=3), 0.25)
    q.reserve_sync("b", "c", Usage(), 1.0)
    q.reset_sync("a")
    assert q.used_sync("a") == (Usage(calls=1, tokens=3), 0.25)
    assert q.used_sync("b")[1] == 1.0
    q.settle_sync(open_, Usage(tokens=1), 0.125)
    assert q.used_sync("a", "c") == (Usage(calls=1, tokens=1), 0.125)


def test_token_bucket_with_a_fake_clock() -> None:
    clock = FakeClock()
    q = InProcessQuota(clock=clock)
    q.set_limits("a", QuotaLimits(rate_per_s=2, burst=4))
    for _ in range(4):
        q.reserve_sync("a", "c", Usage(), 0.0)
    with pytest.raises(QuotaExceeded) as info:
        q.reserve_sync("a", "c", Usage(), 0.0)
    assert info.value.details["retry_after_s"] == pytest.approx(0.5)
    clock.now += 0.5
    q.reserve_sync("a", "c", Usage(), 0.0)
    with pytest.raises(QuotaExceeded):
        q.reserve_sync("a", "c", Usage(), 0.0)
    clock.now += 100  # refills up to the burst, not beyond
    for _ in range(4):
        q.reserve_sync("a", "c", Usage(), 0.0)
    with pytest.raises(QuotaExceeded):
        q.reserve_sync("a", "c", Usage(), 0.0)
    # a call asking more calls than the burst can never pass
    with pytest.raises(QuotaExceeded, match="more calls than the burst"):
        q.reserve_sync("a", "c", Usage(calls=9), 0.0)


def test_burst_defaults_to_the_rate() -> None:
    clock = FakeClock()
    q = InProcessQuota(clock=clock, default_limits=QuotaLimits(rate_per_s=3))
    for _ in range(3):
        q.reserve_sync("a", "c", Usage(), 0.0)
    with pytest.raises(QuotaExceeded):
        q.reserve_sync("a", "c", Usage(), 0.0)


def test_rate_denial_of_the_capability_takes_no_tenant_token() -> None:
    q = InProcessQuota(clock=FakeClock())
    q.set_limits("a", QuotaLimits(rate_per_s=1, burst=2))
    q.set_limits("a", QuotaLimits(rate_per_s=1, burst=1), capability="x")
    q.reserve_sync("a", "x", Usage(), 0.0)
    with pytest.raises(QuotaExceeded):
        q.reserve_sync("a", "x", Usage(), 0.0)
    q.reserve_sync("a", "y", Usage(), 0.0)  # the tenant bucket still has its second token
    with pytest.raises(QuotaExceeded):
        q.reserve_sync("a", "y", Usage(), 0.0)


def test_raw_threads_never_over_admit() -> None:
    q = InProcessQuota()
    q.set_limits("a", QuotaLimits(calls=1000, tokens=10_000))
    q.set_limits("a", QuotaLimits(cost=100.0), capability="c")
    admitted = [0] * 16
    start = threading.Barrier(16, timeout=30)

    def worker(i: int) -> None:
        start.wait()
        for j in range(200):
            try:
                r = q.reserve_sync("a", "c", Usage(tokens=10), 0.125)
            except QuotaExceeded:
                continue
            admitted[i] += 1
            if j % 2:
                q.settle_sync(r, Usage(tokens=10), 0.125)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(admitted) == 800  # the capability's cost limit binds: 100 / 0.125
    usage, cost = q.used_sync("a")
    assert (usage.calls, usage.tokens, cost) == (800, 8000, 100.0)


# -- invariants under random operation sequences --------------------------------------

_ops = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.sampled_from(["x", "y"]), st.integers(0, 3),
              st.integers(0, 50), st.integers(0, 8)),
    st.tuples(st.just("settle"), st.integers(0, 40), st.floats(0, 1.5), st.integers(0, 8)),
    st.tuples(st.just("refund"), st.integers(0, 40)),
), max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops=_ops, tenant_calls=st.integers(0, 10), tenant_cost=st.integers(0, 20),
       x_tokens=st.integers(0, 120))
def test_random_sequences_keep_the_books(ops: list[tuple[Any, ...]], tenant_calls: int,
                                         tenant_cost: int, x_tokens: int) -> None:
    """used() equals a reference ledger, is never negative, and never exceeds a limit
    while every settle is at most its estimate (a bigger actual is recorded as it was)."""
    q = InProcessQuota()
    limit_cost = tenant_cost / 8  # costs are eighths: exact in binary
    q.set_limits("t", QuotaLimits(calls=tenant_calls, cost=limit_cost))
    q.set_limits("t", QuotaLimits(tokens=x_tokens), capability="x")
    ledger: dict[str, tuple[str, int, int, int]] = {}  # open reservations: cap, calls, tok, $
    booked = {"x": [0, 0, 0], "y": [0, 0, 0]}  # calls, tokens, eighths of cost
    reservations: list[Reservation] = []
    overshot = False

    def total(key: str | None) -> list[int]:
        caps = [key] if key else ["x", "y"]
        return [sum(booked[c][i] for c in caps) for i in range(3)]

    for op in ops:
        if op[0] == "reserve":
            _, cap, calls, tokens, eighths = op
            t = total(None)
            fits = (t[0] + calls <= tenant_calls and t[2] + eighths <= tenant_cost
                    and (cap != "x" or booked["x"][1] + tokens <= x_tokens))
            try:
                r = q.reserve_sync("t", cap, Usage(calls=calls, tokens=tokens), eighths / 8)
            except QuotaExceeded:
                assert not fits
                continue
            assert fits
            reservations.append(r)
            ledger[r.id] = (cap, calls, tokens, eighths)
            for i, v in enumerate((calls, tokens, eighths)):
                booked[cap][i] += v
        elif reservations:
            r = reservations[op[1] % len(reservations)]
            held = ledger.pop(r.id, None)
            if op[0] == "settle":
                _, _, fraction, extra = op
                actual = (round(r.usage.calls * min(fraction, 1.0)),
                          round(r.usage.tokens * fraction), int(r.cost * 8 * fraction) + 0)
                if fraction > 1.0:
                    actual = (actual[0], actual[1], actual[2] + extra)
                q.settle_sync(r, Usage(calls=actual[0], tokens=actual[1]), actual[2] / 8)
                if held is not None:
                    cap = held[0]
                    for i in range(3):
                        booked[cap][i] += actual[i] - held[i + 1]
                    overshot |= actual[1] > held[2] or actual[2] > held[3]
            else:
                q.refund_sync(r)
                if held is not None:
                    cap = held[0]
                    for i in range(3):
                        booked[cap][i] -= held[i + 1]
        for key in (None, "x", "y"):
            usage, cost = q.used_sync("t", key)
            want = total(key)
            assert (usage.calls, usage.tokens, cost) == (want[0], want[1], want[2] / 8)
            assert min(usage.calls, usage.tokens, cost) >= 0
        if not overshot:
            usage, cost = q.used_sync("t")
            assert usage.calls <= tenant_calls
            assert cost <= limit_cost
            assert q.used_sync("t", "x")[0].tokens <= x_tokens
    assert q.outstanding == len(ledger)


# -- windows under random operation sequences -------------------------------------------

_window_ops = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 40)),
    st.tuples(st.just("settle"), st.integers(0, 30), st.integers(0, 40)),
    st.tuples(st.just("refund"), st.integers(0, 30)),
    st.tuples(st.just("wait"), st.floats(0, 90)),
), max_size=50)


@settings(max_examples=150, deadline=None)
@given(ops=_window_ops, limit=st.integers(0, 100), start=st.floats(0, 120))
def test_random_sequences_keep_the_minute_books(ops: list[tuple[Any, ...]], limit: int,
                                                start: float) -> None:
    """A reference ledger per minute: a call counts in the minute it was reserved in; its
    settle or refund changes that minute only; admission follows the current minute."""
    from aios_mesh.ports.quota import window_bounds

    clock = [1_800_000_000.0 + start]
    q = InProcessQuota(wall_clock=lambda: clock[0])
    q.set_limits("t", QuotaLimits(tokens_per_minute=limit))
    minutes: dict[int, int] = {}  # minute start -> tokens drawn in it
    open_: dict[str, tuple[int, int]] = {}  # reservation id -> (minute, tokens)
    reservations: list[Reservation] = []
    for op in ops:
        minute = window_bounds("minute", clock[0])[0]
        if op[0] == "wait":
            clock[0] += op[1]
        elif op[0] == "reserve":
            if minutes.get(minute, 0) + op[1] > limit:
                with pytest.raises(QuotaExceeded) as info:
                    q.reserve_sync("t", "c", Usage(tokens=op[1]), 0.0)
                resets = info.value.resets_at
                assert info.value.window == "minute"
                assert resets is not None and resets.timestamp() == minute + 60
                continue
            r = q.reserve_sync("t", "c", Usage(tokens=op[1]), 0.0)
            reservations.append(r)
            open_[r.id] = (minute, op[1])
            minutes[minute] = minutes.get(minute, 0) + op[1]
        elif reservations:
            r = reservations[op[1] % len(reservations)]
            held = open_.pop(r.id, None)
            actual = op[2] if op[0] == "settle" else 0
            if op[0] == "settle":
                q.settle_sync(r, Usage(tokens=actual), 0.0)
            else:
                q.refund_sync(r)
            if held is not None:
                minutes[held[0]] += actual - held[1]
        now_minute = window_bounds("minute", clock[0])[0]
        assert q.status_sync("t").window("minute").usage.tokens == minutes.get(now_minute, 0)
    assert q.used_sync("t")[0].tokens == sum(minutes.values())
