"""The spine: invoke, stream and bulk are modes of one pipeline, with one record path.

A streamed call must be observed exactly like an invoked one (record, span, metrics, lineage,
decision event); a step of your own runs in every mode and, when it fails, unwinds and is
recorded like a built-in one; the admission stage and the recorder's processor chain are
public seams.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from aios_mesh import (
    SLO,
    Call,
    CallCancelled,
    CapabilitySpec,
    ConcurrencyLimit,
    Mesh,
    MeshError,
    Price,
    Recorded,
    StepBase,
    StepFailed,
)
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.recorder.relay import DECISION_TOPIC
from aios_mesh.telemetry import Telemetry
from aios_mesh.testing.conformance.lineage import OpenLineageSchemas
from tests.unit.fakes import StaticPolicy, StaticRegistry


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    label: str
    confidence: float = 1.0


def answer(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"label": "billing", "confidence": 0.9} for _ in batch]


def words(payload: dict[str, Any]) -> Any:
    return ({"token": w} for w in payload["text"].split())


SPEC = CapabilitySpec(name="classify-ticket", input=Ticket, output=Triage,
                      model="clf@champion", slo=SLO(timeout_s=2), price=Price(per_call=0.01))


class Observed:
    """A mesh on real embedded backends (JSONL audit, OpenLineage file transport, sqlite
    bus, in-process quota) with in-memory OpenTelemetry exporters."""

    def __init__(self, tmp_path: Path, **mesh_options: Any) -> None:
        self.state = tmp_path
        self.spans = InMemorySpanExporter()
        tracer = TracerProvider()
        tracer.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        telemetry = Telemetry(log=tmp_path / "decisions.log", tracer_provider=tracer,
                              meter_provider=MeterProvider(metric_readers=[self.metrics]))
        self.serving = InProcessServing()
        self.serving.register("clf", "3", answer, stream=words)
        doc = {"state_dir": str(tmp_path),
               "tenants": {"acme": {"quota": {"calls": 100, "cost": 100.0}}},
               "retry": {"backoff_s": 0.0}}
        extra = mesh_options.pop("capabilities", [])
        self.mesh = Mesh(config_from_mapping(doc), capabilities=[SPEC, *extra],
                         adapters={"serving": self.serving, "policy": StaticPolicy(),
                                   "registry": StaticRegistry({"clf@champion": "3"})},
                         telemetry=telemetry, **mesh_options)

    def audit(self) -> list[dict[str, Any]]:
        lines = (self.state / "audit.jsonl").read_text().splitlines()
        return [json.loads(line)["record"] for line in lines]

    def log_lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in
                (self.state / "decisions.log").read_bytes().splitlines()]

    def lineage_run_ids(self) -> list[str]:
        path = self.state / "lineage" / "events.jsonl"
        return [orjson.loads(line)["run"]["runId"] for line in path.read_bytes().splitlines()]

    async def decision_events(self) -> list[dict[str, Any]]:
        bus = self.mesh.ports.events
        sub = await bus.subscribe(DECISION_TOPIC, group="test")
        got = await sub.fetch(100, timeout=0.5)
        await sub.aclose()
        return [d.event.data for d in got]

    def metric_points(self) -> dict[str, float]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        out: dict[str, float] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count  # type: ignore[union-attr]
                        out[metric.name] = out.get(metric.name, 0) + value
        return out


async def drawn(obs: Observed) -> tuple[int, float]:
    usage, cost = await obs.mesh.ports.quota.used("acme")
    return usage.calls, cost


async def test_a_streamed_call_is_observed_exactly_like_an_invoked_one(tmp_path: Path) -> None:
    obs = Observed(tmp_path)
    mesh = obs.mesh
    invoked = await mesh.ainvoke("classify-ticket", {"text": "a b"}, tenant="acme")
    chunks = [c async for c in mesh.stream("classify-ticket", {"text": "a b"}, tenant="acme")]
    assert chunks == [{"token": "a"}, {"token": "b"}]
    assert await asyncio.to_thread(mesh.flush, 10.0)
    first, second = obs.audit()
    # the same record: every field but the ids, times, the mode and what only invoke has
    # (a validated answer: its hash and confidence)
    varying = {"record_id", "started_at", "ended_at", "latency_ms", "trace", "mode",
               "output_sha256", "confidence", "quota"}
    assert {k: v for k, v in first.items() if k not in varying} == \
        {k: v for k, v in second.items() if k not in varying}
    assert (first["mode"], second["mode"]) == ("invoke", "stream")
    assert second["outcome"] == "ok" and second["cost"] == first["cost"] == 0.01
    assert second["quota"] is not None  # quota was drawn and settled for the stream too
    ids = [first["record_id"], second["record_id"]]
    assert invoked.record.record_id == ids[0]
    # one span each, carrying the record id and outcome
    spans = {s.attributes["aios_mesh.record_id"]: s for s in obs.spans.get_finished_spans()}
    assert sorted(spans) == sorted(ids)
    assert {s.attributes["aios_mesh.outcome"] for s in spans.values()} == {"ok"}
    assert second["trace"]["trace_id"] is not None
    # metrics count both calls, one log line each
    assert obs.metric_points()["aios_mesh.calls"] == 2
    assert [line["record_id"] for line in obs.log_lines()] == ids
    # lineage (START + COMPLETE per call) and one decision event per call
    assert sorted(set(obs.lineage_run_ids())) == sorted(ids)
    assert [e["record_id"] for e in await obs.decision_events()] == ids
    await mesh.aclose()


class Tagging(StepBase):
    name = "tagging"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def before(self, call: Call) -> None:
        self.seen.append(call.mode)
        call.attributes["tagged"] = True


async def test_a_step_of_your_own_runs_in_every_mode(tmp_path: Path) -> None:
    obs = Observed(tmp_path)
    step = Tagging()
    obs.mesh.pipeline.add(step, before="policy")
    assert obs.mesh.pipeline.names.index("tagging") == 1
    await obs.mesh.ainvoke("classify-ticket", {"text": "a"}, tenant="acme")
    _ = [c async for c in obs.mesh.stream("classify-ticket", {"text": "a"}, tenant="acme")]
    await obs.mesh.ainvoke_many("classify-ticket", [{"text": "x"}], tenant="acme")
    assert step.seen == ["invoke", "stream", "bulk"]
    assert [r["mode"] for r in obs.audit()] == ["invoke", "stream", "bulk"]
    await obs.mesh.aclose()


class Exploding(StepBase):
    name = "exploding"

    async def before(self, call: Call) -> None:
        raise ValueError("secret-4111111111111111 must not reach the record")


async def run(mesh: Mesh, mode: str) -> None:
    if mode == "invoke":
        await mesh.ainvoke("classify-ticket", {"text": "a"}, tenant="acme")
    else:
        _ = [c async for c in mesh.stream("classify-ticket", {"text": "a"}, tenant="acme")]


@pytest.mark.parametrize("mode", ["invoke", "stream"])
async def test_a_failing_step_of_your_own_unwinds_and_is_recorded(tmp_path: Path,
                                                                   mode: str) -> None:
    obs = Observed(tmp_path)
    obs.mesh.pipeline.add(Exploding(), after="quota")
    with pytest.raises(StepFailed) as info:
        await run(obs.mesh, mode)
    assert isinstance(info.value.__cause__, ValueError)
    (record,) = obs.audit()
    assert record["outcome"] == "error" and record["mode"] == mode
    assert record["error"]["type"] == "StepFailed"
    assert "secret" not in json.dumps(record)
    # the quota reserved before the failing step was given back by the unwind
    assert await drawn(obs) == (0, 0.0)
    await obs.mesh.aclose()


async def test_a_consumer_that_leaves_early_ends_the_call_as_cancelled(tmp_path: Path) -> None:
    obs = Observed(tmp_path)
    stream = obs.mesh.stream("classify-ticket", {"text": "a b c d"}, tenant="acme", buffer=1)
    async for chunk in stream:
        assert chunk == {"token": "a"}
        break
    await stream.aclose()
    (record,) = obs.audit()
    assert record["outcome"] == "cancelled" and record["mode"] == "stream"
    assert record["error"]["type"] == CallCancelled.__name__
    assert await drawn(obs) == (0, 0.0)
    # OpenLineage says the run was aborted (not failed), and the event is valid
    assert await asyncio.to_thread(obs.mesh.flush, 10.0)
    events = [orjson.loads(line) for line in
              (tmp_path / "lineage" / "events.jsonl").read_bytes().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "ABORT"]
    OpenLineageSchemas().validate(events[1])
    await obs.mesh.aclose()


async def test_the_admission_stage_bounds_calls_in_flight(tmp_path: Path) -> None:
    limit = ConcurrencyLimit(2, per="tenant")
    peak = 0

    async def slow(payload: Ticket) -> Triage:
        nonlocal peak
        peak = max(peak, limit.in_flight("acme"))
        await asyncio.sleep(0.02)
        return Triage(label="slow")

    spec = CapabilitySpec(name="slow", input=Ticket, output=Triage, handler=slow)
    obs = Observed(tmp_path, admission=[limit], capabilities=[spec])
    assert "admission" in [s.name for s in obs.mesh.pipeline.plan(spec)]
    results = await obs.mesh.ainvoke_many("slow", [{"text": str(i)} for i in range(8)],
                                          tenant="acme", concurrency=8)
    assert len(results) == 8 and peak == 2
    assert limit.in_flight("acme") == 0  # every grant given back
    await obs.mesh.aclose()


def test_a_limit_of_zero_is_refused() -> None:
    with pytest.raises(MeshError, match="admits nothing"):
        ConcurrencyLimit(0)


class Collect:
    name = "collect"

    def __init__(self) -> None:
        self.items: list[Recorded] = []

    def process(self, item: Recorded) -> None:
        self.items.append(item)

    def flush(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        return None


async def test_a_record_processor_of_your_own_sees_every_record(tmp_path: Path) -> None:
    obs = Observed(tmp_path)
    mine = Collect()
    obs.mesh.recorder.add(mine, before="sinks")
    assert [p.name for p in obs.mesh.recorder.processors][-2:] == ["collect", "sinks"]
    await obs.mesh.ainvoke("classify-ticket", {"text": "a"}, tenant="acme")
    with pytest.raises(MeshError):
        await obs.mesh.ainvoke("no-such-thing", {}, tenant="acme")
    assert [i.record.outcome for i in mine.items] == ["ok", "rejected"]
    assert mine.items[0].doc == obs.audit()[0]
    assert obs.mesh.recorder.remove("collect") is mine
    await obs.mesh.aclose()


async def test_a_cancelled_call_is_recorded_and_stays_cancelled(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def forever(payload: Ticket) -> Triage:
        started.set()
        await asyncio.sleep(60)
        return Triage(label="never")

    spec = CapabilitySpec(name="forever", input=Ticket, output=Triage, handler=forever)
    obs = Observed(tmp_path, capabilities=[spec])
    task = asyncio.ensure_future(obs.mesh.ainvoke("forever", {"text": "a"}, tenant="acme"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = obs.audit()
    assert record["outcome"] == "cancelled"
    assert await drawn(obs) == (0, 0.0)
    await obs.mesh.aclose()
