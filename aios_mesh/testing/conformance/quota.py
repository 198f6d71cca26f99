"""Conformance suite of the quota port (:class:`aios_mesh.ports.quota.QuotaStore`).

Mixins expect a fixture ``adapter``: a fresh, empty quota store (no default limits) per
test::

    class TestRedisQuota(QuotaBasic, QuotaConcurrency, QuotaRateLimit):
        @pytest.fixture
        async def adapter(self, redis_url):
            store = RedisQuota.from_url(parse_url(redis_url), base_dir=Path("."))
            yield store
            await store.aclose()

Add :class:`QuotaThreadConcurrency` for stores that are safe to share between threads
(each thread runs its own event loop against the one store). Costs in these tests are
exact binary fractions (0.25, 0.5 ...), so a store may keep money as floats.

:class:`QuotaWindows` checks the calendar windows at their boundaries without sleeping: it
provides a fixture ``quota_clock`` (a :class:`ManualClock`, epoch seconds) that the
``adapter`` fixture must hand to the store as the clock of its windows::

    class TestRedisQuota(QuotaBasic, QuotaWindows, ...):
        @pytest.fixture
        async def adapter(self, redis_url, quota_clock):
            store = load_adapter("quota", redis_url, base_dir=Path("."),
                                 wall_clock=quota_clock)
            ...
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from aios_mesh.errors import InvalidInput, QuotaExceeded
from aios_mesh.ports.quota import QuotaLimits, QuotaStatus, QuotaStore, Reservation
from aios_mesh.ports.serving import Usage

__all__ = ["ManualClock", "QuotaBasic", "QuotaConcurrency", "QuotaRateLimit",
           "QuotaThreadConcurrency", "QuotaWindows"]


class ManualClock:
    """Epoch seconds that move only when a test says so (``set``/``advance``)."""

    def __init__(self, start: datetime = datetime(2028, 2, 28, 23, 59, 30, tzinfo=UTC)) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (an aware datetime)."""
        self.now = when.timestamp()

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.now += seconds


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
         microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def _admit(adapter: QuotaStore, tenant: str, capability: str = "cap",
                 usage: Usage | None = None, cost: float = 0.0) -> Reservation | None:
    try:
        return await adapter.reserve(tenant, capability, usage or Usage(), cost)
    except QuotaExceeded:
        return None


class QuotaBasic:
    """Limits admit and deny; settle and refund arithmetic; idempotency; capabilities."""

    async def test_is_a_quota_store(self, adapter: Any) -> None:
        assert isinstance(adapter, QuotaStore)
        assert isinstance(adapter.features, frozenset)

    async def test_unlimited_without_limits(self, adapter: Any) -> None:
        t = _tenant()
        for _ in range(50):
            await adapter.reserve(t, "cap", Usage(tokens=10), 0.5)
        usage, cost = await adapter.used(t)
        assert (usage.calls, usage.tokens, cost) == (50, 500, 25.0)

    async def test_calls_limit_admits_then_denies(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(calls=3))
        for _ in range(3):
            await adapter.reserve(t, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(), 0.0)
        text = str(info.value)
        assert t in text
        assert "calls" in text
        assert "left 0" in text

    async def test_cost_limit_exact_boundary(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(cost=1.0))
        await adapter.reserve(t, "cap", Usage(), 0.5)
        await adapter.reserve(t, "cap", Usage(), 0.25)
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(), 0.5)
        assert "cost" in str(info.value)
        assert "0.25" in str(info.value)  # what is left
        await adapter.reserve(t, "cap", Usage(), 0.25)  # exactly up to the limit
        assert (await adapter.used(t))[1] == 1.0

    async def test_tokens_and_gpu_seconds_limits(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(tokens=100, gpu_seconds=2.0))
        await adapter.reserve(t, "cap", Usage(tokens=60, gpu_seconds=1.5), 0.0)
        with pytest.raises(QuotaExceeded, match="tokens"):
            await adapter.reserve(t, "cap", Usage(tokens=60), 0.0)
        with pytest.raises(QuotaExceeded, match="gpu_seconds"):
            await adapter.reserve(t, "cap", Usage(gpu_seconds=1.0), 0.0)
        await adapter.reserve(t, "cap", Usage(tokens=40, gpu_seconds=0.5), 0.0)

    async def test_denied_reserve_draws_nothing(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(calls=10, cost=1.0))
        await adapter.reserve(t, "cap", Usage(), 0.75)
        before = await adapter.used(t)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(), 0.5)
        assert await adapter.used(t) == before
        assert await adapter.used(t, "cap") == before

    async def test_used_counts_outstanding_reservations(self, adapter: Any) -> None:
        t = _tenant()
        await adapter.reserve(t, "cap", Usage(tokens=7), 0.25)
        usage, cost = await adapter.used(t)
        assert (usage.calls, usage.tokens, cost) == (1, 7, 0.25)

    async def test_settle_replaces_estimate_by_actual(self, adapter: Any) -> None:
        t = _tenant()
        r = await adapter.reserve(t, "cap", Usage(tokens=100, gpu_seconds=1.0), 0.5)
        await adapter.settle(r, Usage(tokens=40, gpu_seconds=0.25), 0.125)
        usage, cost = await adapter.used(t)
        assert (usage.calls, usage.tokens, usage.gpu_seconds, cost) == (1, 40, 0.25, 0.125)
        assert await adapter.used(t, "cap") == (usage, cost)

    async def test_settle_frees_room_for_the_next_call(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(cost=1.0))
        r = await adapter.reserve(t, "cap", Usage(), 1.0)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(), 0.5)
        await adapter.settle(r, Usage(), 0.5)
        await adapter.reserve(t, "cap", Usage(), 0.5)

    async def test_refund_returns_the_estimate(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(calls=1))
        r = await adapter.reserve(t, "cap", Usage(tokens=5), 0.25)
        await adapter.refund(r)
        usage, cost = await adapter.used(t)
        assert (usage.calls, usage.tokens, usage.gpu_seconds, cost) == (0, 0, 0.0, 0.0)
        await adapter.reserve(t, "cap", Usage(), 0.0)  # the call's slot is back

    async def test_settle_is_idempotent(self, adapter: Any) -> None:
        t = _tenant()
        r = await adapter.reserve(t, "cap", Usage(tokens=10), 0.5)
        await adapter.settle(r, Usage(tokens=4), 0.25)
        await adapter.settle(r, Usage(tokens=4), 0.25)
        await adapter.settle(r, Usage(tokens=9), 0.5)
        await adapter.refund(r)
        usage, cost = await adapter.used(t)
        assert (usage.calls, usage.tokens, cost) == (1, 4, 0.25)

    async def test_refund_is_idempotent(self, adapter: Any) -> None:
        t = _tenant()
        keep = await adapter.reserve(t, "cap", Usage(tokens=3), 0.25)
        r = await adapter.reserve(t, "cap", Usage(tokens=10), 0.5)
        await adapter.refund(r)
        await adapter.refund(r)
        await adapter.settle(r, Usage(tokens=10), 0.5)
        usage, cost = await adapter.used(t)
        assert (usage.calls, usage.tokens, cost) == (1, 3, 0.25)
        assert keep.id != r.id

    async def test_reservation_carries_its_estimate(self, adapter: Any) -> None:
        t = _tenant()
        r = await adapter.reserve(t, "summarize", Usage(tokens=12), 0.25)
        assert (r.tenant, r.capability, r.usage.tokens, r.cost) == (t, "summarize", 12, 0.25)
        assert r.id

    async def test_per_capability_limits(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(calls=2), capability="a")
        await adapter.reserve(t, "a", Usage(), 0.0)
        await adapter.reserve(t, "a", Usage(), 0.0)
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "a", Usage(), 0.0)
        assert "'a'" in str(info.value)
        for _ in range(5):
            await adapter.reserve(t, "b", Usage(), 0.0)  # other capability: unlimited
        assert (await adapter.used(t))[0].calls == 7
        assert (await adapter.used(t, "a"))[0].calls == 2
        assert (await adapter.used(t, "b"))[0].calls == 5

    async def test_tenant_and_capability_limits_both_apply(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(calls=3))
        adapter.set_limits(t, QuotaLimits(calls=5), capability="a")
        admitted = [await _admit(adapter, t, "a") for _ in range(5)]
        assert sum(r is not None for r in admitted) == 3
        adapter.set_limits(t, QuotaLimits(calls=100))
        admitted = [await _admit(adapter, t, "a") for _ in range(5)]
        assert sum(r is not None for r in admitted) == 2  # now the capability's 5 bind

    async def test_tenants_are_isolated(self, adapter: Any) -> None:
        a, b = _tenant(), _tenant()
        adapter.set_limits(a, QuotaLimits(calls=1))
        await adapter.reserve(a, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(a, "cap", Usage(), 0.0)
        await adapter.reserve(b, "cap", Usage(), 0.0)
        assert (await adapter.used(b))[0].calls == 1

    async def test_negative_estimate_is_invalid(self, adapter: Any) -> None:
        with pytest.raises(InvalidInput):
            await adapter.reserve(_tenant(), "cap", Usage(), -1.0)


class QuotaConcurrency:
    """Many asyncio tasks against one budget: exactly the budget is admitted."""

    async def test_tasks_never_over_admit_calls(self, adapter: Any) -> None:
        t, budget = _tenant(), 40
        adapter.set_limits(t, QuotaLimits(calls=budget))

        async def worker() -> int:
            n = 0
            for _ in range(10):
                n += await _admit(adapter, t) is not None
                await asyncio.sleep(0)
            return n

        admitted = sum(await asyncio.gather(*(worker() for _ in range(20))))
        assert admitted == budget
        assert (await adapter.used(t))[0].calls == budget

    async def test_tasks_with_settle_and_refund_stay_within_cost(self, adapter: Any) -> None:
        t, budget = _tenant(), 4.0
        adapter.set_limits(t, QuotaLimits(cost=budget))
        settled: list[Reservation] = []

        async def worker(i: int) -> None:
            for j in range(10):
                r = await _admit(adapter, t, cost=0.5)
                if r is None:
                    await asyncio.sleep(0)
                    continue
                drawn = (await adapter.used(t))[1]
                assert drawn <= budget
                await asyncio.sleep(0)
                if (i + j) % 3 == 0:
                    await adapter.refund(r)
                elif len(settled) < 6:
                    settled.append(r)
                    await adapter.settle(r, Usage(), 0.25)
                    await adapter.settle(r, Usage(), 0.25)  # idempotent under load too
                else:
                    await adapter.refund(r)

        await asyncio.gather(*(worker(i) for i in range(16)))
        assert (await adapter.used(t))[1] == 0.25 * len(settled)
        assert (await adapter.used(t))[0].calls == len(settled)


class QuotaThreadConcurrency:
    """Many threads (each with its own event loop) against one budget."""

    async def test_threads_never_over_admit(self, adapter: Any) -> None:
        t, budget, threads, attempts = _tenant(), 150, 8, 50
        adapter.set_limits(t, QuotaLimits(calls=budget, cost=budget * 0.25))
        start = threading.Barrier(threads, timeout=30)

        def worker() -> int:
            async def run() -> int:
                n = 0
                for _ in range(attempts):
                    n += await _admit(adapter, t, cost=0.25) is not None
                return n
            start.wait()
            return asyncio.run(run())

        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            counts = await asyncio.wait_for(asyncio.gather(
                *(loop.run_in_executor(pool, worker) for _ in range(threads))), timeout=60)
        assert sum(counts) == budget
        usage, cost = await adapter.used(t)
        assert (usage.calls, cost) == (budget, budget * 0.25)


class QuotaRateLimit:
    """Token bucket on calls: ``burst`` at once, then ``rate_per_s``."""

    async def test_burst_then_denied(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(rate_per_s=0.001, burst=3))
        for _ in range(3):
            await adapter.reserve(t, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(), 0.0)
        assert "rate" in str(info.value)
        assert t in str(info.value)

    async def test_bucket_refills_over_time(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(rate_per_s=20, burst=1))
        await adapter.reserve(t, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(), 0.0)
        await asyncio.sleep(0.15)  # 3 tokens' worth, the bucket holds 1
        await adapter.reserve(t, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(), 0.0)

    async def test_denied_by_budget_takes_no_rate_token(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(cost=1.0, rate_per_s=0.001, burst=2))
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(), 2.0)
        await adapter.reserve(t, "cap", Usage(), 0.25)
        await adapter.reserve(t, "cap", Usage(), 0.25)
        with pytest.raises(QuotaExceeded, match="rate"):
            await adapter.reserve(t, "cap", Usage(), 0.25)

    async def test_rate_limit_per_capability(self, adapter: Any) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(rate_per_s=0.001, burst=1), capability="a")
        await adapter.reserve(t, "a", Usage(), 0.0)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "a", Usage(), 0.0)
        t0 = time.monotonic()
        for _ in range(5):
            await adapter.reserve(t, "b", Usage(), 0.0)
        assert time.monotonic() - t0 < 1.0


class QuotaWindows:
    """Budgets per calendar window in UTC: the boundaries, the error's reset time, settle
    and refund inside a window, per-capability windows, ``status`` and ``reset``."""

    @pytest.fixture
    def quota_clock(self) -> ManualClock:
        return ManualClock()

    async def test_minute_window_refuses_until_its_end(self, adapter: Any,
                                                       quota_clock: ManualClock) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(calls_per_minute=2))
        quota_clock.set(_utc(2028, 3, 1, 12, 0, 15))
        await adapter.reserve(t, "cap", Usage(), 0.0)
        await adapter.reserve(t, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(), 0.0)
        err = info.value
        assert (err.window, err.retry_after_s) == ("minute", 45.0)
        assert err.resets_at == _utc(2028, 3, 1, 12, 1)
        assert err.details["limit"] == "calls_per_minute"
        assert "minute" in err.message and "12:01:00" in err.message
        assert "retry in 45 s" in (err.hint or "")
        quota_clock.set(_utc(2028, 3, 1, 12, 0, 59, 999000))
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(), 0.0)
        assert info.value.retry_after_s == pytest.approx(0.001, abs=1e-6)
        quota_clock.set(_utc(2028, 3, 1, 12, 1))  # the end is the next window's start
        await adapter.reserve(t, "cap", Usage(), 0.0)
        await adapter.reserve(t, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(), 0.0)
        assert (await adapter.used(t))[0].calls == 4  # lifetime counts on

    async def test_month_window_follows_the_calendar(self, adapter: Any,
                                                     quota_clock: ManualClock) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(cost_per_month=1.0))
        quota_clock.set(_utc(2028, 2, 1))  # 2028 is a leap year: February has 29 days
        await adapter.reserve(t, "cap", Usage(), 1.0)
        quota_clock.set(_utc(2028, 2, 29, 23, 59, 59))
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(), 0.25)
        assert info.value.window == "month"
        assert info.value.resets_at == _utc(2028, 3, 1)
        assert info.value.retry_after_s == 1.0
        assert "cost_per_month" in str(info.value) and "left 0," in str(info.value)
        quota_clock.set(_utc(2028, 3, 1))
        await adapter.reserve(t, "cap", Usage(), 0.75)
        await adapter.reserve(t, "cap", Usage(), 0.25)  # exactly up to the limit
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(), 0.25)

    async def test_day_and_hour_windows(self, adapter: Any, quota_clock: ManualClock) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(tokens_per_day=100, calls_per_hour=3))
        quota_clock.set(_utc(2028, 3, 1, 22, 30))
        await adapter.reserve(t, "cap", Usage(tokens=60), 0.0)
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(tokens=60), 0.0)
        assert (info.value.window, info.value.details["limit"]) == ("day", "tokens_per_day")
        assert info.value.retry_after_s == 5400.0
        await adapter.reserve(t, "cap", Usage(tokens=40), 0.0)
        await adapter.reserve(t, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(), 0.0)
        assert info.value.window == "hour"
        quota_clock.set(_utc(2028, 3, 1, 23))  # a new hour, the same day
        await adapter.reserve(t, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded, match="tokens_per_day"):
            await adapter.reserve(t, "cap", Usage(tokens=1), 0.0)
        quota_clock.set(_utc(2028, 3, 2))
        await adapter.reserve(t, "cap", Usage(tokens=100), 0.0)

    async def test_the_longest_wait_is_reported(self, adapter: Any,
                                                quota_clock: ManualClock) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(calls_per_minute=1, calls_per_month=1))
        quota_clock.set(_utc(2028, 3, 31, 23, 0))
        await adapter.reserve(t, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(), 0.0)
        assert info.value.window == "month"  # waiting for the minute would not be enough
        assert info.value.retry_after_s == 3600.0
        adapter.set_limits(t, QuotaLimits(calls=1, calls_per_minute=1))
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(), 0.0)
        assert (info.value.window, info.value.retry_after_s) == (None, None)
        assert info.value.details["limit"] == "calls"

    async def test_a_call_bigger_than_the_window_cannot_wait(
            self, adapter: Any, quota_clock: ManualClock) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(tokens_per_minute=100))
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "cap", Usage(tokens=101), 0.0)
        assert info.value.window == "minute"
        assert info.value.retry_after_s is None
        assert "alone asks more" in (info.value.hint or "")

    async def test_settle_and_refund_inside_the_window(self, adapter: Any,
                                                       quota_clock: ManualClock) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(cost_per_hour=1.0))
        quota_clock.set(_utc(2028, 3, 1, 10, 5))
        r = await adapter.reserve(t, "cap", Usage(), 1.0)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(), 0.25)
        await adapter.settle(r, Usage(), 0.5)
        r2 = await adapter.reserve(t, "cap", Usage(), 0.5)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(), 0.25)
        await adapter.refund(r2)
        await adapter.reserve(t, "cap", Usage(), 0.5)
        status = await adapter.status(t)
        assert status.window("hour").cost == 1.0

    async def test_settle_after_the_window_ended_charges_only_the_lifetime(
            self, adapter: Any, quota_clock: ManualClock) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(tokens_per_minute=100))
        quota_clock.set(_utc(2028, 3, 1, 10, 5, 50))
        r = await adapter.reserve(t, "cap", Usage(tokens=100), 0.0)
        quota_clock.advance(20)  # the call ran across the minute boundary
        await adapter.settle(r, Usage(tokens=30), 0.0)
        await adapter.reserve(t, "cap", Usage(tokens=100), 0.0)  # the new minute is empty
        assert (await adapter.used(t))[0].tokens == 130
        r3 = await adapter.reserve(t, "other", Usage(), 0.0)
        quota_clock.advance(60)
        await adapter.refund(r3)  # a refund of an ended window changes no current window
        assert (await adapter.status(t)).window("minute").usage.calls == 0
        assert (await adapter.used(t))[0].calls == 2

    async def test_windows_per_capability(self, adapter: Any,
                                          quota_clock: ManualClock) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(calls_per_minute=1), capability="a")
        adapter.set_limits(t, QuotaLimits(calls_per_minute=3))
        await adapter.reserve(t, "a", Usage(), 0.0)
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "a", Usage(), 0.0)
        assert info.value.details["capability"] == "a"
        await adapter.reserve(t, "b", Usage(), 0.0)
        await adapter.reserve(t, "b", Usage(), 0.0)
        with pytest.raises(QuotaExceeded) as info:
            await adapter.reserve(t, "b", Usage(), 0.0)
        assert info.value.details["capability"] is None  # the tenant-wide minute is spent

    async def test_a_denied_window_draws_nothing(self, adapter: Any,
                                                 quota_clock: ManualClock) -> None:
        t = _tenant()
        adapter.set_limits(t, QuotaLimits(cost=10.0, cost_per_day=1.0))
        await adapter.reserve(t, "cap", Usage(tokens=3), 0.75)
        before = await adapter.status(t)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(tokens=3), 0.5)
        assert await adapter.status(t) == before

    async def test_tasks_never_over_admit_a_window(self, adapter: Any,
                                                   quota_clock: ManualClock) -> None:
        t, budget = _tenant(), 30
        adapter.set_limits(t, QuotaLimits(calls_per_hour=budget))

        async def worker() -> int:
            n = 0
            for _ in range(10):
                n += await _admit(adapter, t) is not None
                await asyncio.sleep(0)
            return n

        assert sum(await asyncio.gather(*(worker() for _ in range(8)))) == budget
        quota_clock.advance(3600)
        assert sum(await asyncio.gather(*(worker() for _ in range(8)))) == budget

    async def test_status_reports_limits_usage_and_window_bounds(
            self, adapter: Any, quota_clock: ManualClock) -> None:
        t = _tenant()
        limits = QuotaLimits(calls=100, calls_per_minute=10, cost_per_month=2.0)
        adapter.set_limits(t, limits)
        adapter.set_limits(t, QuotaLimits(tokens_per_day=50), capability="a")
        quota_clock.set(_utc(2028, 3, 15, 8, 30, 20))
        await adapter.reserve(t, "a", Usage(tokens=20), 0.5)
        status = await adapter.status(t)
        assert isinstance(status, QuotaStatus)
        assert (status.tenant, status.capability, status.limits) == (t, None, limits)
        assert status.at == quota_clock.now
        minute = status.window("minute")
        assert (minute.start, minute.end) == (_utc(2028, 3, 15, 8, 30).timestamp(),
                                              _utc(2028, 3, 15, 8, 31).timestamp())
        assert (minute.usage.calls, minute.usage.tokens, minute.cost) == (1, 20, 0.5)
        month = status.window("month")
        assert (month.start, month.end) == (_utc(2028, 3, 1).timestamp(),
                                            _utc(2028, 4, 1).timestamp())
        lifetime = status.window(None)
        assert (lifetime.start, lifetime.end, lifetime.usage.calls) == (None, None, 1)
        rows = {(r["metric"], r["window"]): r for r in status.rows()}
        assert set(rows) == {("calls", "total"), ("calls", "minute"), ("cost", "month")}
        assert rows[("cost", "month")] == {"metric": "cost", "window": "month", "limit": 2.0,
                                           "used": 0.5, "left": 1.5,
                                           "resets_at": "2028-04-01T00:00:00+00:00"}
        cap = await adapter.status(t, "a")
        assert cap.limits == QuotaLimits(tokens_per_day=50)
        assert cap.window("day").usage.tokens == 20
        quota_clock.advance(60)
        after = await adapter.status(t)
        assert after.window("minute").usage.calls == 0
        assert after.window("hour").usage.calls == 1
        empty = await adapter.status(_tenant())
        assert empty.limits == QuotaLimits()
        assert all(w.usage.calls == 0 and w.cost == 0.0 for w in empty.windows)

    async def test_reset_one_window_or_all(self, adapter: Any,
                                           quota_clock: ManualClock) -> None:
        t, other = _tenant(), _tenant()
        adapter.set_limits(t, QuotaLimits(calls_per_day=2, calls_per_month=3))
        done = await adapter.reserve(t, "cap", Usage(tokens=4), 0.25)
        await adapter.settle(done, Usage(tokens=4), 0.25)
        held = await adapter.reserve(t, "cap", Usage(tokens=2), 0.5)
        await adapter.reserve(other, "cap", Usage(), 1.0)
        with pytest.raises(QuotaExceeded):
            await adapter.reserve(t, "cap", Usage(), 0.0)
        await adapter.reset(t, window="day")
        status = await adapter.status(t)
        day = status.window("day")
        assert (day.usage.calls, day.usage.tokens, day.cost) == (1, 2, 0.5)  # the open one
        assert status.window("month").usage.calls == 2
        assert (await adapter.status(t, "cap")).window("day").usage.calls == 1
        extra = await adapter.reserve(t, "cap", Usage(), 0.0)  # the day has room again ...
        with pytest.raises(QuotaExceeded, match="calls_per_month"):
            await adapter.reserve(t, "cap", Usage(), 0.0)  # ... the month does not
        await adapter.reset(t)
        usage, cost = await adapter.used(t)
        assert (usage.calls, usage.tokens, cost) == (2, 2, 0.5)  # the open ones are left
        await adapter.refund(held)
        await adapter.refund(extra)
        assert all(w.usage.calls == 0 for w in (await adapter.status(t)).windows)
        assert (await adapter.used(other))[1] == 1.0  # other tenants keep theirs
