"""What the policy step adds per call (µs), on the embedded Rego adapter (regopy).

Runs :meth:`PolicyStep.before <aios_mesh.pipeline.policy.PolicyStep.before>` on prepared
calls, one at a time, for:

* ``own_cached``: the capability's own policy, decision cache hit (the common case);
* ``default_and_own_cached``: ``[policy] default`` plus the own policy, both hits;
* ``default_and_own_cold``: the same with the cache off: two evaluations and two input
  schema validations per call (the worst case: every input new);
* ``schema_validation``: validating one input against the example's routing schema alone.

Writes benchmarks/results/policy_step.json (µs per call, medians over rounds, and the
machine). Run: python benchmarks/policy_step.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.config import PolicyConfig
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.policy import DecisionCache, PolicyStep, schema_errors

RESULTS = Path(__file__).parent / "results"
DEFAULT = """package mesh.default
import rego.v1
default allow := false
allow if { input.caller != ""; input.cost_estimate <= 0.05 }
"""
ROUTE = """package invoices.route
import rego.v1
default allow := false
allow if input.attributes.currency in {"USD", "EUR"}
small if { is_number(input.attributes.amount_usd); input.attributes.amount_usd <= 10000 }
obligations := {"require_human": true} if not small
"""
ROUTE_SCHEMA = {"type": "object", "required": ["attributes"], "properties": {"attributes": {
    "type": "object", "required": ["amount_usd", "currency", "vendor_confidence"],
    "properties": {"amount_usd": {"type": "number", "minimum": 0},
                   "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                   "vendor_confidence": {"type": "number", "minimum": 0, "maximum": 1}}}}}


class In(BaseModel):
    text: str


def _calls(spec: CapabilitySpec, n: int) -> list[Call]:
    return [Call(spec=spec, tenant="acme", caller="bench", raw=None, record_id=str(i),
                 attributes={"amount_usd": float(i % 50), "currency": "USD",
                             "vendor_confidence": 0.9}, payload={"text": "x"})
            for i in range(n)]


async def _per_call(step: PolicyStep, calls: list[Call], rounds: int) -> float:
    for call in calls:  # warm: fills the cache when it is on
        await step.before(call)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for call in calls:
            await step.before(call)
        samples.append((time.perf_counter() - t0) / len(calls) * 1e6)
    return statistics.median(samples)


async def _bench(n: int, rounds: int) -> dict[str, Any]:
    from aios_mesh_regopy import RegoPolicy

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "mesh").mkdir()
        (root / "invoices").mkdir()
        (root / "mesh/default.rego").write_text(DEFAULT)
        (root / "mesh/default.schema.json").write_text('{"type": "object"}')
        (root / "invoices/route.rego").write_text(ROUTE)
        (root / "invoices/route.schema.json").write_text(json.dumps(ROUTE_SCHEMA))
        policy = RegoPolicy.from_path(root)
    spec = CapabilitySpec(name="route-invoice", input=In, output=In, policy="invoices/route",
                          handler=lambda x: x)
    calls = _calls(spec, n)
    with_default = PolicyConfig(default="mesh/default")
    out = {
        "own_cached_us": await _per_call(
            PolicyStep(lambda: policy, DecisionCache(4 * n, 3600)), calls, rounds),
        "default_and_own_cached_us": await _per_call(
            PolicyStep(lambda: policy, DecisionCache(4 * n, 3600), with_default), calls,
            rounds),
        "default_and_own_cold_us": await _per_call(
            PolicyStep(lambda: policy, DecisionCache(0, 0), with_default), calls, rounds),
    }
    validator = policy.input_schemas.for_path("invoices/route")
    docs = [c.policy_input for c in calls]
    t0 = time.perf_counter()
    for _ in range(rounds):
        for doc in docs:
            assert not schema_errors(validator, doc)
    out["schema_validation_us"] = (time.perf_counter() - t0) / (rounds * len(docs)) * 1e6
    result: dict[str, Any] = {k: round(v, 2) for k, v in out.items()}
    result["calls"] = n * rounds
    result["machine"] = (f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} cores (shared with other work), "
                         f"Python {platform.python_version()}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=500, help="distinct calls (default 500)")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    result = asyncio.run(_bench(args.calls, args.rounds))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "policy_step.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    for key, value in result.items():
        print(f"{key:<28}{value}")


if __name__ == "__main__":
    main()
