"""What the pipeline adds per call when the backend keeps the CPU waiting.

A remote backend (BentoML, Triton) answers after a few milliseconds in which this process
sleeps in ``epoll``; on the virtual machines this project runs on, code that ran before the
wait runs up to ~10x slower right after it (caches went cold). The pipeline's Python per
call is ~70 µs warm (``overhead.py``) but several times that here, which is what the
mesh/raw ratios against real servers measure. This benchmark isolates it: an async backend
that idles ``wait`` ms (no server, no network), called through the mesh and directly,
interleaved call by call, for several waits.

    PYTHONPATH=.:adapters .venv/bin/python benchmarks/cold_path.py [--calls 2000]

Writes ``benchmarks/results/cold_path.json``: per wait, the direct and mesh p50 (µs), the
p50 the mesh adds, and mesh/direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _timing import interleaved, ratio_trials  # benchmarks/ is on sys.path
from batching import PAYLOAD, Echo, make_mesh  # the serving ratio's capability and config

from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Prediction, ServingBase

OUT = Path(__file__).parent / "results" / "cold_path.json"
WAITS_MS = (0.0, 1.0, 3.0)


class IdleBackend(ServingBase):
    """Answers after ``wait_s`` of idling on the event loop, like a remote server."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s

    async def infer_batch(self, model: ModelRef, payloads: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Prediction]:
        await asyncio.sleep(self.wait_s)
        return [Prediction({"text": p["text"].upper(), "n": 2 * p["n"], "confidence": 1.0})
                for p in payloads]


async def measure(wait_ms: float, calls: int, trials: int) -> dict[str, Any]:
    backend = IdleBackend(wait_ms / 1000.0)
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        mesh = await make_mesh(Path(tmp), backend, batched=False)
        model = ModelRef("echo-upper", "1")

        async def direct() -> Echo:  # what a caller of the backend does without the mesh
            answer = (await backend.infer_batch(model, [PAYLOAD]))[0]
            return Echo.model_validate(answer.output)

        async def via_mesh() -> Any:
            return await mesh.ainvoke("echo", PAYLOAD, tenant="acme")

        paths = {"raw": direct, "mesh": via_mesh}
        await interleaved(paths, 200)  # warm-up
        samples, ratios = await ratio_trials(paths, calls, trials)
        await mesh.aclose()
    raw, via = statistics.median(samples["raw"]), statistics.median(samples["mesh"])
    return {"direct_p50_us": round(raw, 1), "mesh_p50_us": round(via, 1),
            "added_p50_us": round(via - raw, 1), "mesh_over_direct_p50": round(via / raw, 3),
            "mesh_over_direct_p50_per_trial": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000,
                        help="calls per path and trial (interleaved)")
    parser.add_argument("--trials", type=int, default=3, help="trials per wait")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    for wait in WAITS_MS:
        result[f"backend idles {wait:g} ms"] = figures = asyncio.run(
            measure(wait, args.calls, args.trials))
        print(f"wait {wait:g} ms: mesh adds {figures['added_p50_us']} µs at p50 "
              f"(mesh/direct {figures['mesh_over_direct_p50']})", flush=True)
    result["setup"] = {
        "note": "same capability and configuration as the BentoML/Triton ratio benchmarks "
                "(audit JSONL, decision log, quota, no policy); the backend is an in-process "
                "coroutine that sleeps, so the difference is the pipeline alone",
    }
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "platform": platform.platform()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
