"""Triton serving: the mesh's cost over a raw tritonclient call, and client-side throughput.

Starts a real tritonserver (PyTriton 0.7, the Triton environment; CPU only) serving the
conformance echo model, then in one process and on one event loop:

* p50 latency of ``mesh.ainvoke`` (full pipeline: validation, policy, quota, redaction,
  resolution, Triton gRPC call, output validation, decision record into the audit log)
  vs the raw ``tritonclient.grpc.aio`` call with the same payload (tensors built from the
  JSON document and decoded back, as any caller must) — interleaved call by call so load
  drift hits both alike; ``mesh_over_raw_p50`` is the ratio (target <= 1.10);
* the adapter alone (``TritonServing.infer``), to split the gap into adapter and pipeline;
* calls per second at 1, 8, 32 and 64 concurrent asyncio callers, via the mesh and raw.

    PYTHONPATH=.:adapters .venv/bin/python benchmarks/serving_triton.py [--calls 2000]

Writes ``benchmarks/results/serving_triton.json``.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from _timing import interleaved, pct, ratio_trials  # benchmarks/ is on sys.path
from aios_mesh_triton.testing import start_triton_server
from pydantic import BaseModel

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.ports.registry import ModelRef
from aios_mesh.testing.processes import free_port

OUT = Path(__file__).parent / "results" / "serving_triton.json"
PAYLOAD = {"text": "Invoice 4711 from ACME GmbH, total 1.234,56 EUR", "n": 21}
CONCURRENCY = (1, 8, 32, 64)


class EchoIn(BaseModel):
    text: str
    n: int


class EchoOut(BaseModel):
    text: str
    n: int
    confidence: float | None = None


async def _throughput(fn: Callable[[], Awaitable[Any]], callers: int, calls: int) -> float:
    per = max(1, calls // callers)

    async def worker() -> None:
        for _ in range(per):
            await fn()

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(callers)))
    return per * callers / (time.perf_counter() - t)


async def bench(grpc_port: int, state: Path, calls: int, trials: int = 3) -> dict[str, Any]:
    import tritonclient.grpc.aio as grpcclient

    registry = MemoryRegistry()
    ref = await registry.register("echo-upper", "triton:echo-upper")
    await registry.set_alias("echo-upper", "bench", ref.version)
    assert ref.version == "1"
    spec = CapabilitySpec(name="echo-upper", input=EchoIn, output=EchoOut,
                          model="echo-upper@bench")
    config = config_from_mapping({
        "state_dir": str(state), "lock_file": None, "tenants": {"acme": {}},
        "telemetry": {"lineage": False, "decision_events": False}}, base_dir=state)
    mesh = Mesh(config, capabilities=[spec],
                adapters={"serving": f"triton+grpc://127.0.0.1:{grpc_port}",
                          "registry": registry})
    raw_client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")

    async def via_mesh() -> Any:
        return await mesh.ainvoke("echo-upper", PAYLOAD, tenant="acme")

    async def raw() -> Any:
        text = grpcclient.InferInput("text", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[PAYLOAD["text"].encode()]], dtype=object))
        n = grpcclient.InferInput("n", [1, 1], "INT64")
        n.set_data_from_numpy(np.array([[PAYLOAD["n"]]], dtype=np.int64))
        result = await raw_client.infer("echo-upper", [text, n], model_version="1")
        return {"text": result.as_numpy("text")[0, 0].decode(),
                "n": int(result.as_numpy("n")[0, 0]),
                "confidence": float(result.as_numpy("confidence")[0, 0])}

    serving = mesh.port("serving")
    echo = ModelRef("echo-upper", "1")

    async def via_adapter() -> Any:
        return await serving.infer(echo, PAYLOAD)

    first = await via_mesh()
    assert first.output.text == PAYLOAD["text"].upper() and first.record.model["version"] == "1"
    assert (await raw())["n"] == 42
    paths = {"mesh": via_mesh, "raw": raw, "adapter": via_adapter}
    await interleaved(paths, 100)  # warm-up every path
    samples, ratios = await ratio_trials(paths, calls, trials)
    mesh_us, raw_us, adapter_us = samples["mesh"], samples["raw"], samples["adapter"]
    result: dict[str, Any] = {
        "latency": {
            "mesh_p50_us": round(statistics.median(mesh_us), 1),
            "mesh_p99_us": round(pct(mesh_us, 0.99), 1),
            "raw_p50_us": round(statistics.median(raw_us), 1),
            "raw_p99_us": round(pct(raw_us, 0.99), 1),
            "mesh_over_raw_p50": round(statistics.median(mesh_us) / statistics.median(raw_us),
                                       3),
            "mesh_minus_raw_p50_us": round(statistics.median(mesh_us)
                                           - statistics.median(raw_us), 1),
            "adapter_p50_us": round(statistics.median(adapter_us), 1),
            "adapter_over_raw_p50": round(statistics.median(adapter_us)
                                          / statistics.median(raw_us), 3),
            "calls_each": len(mesh_us),
            "mesh_over_raw_p50_per_trial": ratios,
        },
        "throughput_calls_per_s": {},
    }
    for callers in CONCURRENCY:
        n_calls = max(calls, callers * 8)
        result["throughput_calls_per_s"][str(callers)] = {
            "mesh": round(await _throughput(via_mesh, callers, n_calls), 1),
            "raw": round(await _throughput(raw, callers, n_calls), 1),
        }
    await mesh.aclose()
    await raw_client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000,
                        help="calls per path and trial for the latency ratio (interleaved)")
    parser.add_argument("--trials", type=int, default=3,
                        help="latency trials; the ratio is over all of them pooled")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        http_port, grpc_port = free_port(), free_port()
        with start_triton_server(http_port=http_port, grpc_port=grpc_port,
                                 pytriton_home=Path(tmp) / "pytriton", log_dir=tmp):
            result = asyncio.run(bench(grpc_port, Path(tmp) / "state", args.calls, args.trials))
    result["setup"] = {
        "server": "tritonserver 2.51 via nvidia-pytriton 0.7.0 (Python backend), 127.0.0.1",
        "model": "echo-upper v1 (conformance echo), max_batch_size 16, dynamic batching "
                 "(max_queue_delay 500 us)",
        "protocol": "gRPC (tritonclient.grpc.aio), one client per event loop",
        "payload": PAYLOAD,
        "hardware": "CPU only — no GPU in this environment; figures are CPU figures",
        "note": "mesh = full pipeline incl. audit record (JSONL) per call; raw = the same "
                "tritonclient call building tensors from the same JSON and decoding them; "
                "same server, same process, same event loop",
    }
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "platform": platform.platform(),
                         "load_avg_1m": round(os.getloadavg()[0], 2)}
    result["targets"] = {"mesh_over_raw_p50": 1.10}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
