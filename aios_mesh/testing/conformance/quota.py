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
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from aios_mesh.errors import InvalidInput, QuotaExceeded
from aios_mesh.ports.quota import QuotaLimits, QuotaStore, Reservation
from aios_mesh.ports.serving import Usage

__all__ = ["QuotaBasic", "QuotaConcurrency", "QuotaRateLimit", "QuotaThreadConcurrency"]


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
