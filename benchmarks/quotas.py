"""Quota reservations per second, in-process and on Redis, plus over-admission under load.

* ``inprocess_per_s`` / ``redis_per_s``: reserve + settle pairs per second, one after the other
  from one asyncio task (Redis: a private ``redis-server`` on 127.0.0.1, no persistence, so
  one pair is two round trips of one Lua script each);
* ``redis_concurrent_per_s``: the same pairs from 64 tasks of one event loop;
* ``over_admitted``: 4 processes x 16 asyncio tasks reserve against one budget of N calls on
  Redis until refused; admitted - N, summed over the runs (must be 0).

Writes benchmarks/results/quotas.json:
    {"inprocess_per_s", "redis_per_s", "over_admitted", "redis_concurrent_per_s",
     "inprocess_p50_us", "redis_p50_us", "admission_runs"}

Run: python benchmarks/quotas.py [--seconds S]   (needs redis-server on PATH)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "adapters") not in sys.path:  # the adapters without an installed package
    sys.path[:0] = [str(ROOT), str(ROOT / "adapters")]

from aios_mesh.backends import load_adapter  # noqa: E402
from aios_mesh.ports.quota import QuotaLimits  # noqa: E402
from aios_mesh.ports.serving import Usage  # noqa: E402
from aios_mesh.testing.processes import free_port, start_process, wait_for_port  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PROCESSES, WORKERS = 4, 16

_WORKER = r"""
import asyncio, json, sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/adapters"]
import redis.asyncio as aioredis
from pathlib import Path
from aios_mesh.backends import parse_url
from aios_mesh.errors import QuotaExceeded
from aios_mesh.ports.serving import Usage
from aios_mesh_redis import RedisQuota

url, tenant, workers = sys.argv[2], sys.argv[3], int(sys.argv[4])

async def main():
    store = RedisQuota.from_url(parse_url(url + "?prefix=bench"), base_dir=Path("."))
    probe = aioredis.Redis.from_url(url)
    await store.used(tenant)
    await probe.rpush("ready:" + tenant, 1)
    await probe.blpop(["go:" + tenant], timeout=60)
    admitted = 0

    async def worker():
        nonlocal admitted
        denied = 0
        while denied < 3:
            try:
                await store.reserve(tenant, "cap", Usage(), 0.001)
                admitted += 1
                denied = 0
            except QuotaExceeded:
                denied += 1
                await asyncio.sleep(0.001)

    await asyncio.gather(*(worker() for _ in range(workers)))
    await probe.aclose()
    await store.aclose()
    print(json.dumps({"admitted": admitted}))

asyncio.run(main())
"""


async def _pairs(store: Any, seconds: float) -> tuple[float, float]:
    """Sequential reserve+settle pairs: (pairs per second, median µs per pair)."""
    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    store.set_limits(tenant, QuotaLimits(calls=10**12, cost=1e6))
    for _ in range(200):  # warm up (connections, scripts)
        r = await store.reserve(tenant, "cap", Usage(tokens=100), 0.001)
        await store.settle(r, Usage(tokens=80), 0.0008)
    lat: list[float] = []
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        s = time.perf_counter_ns()
        r = await store.reserve(tenant, "cap", Usage(tokens=100), 0.001)
        await store.settle(r, Usage(tokens=80), 0.0008)
        lat.append((time.perf_counter_ns() - s) / 1000)
    return len(lat) / (time.perf_counter() - t0), statistics.median(lat)


async def _concurrent(store: Any, seconds: float, tasks: int = 64) -> float:
    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    store.set_limits(tenant, QuotaLimits(calls=10**12, cost=1e6))
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            r = await store.reserve(tenant, "cap", Usage(tokens=100), 0.001)
            await store.settle(r, Usage(tokens=80), 0.0008)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return done / (time.perf_counter() - t0)


def _admission(url: str, budget: int) -> int:
    """4 processes x 16 tasks against ``budget`` calls on Redis: how many were admitted."""
    import redis

    tenant = f"adm-{budget}-{uuid.uuid4().hex[:6]}"
    store = load_adapter("quota", f"{url}?prefix=bench", base_dir=ROOT)
    store.set_limits(tenant, QuotaLimits(calls=budget))
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(ROOT), url, tenant,
                               str(WORKERS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(PROCESSES)]
    try:
        with redis.Redis.from_url(url, socket_timeout=90) as client:
            for _ in range(PROCESSES):
                if not client.blpop([f"ready:{tenant}"], timeout=60):
                    raise RuntimeError("a worker did not start")
            client.rpush(f"go:{tenant}", *([1] * PROCESSES))
        admitted = 0
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            if proc.returncode:
                raise RuntimeError(err.decode())
            admitted += json.loads(out.decode().strip().splitlines()[-1])["admitted"]
        return admitted
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def _measure(url: str, seconds: float) -> dict[str, Any]:
    inproc = load_adapter("quota", "memory://", base_dir=ROOT)
    on_redis = load_adapter("quota", f"{url}?prefix=bench", base_dir=ROOT)
    in_rate, in_p50 = await _pairs(inproc, seconds)
    redis_rate, redis_p50 = await _pairs(on_redis, seconds)
    concurrent = await _concurrent(on_redis, seconds)
    await inproc.aclose()
    await on_redis.aclose()
    return {"inprocess_per_s": round(in_rate, 1), "redis_per_s": round(redis_rate, 1),
            "redis_concurrent_per_s": round(concurrent, 1),
            "inprocess_p50_us": round(in_p50, 2), "redis_p50_us": round(redis_p50, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="measuring time per throughput mode (default 3)")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    with start_process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no"], ready=lambda: wait_for_port(port),
                       name="redis"):
        url = f"redis://127.0.0.1:{port}/0"
        result = asyncio.run(_measure(url, args.seconds))
        runs = []
        for budget in (100, 500, 1000):
            admitted = _admission(url, budget)
            runs.append({"budget": budget, "admitted": admitted,
                         "over_admitted": admitted - budget})
    result["over_admitted"] = sum(max(0, r["over_admitted"]) for r in runs)
    result["admission_runs"] = runs
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quotas.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"{'store':<22}{'pairs/s':>12}{'p50 µs/pair':>14}")
    print(f"{'in-process':<22}{result['inprocess_per_s']:>12,.0f}"
          f"{result['inprocess_p50_us']:>14.1f}")
    print(f"{'redis (1 task)':<22}{result['redis_per_s']:>12,.0f}{result['redis_p50_us']:>14.1f}")
    print(f"{'redis (64 tasks)':<22}{result['redis_concurrent_per_s']:>12,.0f}{'':>14}")
    for r in runs:
        print(f"{PROCESSES} processes x {WORKERS} tasks, budget {r['budget']}: admitted "
              f"{r['admitted']}, over-admitted {r['over_admitted']}")
    print(f"written to {RESULTS / 'quotas.json'}")


if __name__ == "__main__":
    main()
