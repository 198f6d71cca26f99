"""The concurrency proof of the Redis quota store: 4 processes x 16 asyncio workers against
one budget never admit more than the budget.

Phase ``calls``: a budget of N calls, every worker reserves until it is refused three times
in a row; nothing is released, so exactly N must be admitted (over-admission = admitted - N).

Phase ``settle``: a budget of N cost units, every reservation asks 1.0; each admitted call
is either refunded (the slot comes back) or settled at its full estimate (the slot is spent
for good). Exactly N calls must end up settled, ``used`` must show N, and a probe counter
(incremented after admission, decremented before release) must never exceed N.

Each of the three runs (different N) starts the 4 processes once and runs both phases.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PROCESSES = 4
WORKERS = 16
REPO = Path(__file__).resolve().parents[2]


# The worker runs with ``python -c`` (no pytest import: the machine may be busy and small).
_WORKER = r"""
import asyncio, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/adapters"]
import redis.asyncio as aioredis
from pathlib import Path
from aios_mesh.backends import parse_url
from aios_mesh.errors import QuotaExceeded
from aios_mesh.ports.serving import Usage
from aios_mesh_redis import RedisQuota

WORKERS = int(sys.argv[2])
url, run = sys.argv[3], sys.argv[4]

async def phase(store, probe, name, tenant):
    stats = {"admitted": 0, "settled": 0, "refunded": 0, "max_inflight": 0, "attempts": 0}
    await store.used(tenant)  # connected, scripts loaded
    await probe.rpush(f"ready:{run}:{name}", 1)
    await probe.blpop([f"go:{run}:{name}"], timeout=60)

    async def worker(i):
        denied_in_a_row, j = 0, 0
        while denied_in_a_row < 3:
            j += 1
            stats["attempts"] += 1
            try:
                r = await store.reserve(tenant, "cap", Usage(), 1.0 if name == "settle" else 0.0)
            except QuotaExceeded:
                denied_in_a_row += 1
                await asyncio.sleep(0.001)
                continue
            denied_in_a_row = 0
            stats["admitted"] += 1
            if name == "calls":
                continue
            inflight = await probe.incr(f"probe:{tenant}")
            stats["max_inflight"] = max(stats["max_inflight"], inflight)
            await asyncio.sleep(0)
            await probe.decr(f"probe:{tenant}")
            if (i + j) % 2:
                await store.refund(r)
                await store.refund(r)  # idempotent under load
                stats["refunded"] += 1
            else:
                await store.settle(r, Usage(), 1.0)
                await store.settle(r, Usage(), 1.0)  # idempotent under load
                stats["settled"] += 1

    await asyncio.gather(*(worker(i) for i in range(WORKERS)))
    return stats

async def main():
    store = RedisQuota.from_url(parse_url(url + "?prefix=proc"), base_dir=Path("."))
    probe = aioredis.Redis.from_url(url)
    out = {name: await phase(store, probe, name, f"{name}-{run}") for name in ("calls", "settle")}
    await probe.aclose()
    await store.aclose()
    print(json.dumps(out))

asyncio.run(main())
"""


def _run(url: str, budget: int) -> dict[str, dict[str, int]]:
    """Start the processes, release them together for each phase, sum their counts."""
    import redis
    from aios_mesh_redis import RedisQuota

    from aios_mesh.backends import parse_url
    from aios_mesh.ports.quota import QuotaLimits

    run = f"{budget}-{uuid.uuid4().hex[:6]}"
    setup = RedisQuota.from_url(parse_url(f"{url}?prefix=proc"), base_dir=Path("."))
    setup.set_limits(f"calls-{run}", QuotaLimits(calls=budget))
    setup.set_limits(f"settle-{run}", QuotaLimits(cost=float(budget)))
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(REPO), str(WORKERS), url, run],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(PROCESSES)]
    try:
        with redis.Redis.from_url(url, socket_timeout=90) as client:
            for name in ("calls", "settle"):
                for _ in range(PROCESSES):
                    assert client.blpop([f"ready:{run}:{name}"], timeout=60), (
                        "a worker did not get ready")
                client.rpush(f"go:{run}:{name}", *([1] * PROCESSES))
        total: dict[str, dict[str, int]] = {"calls": {}, "settle": {}}
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err.decode()
            for name, stats in json.loads(out.decode().strip().splitlines()[-1]).items():
                for k, v in stats.items():
                    mine = total[name]
                    mine[k] = max(mine.get(k, 0), v) if k == "max_inflight" else (
                        mine.get(k, 0) + v)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, (calls, cost) in asyncio.run(_used_and_close(setup, run)).items():
        total[name]["used_calls"], total[name]["used_cost"] = calls, round(cost)
    return total


async def _used_and_close(store: object, run: str) -> dict[str, tuple[int, float]]:
    from aios_mesh_redis import RedisQuota

    assert isinstance(store, RedisQuota)
    out = {}
    for name in ("calls", "settle"):
        usage, cost = await store.used(f"{name}-{run}")
        out[name] = (usage.calls, cost)
    await store.aclose()
    return out


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from aios_mesh_redis.testing import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield f"redis://{server.address}/0"


@pytest.mark.integration
@pytest.mark.parametrize("budget", [37, 150, 513])
def test_processes_never_over_admit(redis_url: str, budget: int) -> None:
    total = _run(redis_url, budget)
    calls, settle = total["calls"], total["settle"]
    over_calls = calls["admitted"] - budget
    over_settle = settle["settled"] - budget
    print(f"\nN={budget} calls: admitted={calls['admitted']} attempts={calls['attempts']} "
          f"over_admitted={over_calls}; settle/refund: admitted={settle['admitted']} "
          f"settled={settle['settled']} refunded={settle['refunded']} "
          f"max_inflight={settle['max_inflight']} over_admitted={over_settle}")
    assert over_calls == 0
    assert calls["used_calls"] == budget
    assert calls["attempts"] > budget  # the workers really competed
    assert over_settle == 0
    assert settle["max_inflight"] <= budget
    assert settle["admitted"] == settle["settled"] + settle["refunded"]
    assert settle["refunded"] > 0
    assert (settle["used_calls"], settle["used_cost"]) == (budget, budget)
