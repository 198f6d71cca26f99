"""Policy decisions per second on the embedded Rego adapter (regopy), cold and cached.

* cold: ``await RegoPolicy.decide(path, input)`` every time (no cache), varying the input so
  nothing inside can memoise it;
* cached: what the PolicyStep does on a hit: build the policy input document, its cache key
  (bundle hash, policy path, canonical input; the same scheme as
  :class:`aios_mesh.pipeline.policy.PolicyStep`) and look it up in a warm
  :class:`aios_mesh.pipeline.policy.DecisionCache`.

Writes benchmarks/results/policy.json:
    {"embedded_cold_us" (median), "embedded_cached_us" (mean), "decisions_per_s",
     "cached_per_s", "cold_mean_us", "cold_p99_us", "decisions"}
(``decisions_per_s`` is the cold throughput: adapter evaluations per second, one at a time.)

Run: python benchmarks/policy.py [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from aios_mesh.pipeline.policy import DecisionCache
from aios_mesh.ports.policy import PolicyCheck, PolicyInput

RESULTS = Path(__file__).parent / "results"
POLICY = """package bench.invoices

default allow := false

allow if {
    input.tenant in {"acme", "globex", "initech"}
    input.cost_estimate < 1
    input.data_classification != "secret"
}

reason := "tenant not allowed or too expensive" if not allow

obligations := {"redact": ["email", "iban"], "require_human": input.cost_estimate > 0.5}
"""
PATH = "bench/invoices"
TENANTS = ("acme", "globex", "initech", "umbrella")


def _input(i: int) -> PolicyInput:
    return PolicyInput(tenant=TENANTS[i % len(TENANTS)], caller="svc-bench",
                       capability="extract-invoice-fields", capability_version="1",
                       cost_estimate=round((i % 97) / 100, 6), attributes={"n": i % 13})


def _key(bundle_hash: str, path: str, pin: PolicyInput) -> bytes:
    # the PolicyStep's key: bundle hash, policy path, canonical input document
    return b"\0".join((bundle_hash.encode(), path.encode(),
                       orjson.dumps(pin.to_document(), option=orjson.OPT_SORT_KEYS)))


async def _bench(seconds: float) -> dict[str, Any]:
    from aios_mesh_regopy import RegoPolicy

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "invoices.rego").write_text(POLICY)
        policy = RegoPolicy.from_path(folder)
    inputs = [_input(i) for i in range(997)]
    for pin in inputs[:200]:  # warm up
        await policy.decide(PATH, pin)

    # cold: every call evaluates
    cold: list[float] = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        pin = inputs[i % len(inputs)]
        t0 = time.perf_counter_ns()
        await policy.decide(PATH, pin)
        cold.append((time.perf_counter_ns() - t0) / 1000)
        i += 1

    # cached: key building + lookup in a warm cache (every input already decided once)
    cache = DecisionCache(size=4096, ttl_s=3600)
    for pin in inputs:
        cache.put(_key(policy.bundle_hash, PATH, pin), PolicyCheck(await policy.decide(PATH, pin)))
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            pin = inputs[n % len(inputs)]
            hit = cache.get(_key(policy.bundle_hash, PATH, pin))
            assert hit is not None
            n += 1
    cached_us = (time.perf_counter() - t0) / n * 1e6
    cold_us = statistics.median(cold)
    return {
        "embedded_cold_us": round(cold_us, 2),
        "embedded_cached_us": round(cached_us, 3),
        "decisions_per_s": round(len(cold) / seconds, 1),
        "cached_per_s": round(1e6 / cached_us, 1),
        "cold_mean_us": round(statistics.fmean(cold), 2),
        "cold_p99_us": round(sorted(cold)[int(len(cold) * 0.99)], 2),
        "decisions": len(cold) + n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="measuring time per mode (default 3)")
    args = parser.parse_args()
    result = asyncio.run(_bench(args.seconds))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "policy.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"{'mode':<10}{'µs/decision':>14}{'decisions/s':>14}")
    print(f"{'cold':<10}{result['embedded_cold_us']:>14.2f}{result['decisions_per_s']:>14,.0f}"
          "   (median; throughput)")
    print(f"{'cached':<10}{result['embedded_cached_us']:>14.3f}{result['cached_per_s']:>14,.0f}")
    print(f"cold mean {result['cold_mean_us']} µs, p99 {result['cold_p99_us']} µs; "
          f"written to {RESULTS / 'policy.json'}")


if __name__ == "__main__":
    main()
