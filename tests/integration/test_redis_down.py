"""Backends going away mid-run: the quota store fails closed (or open, if asked) and the
audit log refuses appends with a typed error; nothing hangs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aios_mesh_redis.testing import redis_server as start_redis

from aios_mesh.backends import load_adapter
from aios_mesh.errors import BackendUnavailable, IntegrityError, QuotaExceeded
from aios_mesh.ports.quota import QuotaLimits
from aios_mesh.ports.serving import Usage
from aios_mesh.testing.processes import LocalProcess, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[LocalProcess, int]]:
    """A private redis-server this test may stop."""
    with start_redis(tmp_path) as server:
        yield server.process, server.port


def _restart(port: int, tmp_path: Path) -> Any:
    return start_redis(tmp_path, port=port)


async def test_redis_killed_mid_run_fails_closed(redis_server: tuple[LocalProcess, int],
                                                 tmp_path: Path) -> None:
    proc, port = redis_server
    store = load_adapter("quota", f"redis://127.0.0.1:{port}/0?timeout_s=1",
                         base_dir=tmp_path)
    store.set_limits("acme", QuotaLimits(calls=100))
    held = [await store.reserve("acme", "cap", Usage(), 0.0) for _ in range(5)]
    await store.settle(held[0], Usage(), 0.0)
    proc.kill()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await store.reserve("acme", "cap", Usage(), 0.0)
    assert info.value.retryable
    assert info.value.hint and "Redis" in info.value.hint
    with pytest.raises(BackendUnavailable):
        await store.settle(held[1], Usage(), 0.0)
    with pytest.raises(BackendUnavailable):
        await store.refund(held[2])
    with pytest.raises(BackendUnavailable):
        await store.used("acme")
    with pytest.raises(BackendUnavailable):
        await store.health()
    with pytest.raises(BackendUnavailable):
        store.set_limits("acme", QuotaLimits(calls=1))
    assert time.monotonic() - started < 10  # refused fast, no hang
    # a fresh (empty) server on the same port: the store reconnects by itself
    with _restart(port, tmp_path):
        await store.health()
        r = await store.reserve("acme", "cap", Usage(), 0.0)
        await store.settle(r, Usage(), 0.0)
        assert (await store.used("acme"))[0].calls == 1
    await store.aclose()


async def test_redis_killed_mid_run_fails_open_when_asked(
        redis_server: tuple[LocalProcess, int], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    proc, port = redis_server
    store = load_adapter("quota", f"redis://127.0.0.1:{port}/0?fail=open&timeout_s=1",
                         base_dir=tmp_path)
    store.set_limits("acme", QuotaLimits(calls=2))
    first = await store.reserve("acme", "cap", Usage(), 0.0)
    await store.reserve("acme", "cap", Usage(), 0.0)
    with pytest.raises(QuotaExceeded):  # limits still bind while Redis is up
        await store.reserve("acme", "cap", Usage(), 0.0)
    proc.kill()
    with caplog.at_level("WARNING", logger="aios_mesh_redis"):
        admitted = [await store.reserve("acme", "cap", Usage(), 0.0) for _ in range(5)]
    assert len({r.id for r in admitted}) == 5
    assert store.unrecorded == 5
    assert any("fail=open" in rec.getMessage() for rec in caplog.records)
    await store.settle(admitted[0], Usage(), 0.0)  # nothing recorded: nothing to settle
    await store.refund(admitted[1])
    await store.settle(first, Usage(), 0.0)  # logged, not raised
    with pytest.raises(BackendUnavailable):
        await store.used("acme")  # no answer is better than a wrong one
    await store.aclose()


async def test_postgres_unreachable_is_typed(tmp_path: Path) -> None:
    import psycopg  # noqa: F401  (the PostgreSQL adapter needs it)
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing?connect_timeout_s=2"
    log = load_adapter("audit", url, base_dir=tmp_path)
    started = time.monotonic()
    with pytest.raises(IntegrityError) as info:
        await log.append({"record_id": "r-1"})
    assert info.value.hint and "PostgreSQL" in info.value.hint
    assert isinstance(info.value.__cause__, Exception)
    with pytest.raises(BackendUnavailable):
        await log.read()
    with pytest.raises(BackendUnavailable):
        await log.verify()
    with pytest.raises(BackendUnavailable):
        await log.health()
    assert time.monotonic() - started < 10
    await log.aclose()
