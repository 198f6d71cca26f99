"""Drift: the detector (no alarm on unchanged traffic over many checks, an alarm on a shift,
the effect floor), the reference (JSON, empty or foreign references refused, kept with a model
version in the registry) and the monitor as a record processor on a real in-process mesh."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic import BaseModel

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.errors import ConfigError, FeatureNotSupported, InvalidInput
from aios_mesh.lifecycle.drift import (
    DOCUMENT_KEY,
    DRIFT_EVENT_TYPE,
    DRIFT_TOPIC,
    DriftDetector,
    DriftReference,
    DriftSettings,
    load_reference,
    log_reference,
    schema_digest,
)
from aios_mesh.lifecycle.drift_monitor import (
    DriftAlarm,
    RetrainWorkflow,
    install_drift_monitor,
)
from aios_mesh.lifecycle.features import Features
from aios_mesh.ports.orchestrator import Execution, ExecutionStatus
from tests.unit.fakes import StaticPolicy, StaticRegistry


def _features(rng: np.random.Generator, n: int, *, shift: float = 0.0,
              new_share: float = 0.0) -> list[Features]:
    """Calls with two numeric features and one categorical; ``shift`` moves one numeric
    feature's mean (in standard deviations), ``new_share`` of calls get a new category."""
    out = []
    for _ in range(n):
        cat = "new" if rng.random() < new_share else str(rng.choice(["a", "b", "c"],
                                                                   p=[0.5, 0.3, 0.2]))
        out.append(Features({"x": float(rng.normal(shift, 1.0)),
                             "y": float(rng.integers(0, 40))}, {"c": cat}))
    return out


def _reference(rng: np.random.Generator, n: int = 1000) -> DriftReference:
    return DriftReference.from_features("cap", _features(rng, n), schema_digest="d" * 32,
                                        model_version="1")


def _first_alarm(detector: DriftDetector, stream: list[Features]) -> int | None:
    for i, f in enumerate(stream, 1):
        report = detector.add(f)
        if report is not None and report.drifted:
            return i
    return None


# --------------------------------------------------------------------------- detector


def test_no_alarm_on_unchanged_traffic_over_many_checks() -> None:
    rng = np.random.default_rng(7)
    detector = DriftDetector(_reference(rng), DriftSettings(window=200, check_every=10))
    reports = [r for f in _features(rng, 6000) if (r := detector.add(f)) is not None]
    assert len(reports) == 581  # (6000 - 200) / 10 + 1 checks
    assert not any(r.drifted for r in reports)
    # every feature was looked at, and the level is the documented correction
    assert {t.feature for t in reports[-1].tests} == {"x", "y", "c"}
    assert detector.per_test_alpha == pytest.approx(0.01 / (3 * (100_000 // 10)))


def test_alarm_on_a_numeric_shift_names_the_feature() -> None:
    rng = np.random.default_rng(8)
    detector = DriftDetector(_reference(rng))
    assert _first_alarm(detector, _features(rng, 400)) is None
    at = _first_alarm(detector, _features(rng, 400, shift=1.0))
    assert at is not None and at <= 200
    report = detector.check()
    (drifted,) = report.significant
    assert drifted.feature == "x" and drifted.test == "ks"
    assert drifted.p_value is not None and drifted.p_value < report.per_test_alpha
    assert drifted.effect >= detector.settings.min_effect


def test_alarm_on_a_new_category() -> None:
    rng = np.random.default_rng(9)
    detector = DriftDetector(_reference(rng))
    assert _first_alarm(detector, _features(rng, 300, new_share=0.3)) is not None
    assert [t.feature for t in detector.check().significant] == ["c"]
    assert detector.check().significant[0].test == "chi2"


def test_effect_floor_keeps_huge_windows_quiet_on_trivia() -> None:
    """A 0.1-sd shift over 20,000-call windows is wildly significant, and trivial."""
    rng = np.random.default_rng(10)
    reference = _reference(rng, 20_000)
    trivial = _features(rng, 20_000, shift=0.1)
    floor = DriftDetector(reference, DriftSettings(window=20_000, check_every=20_000,
                                                   min_count=30, horizon=20_000))
    no_floor = DriftDetector(reference, DriftSettings(window=20_000, check_every=20_000,
                                                      horizon=20_000, min_effect=0.0))
    for f in trivial:
        floor.add(f)
        no_floor.add(f)
    assert not floor.check().drifted
    (x,) = [t for t in no_floor.check().tests if t.feature == "x"]
    assert x.significant and x.effect < floor.settings.min_effect


def test_settings_out_of_range_are_config_errors() -> None:
    for bad in ({"window": 5}, {"check_every": 0}, {"alpha": 1.0}, {"min_effect": 1.5},
                {"check_every": 500, "window": 200}):
        with pytest.raises(ConfigError) as info:
            DriftSettings(**bad)  # type: ignore[arg-type]
        assert info.value.hint
    assert DriftSettings.from_config({"window": 300, "other": 1}).window == 300


# --------------------------------------------------------------------------- reference


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    label: str
    confidence: float = 1.0


SPEC = CapabilitySpec(name="classify-ticket", input=Ticket, output=Triage,
                      model="clf@champion")


def predict(payload: dict[str, Any]) -> dict[str, Any]:
    text = payload["text"]
    return {"label": "shouting" if text.isupper() else "calm",
            "confidence": round(0.5 + len(text) % 50 / 100, 2)}


def calm(rng: random.Random) -> dict[str, Any]:
    words = ["please", "help", "invoice", "refund", "thanks", "order", "late"]
    return {"text": " ".join(rng.choice(words) for _ in range(rng.randrange(3, 12)))}


def shouting(rng: random.Random) -> dict[str, Any]:
    return {"text": f"ORDER {rng.randrange(10**6, 10**9)} STILL MISSING!!! " * 3}


def _good_reference(n: int = 400) -> DriftReference:
    rng = random.Random(1)
    payloads = [calm(rng) for _ in range(n)]
    return DriftReference.build(SPEC, calls=[(p, predict(p)) for p in payloads],
                                model_version="1")


def test_reference_json_round_trip_and_contents() -> None:
    ref = _good_reference()
    again = DriftReference.from_json(ref.to_json())
    assert again == ref
    assert ref.calls == 400 and ref.capability == "classify-ticket"
    assert ref.schema_digest == schema_digest(Ticket, Triage)
    assert ref.categorical["output.label"] == {"calm": 400}  # a label: the class mix
    assert "input.text.length" in ref.numeric
    # free text never lands in a reference: only its statistics
    assert "please" not in ref.to_json()


def test_empty_reference_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidInput) as info:
        DriftReference.build(SPEC, calls=[], model_version="1")
    assert "empty" in info.value.message and info.value.hint
    with pytest.raises(InvalidInput):
        DriftReference.from_dict({**_good_reference().to_dict(), "calls": 0})


def test_reference_of_another_schema_or_capability_is_refused() -> None:
    class Other(BaseModel):
        text: str
        priority: int = 0

    other = CapabilitySpec(name="classify-ticket", input=Other, output=Triage,
                           model="clf@champion")
    with pytest.raises(InvalidInput) as info:
        DriftDetector.for_capability(other, _good_reference())
    assert "another schema" in info.value.message and info.value.hint
    renamed = CapabilitySpec(name="route-ticket", input=Ticket, output=Triage, model="clf@x")
    with pytest.raises(InvalidInput) as info:
        DriftDetector.for_capability(renamed, _good_reference())
    assert info.value.hint
    assert DriftDetector.for_capability(SPEC, _good_reference()).features > 0


@pytest.mark.parametrize("doc", [{}, {"format": "aios.drift.reference/1"}, [],
                                 {"format": "aios.drift.reference/1", "capability": "c",
                                  "schema_digest": "d", "calls": 1, "categorical": {},
                                  "numeric": {"x": [float("inf")]}}])
def test_malformed_reference_documents_are_invalid_input(doc: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        DriftReference.from_dict(doc)
    assert info.value.hint


async def test_log_and_load_reference_with_the_model_version() -> None:
    registry = MemoryRegistry()
    await registry.register("clf", "inprocess:clf/1")
    await registry.register("clf", "inprocess:clf/2")
    await registry.set_alias("clf", "champion", "1")
    assert await load_reference(registry, "clf@champion") is None
    ref = await log_reference(registry, "clf@champion", _good_reference())
    assert (ref.name, ref.version) == ("clf", "1")
    loaded = await load_reference(registry, "clf/1")
    assert loaded is not None and loaded.model == "clf" and loaded.model_version == "1"
    assert loaded.numeric == _good_reference().numeric
    assert await registry.get_document("clf", "1", DOCUMENT_KEY) == loaded.to_dict()
    assert await load_reference(registry, "clf/2") is None
    with pytest.raises(InvalidInput) as info:  # taken for version 1, logged on version 2
        await log_reference(registry, "clf/2", _good_reference())
    assert info.value.hint


async def test_registry_without_documents_is_feature_not_supported() -> None:
    with pytest.raises(FeatureNotSupported):
        await log_reference(StaticRegistry({"clf@champion": "1"}), "clf@champion",
                            _good_reference())


def test_retrain_hook_runs_or_submits_the_workflow_with_the_alarm() -> None:
    class Orchestrator:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str, dict[str, Any]]] = []

        async def run(self, workflow: str, inputs: dict[str, Any]) -> Execution:
            self.calls.append(("run", workflow, inputs))
            return Execution("exec-run", workflow, ExecutionStatus.SUCCEEDED, {"o0": 1})

        async def submit(self, workflow: str, inputs: dict[str, Any]) -> str:
            self.calls.append(("submit", workflow, inputs))
            return "exec-submit"

    orchestrator = Orchestrator()
    rng = np.random.default_rng(3)
    detector = DriftDetector(_reference(rng))
    _first_alarm(detector, _features(rng, 400, shift=2.0))
    alarm = DriftAlarm("cap", "clf", "1", detector.check())
    expected = {"capability": "cap", "model_version": "1", "worst_feature": "x"}
    waiting = RetrainWorkflow(lambda: orchestrator, "flows:retrain",  # type: ignore[arg-type,return-value]
                              run=asyncio.run)
    waiting(alarm)
    assert waiting.join(10)
    assert waiting.executions == ["exec-run"]
    assert waiting.finished[0].status is ExecutionStatus.SUCCEEDED
    fire = RetrainWorkflow(lambda: orchestrator, "flows:retrain",  # type: ignore[arg-type,return-value]
                           run=asyncio.run, wait=False,
                           inputs=lambda doc: {"feature": doc["worst_feature"]})
    fire(alarm)
    assert fire.executions == ["exec-submit"]
    assert orchestrator.calls == [("run", "flows:retrain", expected),
                                  ("submit", "flows:retrain", {"feature": "x"})]


# --------------------------------------------------------------------------- monitor


@pytest.fixture
async def mesh(tmp_path: Path) -> Any:
    registry = MemoryRegistry()
    await registry.register("clf", "inprocess:clf/1")
    await registry.set_alias("clf", "champion", "1")
    serving = InProcessServing()
    serving.register_function("clf", "1", predict)
    doc = {"state_dir": str(tmp_path), "tenants": {"acme": {}},
           "relay": {"mode": "thread"}, "telemetry": {"lineage": False}}
    mesh = Mesh(config_from_mapping(doc), capabilities=[SPEC],
                adapters={"serving": serving, "policy": StaticPolicy(), "registry": registry})
    yield mesh
    await mesh.aclose()


async def test_monitor_on_a_mesh_raises_one_alarm_as_audit_event_and_metric(
        mesh: Mesh, tmp_path: Path) -> None:
    await log_reference(mesh, "clf@champion", _good_reference())

    class Rollback:  # what the automatic rollback offers the monitor
        name = "auto-rollback"
        heard: list[tuple[str, str]] = []

        def process(self, item: Any) -> None:
            return None

        def flush(self, timeout: float) -> bool:
            return True

        def close(self) -> None:
            return None

        def drift_alarm(self, capability: str, model_version: str) -> None:
            self.heard.append((capability, model_version))

    rollback = Rollback()
    mesh.recorder.add(rollback)
    metrics = InMemoryMetricReader()
    monitor = install_drift_monitor(
        mesh, DriftSettings(window=100, check_every=20, min_count=20),
        meter_provider=MeterProvider(metric_readers=[metrics]))
    rng = random.Random(2)
    for _ in range(200):
        await mesh.ainvoke("classify-ticket", calm(rng), tenant="acme")
    assert await asyncio.to_thread(mesh.flush)
    assert monitor.alarms == [] and monitor.failures == 0
    secret = shouting(rng)["text"]
    for _ in range(100):
        await mesh.ainvoke("classify-ticket", shouting(rng), tenant="acme")
    assert await asyncio.to_thread(mesh.flush)
    assert monitor.failures == 0
    assert len(monitor.alarms) == 1  # once per window, not at every check
    alarm = monitor.alarms[0]
    assert (alarm.capability, alarm.model, alarm.model_version) == ("classify-ticket", "clf",
                                                                    "1")
    assert rollback.heard == [("classify-ticket", "1")]
    # the audit entry: numbers and feature names, no value of any call
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    entries = [json.loads(line)["record"] for line in lines]
    (entry,) = [e for e in entries if e.get("kind") == "drift_alarm"]
    assert entry["alarm_id"] == alarm.id and entry["model_version"] == "1"
    assert {t["feature"] for t in entry["drifted"]} & {"output.label", "input.text.upper",
                                                       "input.text.length"}
    audit_text = json.dumps(entry)
    assert "MISSING" not in audit_text and secret[:20] not in audit_text
    # the event, shipped from the outbox by the relay
    assert await mesh.flush_outbox()
    sub = await mesh.ports.events.subscribe(DRIFT_TOPIC, group="test")
    (delivery,) = await sub.fetch(10, timeout=0.5)
    await sub.aclose()
    assert delivery.event.type == DRIFT_EVENT_TYPE
    assert delivery.event.data["alarm_id"] == alarm.id
    assert delivery.event.key == "classify-ticket/1"
    # the counter and the gauges
    data = metrics.get_metrics_data()
    assert data is not None
    points = {m.name: list(m.data.data_points) for rm in data.resource_metrics
              for sm in rm.scope_metrics for m in sm.metrics}
    (count,) = points["aios_mesh.drift.alarms"]
    assert count.value == 1 and count.attributes["model_version"] == "1"
    (effect,) = points["aios_mesh.drift.effect"]
    assert effect.value >= 0.15
    assert points["aios_mesh.drift.p_value"][0].value < alarm.report.per_test_alpha


async def test_monitor_without_a_reference_watches_nothing(mesh: Mesh) -> None:
    monitor = install_drift_monitor(mesh, DriftSettings(window=20, check_every=5,
                                                        min_count=5))
    rng = random.Random(3)
    for _ in range(30):
        await mesh.ainvoke("classify-ticket", shouting(rng), tenant="acme")
    assert await asyncio.to_thread(mesh.flush)
    assert monitor.alarms == [] and monitor.failures == 0


async def test_monitor_refuses_a_reference_of_another_schema(mesh: Mesh) -> None:
    class Other(BaseModel):
        subject: str

    foreign = DriftReference.build("classify-ticket", Other, Triage,
                                   [({"subject": "x"}, {"label": "a"})] * 40,
                                   model_version="1")
    await log_reference(mesh, "clf@champion", foreign)
    monitor = install_drift_monitor(mesh, DriftSettings(window=20, check_every=5,
                                                        min_count=5))
    await mesh.ainvoke("classify-ticket", {"text": "hi"}, tenant="acme")
    assert await asyncio.to_thread(mesh.flush)
    assert monitor.failures == 1 and monitor.alarms == []  # logged, never raised


async def test_drift_section_installs_the_monitor(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    await registry.register("clf", "inprocess:clf/1")
    await registry.set_alias("clf", "champion", "1")
    await log_reference(registry, "clf@champion", _good_reference())
    serving = InProcessServing()
    serving.register_function("clf", "1", predict)
    doc = {"state_dir": str(tmp_path), "tenants": {"acme": {}}, "relay": {"mode": "thread"},
           "telemetry": {"lineage": False},
           "drift": {"window": 100, "check_every": 20, "min_count": 20}}
    mesh = Mesh(config_from_mapping(doc), capabilities=[SPEC],
                adapters={"serving": serving, "policy": StaticPolicy(), "registry": registry})
    try:
        monitor = getattr(mesh, "drift")  # noqa: B009 - typed once the patch is in
        assert monitor is not None and monitor.settings.window == 100
        rng = random.Random(4)
        for payload in [calm(rng) for _ in range(120)] + [shouting(rng) for _ in range(80)]:
            await mesh.ainvoke("classify-ticket", payload, tenant="acme")
        assert await asyncio.to_thread(mesh.flush)
        assert len(monitor.alarms) == 1
    finally:
        await mesh.aclose()
    without = Mesh(config_from_mapping({"state_dir": str(tmp_path / "b"),
                                        "relay": {"mode": "thread"}}))
    try:
        assert getattr(without, "drift") is None  # noqa: B009
    finally:
        await without.aclose()
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"drift": {"window": 50, "check_every": 60}})
    assert "check_every" in info.value.message
