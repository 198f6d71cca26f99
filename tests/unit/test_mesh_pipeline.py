"""The pipeline's behaviour, step by step, on the embedded audit log and quota store with
scripted serving/policy fakes (core logic only; adapters are proven in conformance/)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from aios_mesh import (
    SLO,
    BackendUnavailable,
    CapabilitySpec,
    CircuitOpen,
    IntegrityError,
    InvalidInput,
    InvalidOutput,
    Mesh,
    PayloadTooLarge,
    PolicyDenied,
    Price,
    QuotaExceeded,
    UnknownCapability,
    UnknownTenant,
)
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.audit import JsonlAuditLog, verify_file
from aios_mesh.ports.policy import Obligations
from aios_mesh.telemetry import Telemetry
from tests.unit.fakes import ScriptedServing, StaticPolicy, StaticRegistry


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    label: str
    confidence: float = 1.0


def rules_fallback(payload: Ticket) -> Triage:
    return Triage(label="rules", confidence=1.0)


def spec(**kw: Any) -> CapabilitySpec:
    base: dict[str, Any] = {"name": "classify-ticket", "input": Ticket, "output": Triage,
                            "model": "clf@champion", "slo": SLO(timeout_s=1)}
    base.update(kw)
    return CapabilitySpec(**base)


def make_mesh(tmp_path: Path, serving: Any, *, caps: list[CapabilitySpec] | None = None,
              policy: Any = None, config: dict[str, Any] | None = None,
              telemetry: Telemetry | None = None) -> Mesh:
    doc: dict[str, Any] = {"state_dir": str(tmp_path), "tenants": {"acme": {}, "globex": {}},
                           "retry": {"backoff_s": 0.0}, **(config or {})}
    adapters: dict[str, Any] = {"serving": serving,
                                "registry": StaticRegistry({"clf@champion": "3",
                                                            "clf@previous": "2"}),
                                "policy": policy or StaticPolicy()}
    return Mesh(config_from_mapping(doc), capabilities=caps or [spec()], adapters=adapters,
                telemetry=telemetry)


def records(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line)["record"] for line in lines]


def test_happy_path_returns_typed_output_and_one_record(tmp_path: Path) -> None:
    with make_mesh(tmp_path, ScriptedServing({"label": "billing", "confidence": 0.97})) as mesh:
        result = mesh.invoke("classify-ticket", {"text": "invoice"}, tenant="acme",
                             caller="svc")
    assert result.output == Triage(label="billing", confidence=0.97)
    assert result.record.outcome == "ok"
    assert result.record.model == {"name": "clf", "version": "3", "alias": "champion",
                                   "source": "models:/clf", "run_id": None}
    [rec] = records(tmp_path)
    assert rec["record_id"] == result.record.record_id
    assert rec["caller"] == "svc" and rec["attempts"] == 1
    assert verify_file(tmp_path / "audit.jsonl").ok


@pytest.mark.parametrize(("payload", "error"), [
    ("{not json", InvalidInput),
    ('["a list"]', InvalidInput),
    ({"txt": "wrong field"}, InvalidInput),
    ({"text": "x" * 5000}, PayloadTooLarge),
    (b"x" * 5000, PayloadTooLarge),
])
def test_bad_input_is_typed_and_still_recorded(tmp_path: Path, payload: Any,
                                               error: type[Exception]) -> None:
    serving = ScriptedServing()
    with make_mesh(tmp_path, serving, config={"max_payload_bytes": 1024}) as mesh, \
            pytest.raises(error) as info:
        mesh.invoke("classify-ticket", payload, tenant="acme")
    assert info.value.hint  # every error says what to do
    assert serving.calls == 0
    [rec] = records(tmp_path)
    assert rec["outcome"] == "rejected"
    assert rec["error"]["type"] == error.__name__
    assert rec["input_sha256"] is None  # nothing of the bad payload is kept


def test_unknown_capability_and_tenant(tmp_path: Path) -> None:
    with make_mesh(tmp_path, ScriptedServing()) as mesh:
        with pytest.raises(UnknownCapability, match="did you mean 'classify-ticket'"):
            mesh.invoke("classify-tickets", {"text": "x"}, tenant="acme")
        with pytest.raises(UnknownTenant):
            mesh.invoke("classify-ticket", {"text": "x"}, tenant="initech")
    assert [r["outcome"] for r in records(tmp_path)] == ["rejected", "rejected"]


def test_policy_deny_and_decision_cache(tmp_path: Path) -> None:
    policy = StaticPolicy(deny={"globex"})
    serving = ScriptedServing()
    with make_mesh(tmp_path, serving, caps=[spec(policy="mesh/tickets")],
                   policy=policy) as mesh:
        with pytest.raises(PolicyDenied) as info:
            mesh.invoke("classify-ticket", {"text": "x"}, tenant="globex")
        assert info.value.reason == "tenant globex is blocked"
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
    assert policy.calls == 2  # the second acme call was a cache hit
    denied, first, second = records(tmp_path)
    assert denied["outcome"] == "denied" and denied["policy"]["allow"] is False
    assert first["policy"]["cached"] is False and second["policy"]["cached"] is True
    assert first["policy"]["input"]["tenant"] == "acme"
    assert serving.calls == 2


def test_redaction_before_external_backend(tmp_path: Path) -> None:
    serving = ScriptedServing({"label": "x"})
    with make_mesh(tmp_path, serving, caps=[spec(external=True)]) as mesh:
        result = mesh.invoke("classify-ticket",
                             {"text": "from jane@example.com card 4111 1111 1111 1111"},
                             tenant="acme")
    assert serving.received == [{"text": "from [EMAIL] card [CARD]"}]
    assert result.record.redaction == {"applied": True, "counts": {"email": 1, "card": 1}}
    assert "jane@example.com" not in (tmp_path / "audit.jsonl").read_text()


def test_policy_obligation_redacts_only_named_kinds(tmp_path: Path) -> None:
    serving = ScriptedServing({"label": "x"})
    policy = StaticPolicy(obligations={"acme": Obligations(redact=("email",))})
    with make_mesh(tmp_path, serving, caps=[spec(policy="p")], policy=policy) as mesh:
        mesh.invoke("classify-ticket", {"text": "jane@example.com 4111 1111 1111 1111"},
                    tenant="acme")
    assert serving.received == [{"text": "[EMAIL] 4111 1111 1111 1111"}]


def test_retries_recover_a_flaky_backend(tmp_path: Path) -> None:
    serving = ScriptedServing(BackendUnavailable("blip"), BackendUnavailable("blip"),
                              {"label": "ok"})
    with make_mesh(tmp_path, serving) as mesh:
        result = mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
    assert result.record.attempts == 3 and result.record.outcome == "ok"


def test_non_retryable_errors_are_not_retried(tmp_path: Path) -> None:
    serving = ScriptedServing({"wrong": "shape"})
    with make_mesh(tmp_path, serving) as mesh, pytest.raises(InvalidOutput):
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
    assert serving.calls == 1


def test_retry_budget_stops_a_retry_storm(tmp_path: Path) -> None:
    serving = ScriptedServing(BackendUnavailable("down"))
    cfg = {"retry": {"max_attempts": 5, "budget_ratio": 0.1, "min_retries_per_s": 0,
                     "backoff_s": 0}, "breaker": {"failure_threshold": 10_000}}
    with make_mesh(tmp_path, serving, config=cfg) as mesh:
        for _ in range(50):
            with pytest.raises(BackendUnavailable):
                mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
    retries = serving.calls - 50
    assert retries <= 5  # 10% of 50 calls, not 4 x 50


def test_timeout_is_typed(tmp_path: Path) -> None:
    import asyncio

    class Slow(ScriptedServing):
        async def infer_batch(self, *a: Any, **k: Any) -> Any:
            await asyncio.sleep(5)

    cfg = {"retry": {"max_attempts": 1}}
    with make_mesh(tmp_path, Slow(), caps=[spec(slo=SLO(timeout_s=0.05))], config=cfg) as mesh:
        from aios_mesh import BackendTimeout

        with pytest.raises(BackendTimeout, match=r"within 0\.05s"):
            mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")


def test_an_adapter_that_keeps_deadlines_gets_the_slo_and_no_second_timer(
        tmp_path: Path) -> None:
    import asyncio

    from aios_mesh import BackendTimeout
    from aios_mesh.ports.base import Feature

    class KeepsDeadline(ScriptedServing):
        features = frozenset({Feature.BATCH, Feature.DEADLINE})
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[float | None] = []

        async def infer_batch(self, model: Any, payloads: Any, *,
                              timeout: float | None = None) -> Any:
            self.seen.append(timeout)
            # A pipeline timer would cancel this sleep at 0.05 s with the pipeline's message.
            await asyncio.sleep(0.15)
            raise BackendTimeout("the adapter's own deadline", hint="raise slo.timeout_s")

    cfg = {"retry": {"max_attempts": 1}}
    serving = KeepsDeadline()
    with make_mesh(tmp_path, serving, caps=[spec(slo=SLO(timeout_s=0.05))],
                   config=cfg) as mesh, \
            pytest.raises(BackendTimeout, match="the adapter's own deadline"):
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
    assert serving.seen == [0.05]


def test_breaker_opens_then_fallback_chain_answers(tmp_path: Path) -> None:
    down = ScriptedServing(BackendUnavailable("down"))
    cfg = {"retry": {"max_attempts": 1}, "breaker": {"failure_threshold": 2}}
    caps = [spec(fallbacks=(f"function:{__name__}:rules_fallback",))]
    with make_mesh(tmp_path, down, caps=caps, config=cfg) as mesh:
        outs = [mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme") for _ in range(4)]
        assert all(r.output == Triage(label="rules") for r in outs)
        # acme's compartment: one tenant alone never opens the backend's shared breaker
        assert mesh.breakers.states() == {"ScriptedServing/clf/3": "closed",
                                          "ScriptedServing/clf/3#acme": "open"}
        assert mesh.breakers.state("ScriptedServing", "clf/3", "acme") == "open"
    assert down.calls == 2  # after two failures the breaker stopped calling the backend
    recs = records(tmp_path)
    assert [r["fallback"] for r in recs] == [f"function:{__name__}:rules_fallback"] * 4
    assert {r["outcome"] for r in recs} == {"degraded"}  # answered, but not by the primary
    assert [r["error"]["type"] for r in recs] == ["BackendUnavailable"] * 2 + ["CircuitOpen"] * 2


def test_fallback_to_another_alias_then_human(tmp_path: Path) -> None:
    serving = ScriptedServing(BackendUnavailable("down"))
    caps = [spec(fallbacks=("model:clf@previous", "human"))]
    with make_mesh(tmp_path, serving, caps=caps, config={"retry": {"max_attempts": 1}}) as mesh:
        result = mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
        assert result.output is None and result.needs_review
        item = mesh.review_queue().get(result.review_id or "")
        assert item.reason == "fallback chain reached human review"
    assert serving.calls == 2  # champion, then previous, then the human queue
    assert records(tmp_path)[0]["outcome"] == "review"


def test_confidence_gate_routes_low_confidence_to_review(tmp_path: Path) -> None:
    serving = ScriptedServing({"label": "maybe", "confidence": 0.4})
    with make_mesh(tmp_path, serving, caps=[spec(review_threshold=0.7)]) as mesh:
        result = mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
        assert result.needs_review and result.output == Triage(label="maybe", confidence=0.4)
        item = mesh.review_queue().get(result.review_id or "")
        assert item.proposed == {"label": "maybe", "confidence": 0.4}
        approved = mesh.review_queue().resolve(item.id, approve=True, reviewer="ana")
        assert approved.status == "approved" and approved.decided_by == "ana"


def test_require_human_obligation(tmp_path: Path) -> None:
    policy = StaticPolicy(obligations={"acme": Obligations(require_human=True)})
    with make_mesh(tmp_path, ScriptedServing(), caps=[spec(policy="p")], policy=policy) as m:
        assert m.invoke("classify-ticket", {"text": "x"}, tenant="acme").needs_review


def test_quota_reserve_settle_and_refund(tmp_path: Path) -> None:
    cfg = {"tenants": {"acme": {"quota": {"calls": 2}}}, "retry": {"max_attempts": 1}}
    serving = ScriptedServing(BackendUnavailable("down"), {"label": "ok"})
    caps = [spec(price=Price(per_call=0.5))]
    with make_mesh(tmp_path, serving, caps=caps, config=cfg) as mesh:
        with pytest.raises(BackendUnavailable):
            mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")  # refunded
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
        with pytest.raises(QuotaExceeded):
            mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
        used, cost = mesh.run_sync(mesh.port("quota").used("acme"))
    assert used.calls == 2 and cost == pytest.approx(1.0)
    assert [r["outcome"] for r in records(tmp_path)] == ["error", "ok", "ok", "rejected"]
    assert records(tmp_path)[1]["cost"] == 0.5


def test_audit_failure_fails_the_call(tmp_path: Path) -> None:
    class BrokenAudit(JsonlAuditLog):
        async def append(self, record: Any) -> Any:
            raise IntegrityError("disk full")

    mesh = make_mesh(tmp_path, ScriptedServing())
    mesh.ports.override("audit", BrokenAudit(tmp_path / "a.jsonl"))
    with mesh, pytest.raises(IntegrityError):
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")


def test_telemetry_span_metrics_and_log_line(tmp_path: Path) -> None:
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    log = tmp_path / "decisions.log"
    telemetry = Telemetry(log=log, tracer_provider=tp,
                          meter_provider=MeterProvider(metric_readers=[reader]))
    with make_mesh(tmp_path, ScriptedServing(), telemetry=telemetry,
                   caps=[spec(price=Price(per_call=0.25))]) as mesh:
        result = mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
    [span] = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["aios_mesh.record_id"] == result.record.record_id
    assert format(span.context.trace_id, "032x") == result.record.trace_id
    names = {m.name for rm in reader.get_metrics_data().resource_metrics
             for sm in rm.scope_metrics for m in sm.metrics}
    assert {"aios_mesh.calls", "aios_mesh.call.duration", "aios_mesh.cost"} <= names
    [line] = log.read_text().splitlines()
    assert orjson.loads(line)["record_id"] == result.record.record_id


def test_trace_context_is_propagated_from_the_caller(tmp_path: Path) -> None:
    tp = TracerProvider()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with make_mesh(tmp_path, ScriptedServing(),
                   telemetry=Telemetry(log=None, tracer_provider=tp)) as mesh:
        result = mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme",
                             traceparent={"traceparent": parent})
    assert result.record.trace_id == "0af7651916cd43dd8448eb211c80319c"


def test_without_an_otel_sdk_no_span_is_made_but_a_caller_trace_still_counts(
        tmp_path: Path) -> None:
    from opentelemetry import trace

    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # no SDK here
    telemetry = Telemetry(log=None)
    assert telemetry.start_span("classify-ticket", "acme") is None
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with make_mesh(tmp_path, ScriptedServing(), telemetry=telemetry) as mesh:
        plain = mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
        traced = mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme",
                             traceparent={"traceparent": parent})
    assert plain.record.trace_id is None
    assert traced.record.trace_id == "0af7651916cd43dd8448eb211c80319c"


def test_broken_telemetry_never_breaks_the_call(tmp_path: Path, caplog: Any) -> None:
    class Exploding(Telemetry):
        def __init__(self) -> None:
            super().__init__(log=None)
            self._logger = self  # type: ignore[assignment]

        def info(self, *a: Any, **k: Any) -> None:
            raise RuntimeError("log sink down")

    telemetry = Exploding()
    with caplog.at_level(logging.WARNING), \
            make_mesh(tmp_path, ScriptedServing(), telemetry=telemetry) as mesh:
        assert mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme").output
    assert telemetry.failures == 1


def test_circuit_open_without_fallback_is_typed(tmp_path: Path) -> None:
    cfg = {"retry": {"max_attempts": 1}, "breaker": {"failure_threshold": 1}}
    with make_mesh(tmp_path, ScriptedServing(BackendUnavailable("x")), config=cfg) as mesh:
        with pytest.raises(BackendUnavailable):
            mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
        with pytest.raises(CircuitOpen):
            mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")


async def test_async_face_and_invoke_many(tmp_path: Path) -> None:
    serving = ScriptedServing(lambda p: {"label": p["text"]})
    mesh = make_mesh(tmp_path, serving)
    one = await mesh.ainvoke("classify-ticket", {"text": "a"}, tenant="acme")
    assert one.output == Triage(label="a")
    many = await mesh.ainvoke_many("classify-ticket", [{"text": str(i)} for i in range(20)]
                                   + [{"bad": 1}], tenant="acme", return_exceptions=True)
    assert [r.output.label for r in many[:20]] == [str(i) for i in range(20)]  # type: ignore
    assert isinstance(many[20], InvalidInput)
    await mesh.aclose()
    assert len(records(tmp_path)) == 22


async def test_sync_api_inside_a_running_loop_is_refused(tmp_path: Path) -> None:
    from aios_mesh import MeshError

    mesh = make_mesh(tmp_path, ScriptedServing())
    with pytest.raises(MeshError, match="ainvoke"):
        mesh.invoke("classify-ticket", {"text": "x"}, tenant="acme")
    await mesh.aclose()


def test_sync_facade_from_many_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with make_mesh(tmp_path, ScriptedServing()) as mesh, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: mesh.invoke("classify-ticket", {"text": str(i)},
                                                      tenant="acme"), range(64)))
    assert len({r.record.record_id for r in results}) == 64
    report = verify_file(tmp_path / "audit.jsonl")
    assert report.ok and report.records == 64


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=10))
def test_fuzzed_payloads_only_ever_raise_invalid_input(tmp_path: Path, payload: Any) -> None:
    with make_mesh(tmp_path, ScriptedServing()) as mesh:
        try:
            mesh.invoke("classify-ticket", payload, tenant="acme")
        except InvalidInput:
            pass
    assert verify_file(tmp_path / "audit.jsonl").ok


async def test_stream_yields_chunks_and_writes_one_record(tmp_path: Path) -> None:
    from aios_mesh.embedded.serving import InProcessServing

    serving = InProcessServing()
    serving.register("clf", "3", noop_batch,
                     stream=lambda p: ({"token": w} for w in p["text"].split()))
    mesh = make_mesh(tmp_path, serving)
    chunks = [c async for c in mesh.stream("classify-ticket", {"text": "a b c"},
                                           tenant="acme")]
    assert chunks == [{"token": "a"}, {"token": "b"}, {"token": "c"}]
    from aios_mesh import FeatureNotSupported

    serving._streams.clear()  # the same model, now without a stream function
    with pytest.raises(FeatureNotSupported):
        [c async for c in mesh.stream("classify-ticket", {"text": "a"}, tenant="acme")]
    await mesh.aclose()
    assert [r["outcome"] for r in records(tmp_path)] == ["ok", "error"]


def noop_batch(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"label": "x"} for _ in batch]


def test_handler_gets_context_and_records_index_snapshot(tmp_path: Path) -> None:
    from aios_mesh.capabilities import capability
    from aios_mesh.context import CallContext

    @capability("lookup-ticket")
    async def lookup(payload: Ticket, ctx: CallContext) -> Triage:
        ctx.note_index("kb", "snap-7")
        return Triage(label=f"{ctx.tenant}:{payload.text}")

    with make_mesh(tmp_path, ScriptedServing(), caps=[lookup]) as mesh:
        result = mesh.invoke("lookup-ticket", {"text": "q"}, tenant="globex")
    assert result.output == Triage(label="globex:q")
    assert result.record.index_snapshots == {"kb": "snap-7"}
    assert result.record.model == {"name": "function:lookup-ticket", "version": "1",
                                   "alias": None, "source": "", "run_id": None}


def test_lock_pins_model_and_index_together_and_records_drift(tmp_path: Path) -> None:
    from aios_mesh.capabilities import capability
    from aios_mesh.context import CallContext

    class Snapshots:
        features = frozenset()
        current = "snap-1"

        async def snapshot(self, collection: str) -> str:
            return self.current

        async def aclose(self) -> None:
            return None

    index = Snapshots()

    @capability("lookup-ticket", indexes=("kb",))
    async def lookup(payload: Ticket, ctx: CallContext) -> Triage:
        ctx.note_index("kb", await ctx.ports.retrieval.snapshot("kb"))
        return Triage(label="x")

    mesh = make_mesh(tmp_path, ScriptedServing(), caps=[spec(), lookup],
                     config={"lock_file": str(tmp_path / "aios-mesh.lock")})
    mesh.ports.override("retrieval", index)
    with mesh:
        mesh.lock()
        lock = json.loads((tmp_path / "aios-mesh.lock").read_text())
        assert lock["indexes"] == {"kb": "snap-1"}
        assert lock["models"]["clf@champion"]["version"] == "3"
        assert mesh.invoke("lookup-ticket", {"text": "q"}, tenant="acme").record.index_drift \
            is None
        index.current = "snap-2"  # someone re-indexed after the lock
        drifted = mesh.invoke("lookup-ticket", {"text": "q"}, tenant="acme").record
    assert drifted.index_drift == {"kb": {"pinned": "snap-1", "answered": "snap-2"}}


def test_each_capability_enters_only_the_steps_that_apply_to_it(tmp_path: Path) -> None:
    plain, guarded = spec(), spec(name="guarded", policy="demo/tickets", cache_ttl_s=60,
                                  external=True, review_threshold=0.5)
    mesh = make_mesh(tmp_path, ScriptedServing(), caps=[plain, guarded])
    # the admission stage is in every plan (its pause controller must see each call, and
    # what is paused may change after the plan is made); only generations render a prompt
    assert [s.name for s in mesh.pipeline.plan(plain)] == [
        "validate_input", "resolve_model", "quota", "admission", "invoke"]
    assert [s.name for s in mesh.pipeline.plan(guarded)] == [
        n for n in mesh.pipeline.names if n not in ("prompt", "groundedness_gate")]
    assert mesh.pipeline.plan(plain) is mesh.pipeline.plan(plain)  # worked out once
    # A policy alone brings redaction (obligations) and the review gate (require_human).
    assert [s.name for s in mesh.pipeline.plan(spec(policy="demo/tickets"))] == [
        "validate_input", "policy", "redact", "resolve_model", "quota", "admission",
        "guard_output_hold", "invoke", "guard_output", "confidence_gate"]


def test_the_scheduler_table_puts_the_fair_scheduler_in_the_admission_stage(
        tmp_path: Path) -> None:
    from aios_mesh.lifecycle.pause import PauseControl
    from aios_mesh.lifecycle.slo import SLORouter
    from aios_mesh.pipeline.admission import AdmissionStep
    from aios_mesh.pipeline.fair import FairScheduler

    def controllers(mesh: Mesh) -> list[Any]:
        [stage] = [s for s in mesh.pipeline.steps if isinstance(s, AdmissionStep)]
        return stage.controllers

    with make_mesh(tmp_path / "off", ScriptedServing()) as mesh:
        # always there (the SLO router acts only for capabilities with candidates)
        assert [type(c) for c in controllers(mesh)] == [PauseControl, SLORouter]
    on = {"scheduler": {"enabled": True, "backends": {"default": 1}, "weights": {"acme": 2}}}
    with make_mesh(tmp_path / "on", ScriptedServing(), config=on) as mesh:
        [pause, router, fair] = controllers(mesh)  # a paused call never waits for a slot
        assert isinstance(pause, PauseControl) and isinstance(fair, FairScheduler)
        assert isinstance(router, SLORouter)  # a routed call queues for its chosen backend
        assert mesh.pipeline.plan(spec())[-2].name == "admission"  # now in every plan
