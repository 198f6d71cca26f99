"""What the pipeline adds per call over calling a no-op backend directly.

Every step on (the ``sync``/``async``/``fsync`` modes): policy (embedded Rego via regopy, with
its decision cache), quota (in-process reservations), redaction (the capability is marked
external), audit (JSONL hash chain flushed to the OS before return), telemetry (structlog JSON
line to a file, OpenTelemetry SDK span and metrics), and the lineage/decision-event relay. The
baseline is the same no-op backend called directly in the same process and run.

Writes benchmarks/results/overhead.json:
    {"sync": {"p50_us", "p99_us", "calls_per_s"}, "async": {...},
     "fsync": {...}, "breakdown_us": {...}, "import_ms": ..}

Run: python benchmarks/overhead.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from pydantic import BaseModel

from aios_mesh import CapabilitySpec, Mesh, Price
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.ports.registry import ModelRef
from aios_mesh.telemetry import Telemetry

RESULTS = Path(__file__).parent / "results"
POLICY = """package bench.tickets

default allow := false

allow if {
    input.tenant in {"acme", "globex"}
    input.cost_estimate < 1
}

reason := "tenant not allowed" if not allow
"""


class Ticket(BaseModel):
    text: str
    priority: int = 1


class Triage(BaseModel):
    label: str
    confidence: float


NOOP_ANSWER = {"label": "billing", "confidence": 0.99}


def noop(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [NOOP_ANSWER for _ in batch]


class NullExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build(state: Path, *, policy: bool = True, quota: bool = True, redact: bool = True,
          telemetry: bool = True, signals: bool = True,
          durability: str = "flush") -> tuple[Mesh, ModelRef]:
    (state / "policies").mkdir(parents=True, exist_ok=True)
    (state / "policies" / "bench.rego").write_text(POLICY)
    tenants: dict[str, Any] = {"acme": {"quota": {"calls": 10**9, "cost": 10.0**9}}
                               if quota else {}}
    doc = {"state_dir": str(state), "tenants": tenants,
           "backends": {"audit": f"jsonl:///audit.jsonl?durability={durability}",
                        "registry": "memory://"},
           "telemetry": {"lineage": signals, "decision_events": signals}}
    if telemetry:
        tp = TracerProvider()
        tp.add_span_processor(BatchSpanProcessor(NullExporter()))
        tel = Telemetry(log=state / "decisions.log", tracer_provider=tp,
                        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    else:
        tel = Telemetry(log=None, enabled_otel=False)
    spec = CapabilitySpec(name="classify-ticket", input=Ticket, output=Triage,
                          model="noop@champion", policy="bench/tickets" if policy else None,
                          external=redact, price=Price(per_call=0.0001))
    mesh = Mesh(config_from_mapping(doc), capabilities=[spec], telemetry=tel)
    if not quota:
        from aios_mesh.embedded.quota import InProcessQuota

        mesh.ports.override("quota", InProcessQuota())
    ref = mesh.local_serving.register("noop", "1", noop)
    registry = mesh.port("registry")
    mesh.run_sync(registry.register("noop", ref.source))
    mesh.run_sync(registry.set_alias("noop", "champion", "1"))
    return mesh, ref


PAYLOADS = [{"text": f"Invoice {2291 + i} for ACME GmbH, please route to billing",
             "priority": 1 + i % 3} for i in range(1000)]  # distinct: real cache hit rates


def measure_sync(mesh: Mesh, calls: int) -> dict[str, float]:
    """Sync facade, interleaved call by call with the backend called directly on the same
    thread (the same kind of event-loop hop ``invoke`` makes)."""
    serving: InProcessServing = mesh.local_serving
    ref = ModelRef("noop", "1")
    loop = asyncio.new_event_loop()
    for i in range(300):  # warm caches, allocator and file buffers
        mesh.invoke("classify-ticket", PAYLOADS[i % len(PAYLOADS)], tenant="acme")
        loop.run_until_complete(serving.infer(ref, PAYLOADS[i % len(PAYLOADS)]))
    direct: list[float] = []
    samples: list[float] = []
    mesh_ns = 0
    for i in range(calls):
        payload = PAYLOADS[i % len(PAYLOADS)]
        t = time.perf_counter_ns()
        loop.run_until_complete(serving.infer(ref, payload))
        direct.append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        mesh.invoke("classify-ticket", payload, tenant="acme")
        samples.append(time.perf_counter_ns() - t)
        mesh_ns += samples[-1]
    t = time.perf_counter_ns()
    mesh.flush(60)  # deferred work (telemetry, lineage, events) counts against calls/s
    mesh_ns += time.perf_counter_ns() - t
    loop.close()
    return summarize(samples, direct, calls / (mesh_ns / 1e9))


def measure_async(mesh: Mesh, calls: int) -> dict[str, float]:
    """Async core, interleaved call by call with the backend awaited directly."""
    serving = mesh.local_serving
    ref = ModelRef("noop", "1")

    async def run() -> dict[str, float]:
        for i in range(300):
            await mesh.ainvoke("classify-ticket", PAYLOADS[i % len(PAYLOADS)], tenant="acme")
            await serving.infer(ref, PAYLOADS[i % len(PAYLOADS)])
        direct: list[float] = []
        samples: list[float] = []
        mesh_ns = 0
        for i in range(calls):
            payload = PAYLOADS[i % len(PAYLOADS)]
            t = time.perf_counter_ns()
            await serving.infer(ref, payload)
            direct.append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            await mesh.ainvoke("classify-ticket", payload, tenant="acme")
            samples.append(time.perf_counter_ns() - t)
            mesh_ns += samples[-1]
        t = time.perf_counter_ns()
        await asyncio.to_thread(mesh.flush, 60)
        mesh_ns += time.perf_counter_ns() - t
        return summarize(samples, direct, calls / (mesh_ns / 1e9))

    return asyncio.run(run())


def summarize(samples: list[float], direct: list[float], rate: float) -> dict[str, float]:
    """Added = each mesh call minus the direct call timed just before it (pairs, so a slow
    phase of the host slows both)."""
    added = [(s - d) / 1000.0 for s, d in zip(samples, direct, strict=True)]
    return {"p50_us": round(pct(added, 0.50), 1), "p99_us": round(pct(added, 0.99), 1),
            "calls_per_s": round(rate, 1),
            "baseline_p50_us": round(statistics.median(direct) / 1000.0, 2),
            "baseline_p99_us": round(pct(direct, 0.99) / 1000.0, 2)}


def p50_added(make: Callable[[Path], tuple[Mesh, ModelRef]], calls: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        mesh, _ = make(Path(d))
        with mesh:
            return measure_sync(mesh, calls)["p50_us"]


def import_ms() -> float:
    code = "import time; t=time.perf_counter(); import aios_mesh; print(time.perf_counter()-t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code], text=True))
            for _ in range(5)]
    return round(statistics.median(runs) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="measured calls per mode")
    args = parser.parse_args()
    n = args.calls
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        mesh, _ = build(Path(d))
        with mesh:
            out["sync"] = measure_sync(mesh, n)
    with tempfile.TemporaryDirectory() as d:
        mesh, _ = build(Path(d))
        out["async"] = measure_async(mesh, n)
        mesh.close()
    with tempfile.TemporaryDirectory() as d:
        mesh, _ = build(Path(d), durability="fsync")
        with mesh:
            out["fsync"] = measure_sync(mesh, max(500, n // 5))
    # Where the time goes: add one step at a time (sync, p50 added).
    off = dict(policy=False, quota=False, redact=False, telemetry=False, signals=False)
    steps = [
        ("validate+resolve+invoke+audit", off),
        ("+ policy (cached)", {**off, "policy": True}),
        ("+ quota", {**off, "policy": True, "quota": True}),
        ("+ redaction", {**off, "policy": True, "quota": True, "redact": True}),
        ("+ log line, span, metrics", {**off, "policy": True, "quota": True, "redact": True,
                                       "telemetry": True}),
        ("+ lineage/event relay (all on)", {}),
    ]
    out["breakdown_us"] = {label: p50_added(lambda p, kw=kw: build(p, **kw), max(1000, n // 3))
                           for label, kw in steps}
    out["import_ms"] = import_ms()
    out["machine"] = {"python": platform.python_version(), "cpus": _cpus(),
                      "platform": platform.platform()}
    out["targets"] = {"p50_us": 100, "p99_us": 1000}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overhead.json").write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    print(f"{'mode':<8} {'p50 added µs':>13} {'p99 added µs':>13} {'calls/s':>10}")
    for mode in ("sync", "async", "fsync"):
        r = out[mode]
        print(f"{mode:<8} {r['p50_us']:>13} {r['p99_us']:>13} {r['calls_per_s']:>10}")
    for label, value in out["breakdown_us"].items():
        print(f"  {label:<32} {value:>8} µs")
    print(f"import aios_mesh: {out['import_ms']} ms → {RESULTS / 'overhead.json'}")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
