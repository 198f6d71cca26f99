"""The Redis quota store passes the quota conformance suite against a real redis-server."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_mesh.backends import load_adapter
from aios_mesh.errors import ConfigError, QuotaExceeded
from aios_mesh.ports.quota import WINDOWS, QuotaLimits, window_bounds
from aios_mesh.ports.serving import Usage
from aios_mesh.testing.conformance.quota import (
    ManualClock,
    QuotaBasic,
    QuotaConcurrency,
    QuotaRateLimit,
    QuotaThreadConcurrency,
    QuotaWindows,
)
from aios_mesh.testing.processes import free_port, start_process, wait_for_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this module (no persistence), stopped afterwards."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not on PATH (apt-get install redis-server)"
    port = free_port()
    with start_process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no"], ready=lambda: wait_for_port(port),
                       name="redis", log_dir=tmp_path_factory.mktemp("redis")):
        yield f"redis://127.0.0.1:{port}/0"


class TestRedisQuota(QuotaBasic, QuotaConcurrency, QuotaThreadConcurrency, QuotaRateLimit,
                     QuotaWindows):
    @pytest.fixture
    async def adapter(self, redis_url: str, tmp_path: Path,
                      quota_clock: ManualClock) -> AsyncIterator[object]:
        from aios_mesh_redis import RedisQuota

        store = load_adapter("quota", f"{redis_url}?prefix=conf", base_dir=tmp_path,
                             wall_clock=quota_clock)
        assert isinstance(store, RedisQuota)
        yield store
        await store.aclose()


class TestRedisQuotaSpecifics:
    """What only a shared store has: TTL reclaim, limits seen by every instance, reloads."""

    @pytest.fixture
    async def make(self, redis_url: str, tmp_path: Path) -> AsyncIterator[Any]:
        stores: list[Any] = []

        def make(query: str = "") -> Any:
            store = load_adapter("quota", f"{redis_url}?prefix=spec{query}",
                                 base_dir=tmp_path)
            stores.append(store)
            return store

        yield make
        for store in stores:
            await store.aclose()

    async def test_expired_reservation_is_reclaimed_and_late_settle_charges(
            self, make: Any) -> None:
        store = make("&reservation_ttl_s=0.2")
        t = f"t-{uuid.uuid4().hex[:8]}"
        store.set_limits(t, QuotaLimits(calls=1))
        first = await store.reserve(t, "cap", Usage(), 0.0)  # the client "crashes" here
        with pytest.raises(QuotaExceeded):
            await store.reserve(t, "cap", Usage(), 0.0)
        await asyncio.sleep(0.3)
        second = await store.reserve(t, "cap", Usage(), 0.0)
        assert (await store.used(t))[0].calls == 1
        await store.settle(first, Usage(tokens=5), 0.25)  # late: charges the actual once
        await store.settle(first, Usage(tokens=5), 0.25)
        await store.refund(second)
        usage, cost = await store.used(t)
        assert (usage.calls, usage.tokens, cost) == (1, 5, 0.25)

    async def test_limits_live_in_redis_for_every_instance(self, make: Any) -> None:
        a, b = make(), make()
        t = f"t-{uuid.uuid4().hex[:8]}"
        a.set_limits(t, QuotaLimits(calls=2))
        await a.reserve(t, "cap", Usage(), 0.0)
        await b.reserve(t, "cap", Usage(), 0.0)
        with pytest.raises(QuotaExceeded):
            await b.reserve(t, "cap", Usage(), 0.0)
        assert (await b.used(t))[0].calls == 2

    async def test_default_limits_from_the_url(self, make: Any) -> None:
        store = make("&calls=2&cost=1")
        t = f"t-{uuid.uuid4().hex[:8]}"
        await store.reserve(t, "cap", Usage(), 0.5)
        with pytest.raises(QuotaExceeded, match="cost"):
            await store.reserve(t, "cap", Usage(), 0.75)
        await store.reserve(t, "cap", Usage(), 0.5)
        with pytest.raises(QuotaExceeded, match="calls"):
            await store.reserve(t, "cap", Usage(), 0.0)
        store.set_limits(t, QuotaLimits(calls=3))  # the tenant's own limits replace them
        await store.reserve(t, "cap", Usage(), 5.0)

    async def test_scripts_are_reloaded_after_a_flush(self, make: Any, redis_url: str) -> None:
        import redis

        store = make()
        t = f"t-{uuid.uuid4().hex[:8]}"
        await store.reserve(t, "cap", Usage(), 0.0)
        with redis.Redis.from_url(redis_url) as client:
            client.script_flush()
        await store.reserve(t, "cap", Usage(), 0.0)
        assert (await store.used(t))[0].calls == 2

    async def test_health_and_config_errors(self, make: Any, redis_url: str,
                                            tmp_path: Path) -> None:
        await make().health()
        with pytest.raises(ConfigError, match="fail"):
            load_adapter("quota", f"{redis_url}?fail=maybe", base_dir=tmp_path)
        with pytest.raises(ConfigError, match="unknown option"):
            load_adapter("quota", f"{redis_url}?prefx=x", base_dir=tmp_path)
        with pytest.raises(ConfigError, match="burst"):
            make().set_limits("t", QuotaLimits(burst=3))


@settings(max_examples=300, deadline=None)
@given(now=st.floats(min_value=0, max_value=7_258_118_400, allow_nan=False))  # to 2200
def test_the_scripts_windows_are_pythons(redis_url: str, now: float) -> None:
    """The Lua calendar arithmetic gives the same windows as ``window_bounds``."""
    import redis
    from aios_mesh_redis import _lua

    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        got = [int(v) for v in client.eval(_lua.WINDOWS_OF, 0, repr(now))]
    want = [window_bounds(w, now) for w in WINDOWS]
    assert got == [b[0] for b in want] + [b[1] for b in want]


async def test_windows_use_the_servers_clock_and_expire(redis_url: str,
                                                        tmp_path: Path) -> None:
    import redis

    store = load_adapter("quota", f"{redis_url}?prefix=srv&calls_per_hour=5",
                         base_dir=tmp_path)
    t = f"t-{uuid.uuid4().hex[:8]}"
    try:
        before = time.time()
        await store.reserve(t, "cap", Usage(tokens=2), 0.0)
        status = await store.status(t)
        after = time.time()
        assert before - 1 <= status.at <= after + 1  # the server's clock, not a fake one
        assert status.limits == QuotaLimits(calls_per_hour=5)  # the URL's default limits
        hour = status.window("hour")
        assert (hour.start, hour.end) == window_bounds("hour", status.at)
        assert hour.usage.calls == 1
        with redis.Redis.from_url(redis_url, decode_responses=True) as client:
            keys = sorted(client.scan_iter(f"srv:{{{t}}}:w:*"))
            assert [k.split(":")[-2] for k in keys] == ["day", "hour", "minute", "month"]
            for key in keys:
                kind = key.split(":")[-2]
                left_s = window_bounds(kind, status.at)[1] - status.at  # type: ignore[arg-type]
                assert 0 < client.pttl(key) / 1000 <= left_s + 61
    finally:
        await store.aclose()
