"""Quality from reviewers through a real in-process Mesh: calls below the review threshold go
to the review queue, a test reviewer approves, corrects or rejects them, and the report's
accuracy, override and automation rates, interventions and calibration match what is worked
out by hand here for that small known set. Serving and registry are the unit-test fakes
(``tests/unit/fakes.py``): what is under test is the joining of labels and records."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic import BaseModel
from typer.testing import CliRunner

from aios_mesh import SLO, CapabilitySpec, InvalidInput, Mesh, NotFound
from aios_mesh.cli import AppOpt, ConfigOpt, _fail, _mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.lifecycle.quality import (
    QualityMetrics,
    QualityReport,
    VersionQuality,
    calibration,
    proposal_kept,
    quality,
)
from aios_mesh.quality_cli import quality_command
from aios_mesh.review import Label
from aios_mesh.rollout import promote
from tests.unit.fakes import ScriptedServing, StaticPolicy, StaticRegistry

CAP = "classify-ticket"


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    label: str
    confidence: float = 1.0


def _answer(payload: dict[str, Any]) -> dict[str, Any]:
    """The model's answer: the confidence is written in the ticket (``"c=0.35 ..."``)."""
    return {"label": "billing", "confidence": float(payload["text"].split()[0][2:])}


def _mesh_with_fakes(tmp_path: Path) -> Mesh:
    doc = {"state_dir": str(tmp_path), "tenants": {"acme": {}, "globex": {}},
           "retry": {"backoff_s": 0.0}}
    spec = CapabilitySpec(name=CAP, input=Ticket, output=Triage, model="clf@champion",
                          slo=SLO(timeout_s=5), review_threshold=0.8)
    return Mesh(config_from_mapping(doc), capabilities=[spec],
                adapters={"serving": ScriptedServing(_answer),
                          "registry": StaticRegistry({"clf@champion": "3"}),
                          "policy": StaticPolicy()})


#: (confidence, tenant, what the reviewer does) per call; None = answered ok, no review
V3 = [(0.95, "acme", None), (0.92, "acme", None),
      (0.35, "acme", "reject"), (0.32, "acme", "approve"), (0.55, "acme", "approve"),
      (0.75, "acme", "approve same"), (0.25, "acme", "correct"), (0.45, "acme", "pending")]
V4 = [(0.85, "acme", None), (0.65, "globex", "approve"), (0.15, "acme", "reject")]


def _drive(mesh: Mesh, calls: list[tuple[float, str, str | None]], tag: str) -> None:
    for i, (conf, tenant, action) in enumerate(calls):
        result = mesh.invoke(CAP, {"text": f"c={conf} {tag}{i}"}, tenant=tenant)
        assert result.record.outcome == ("ok" if action is None else "review")
        if action in (None, "pending"):
            continue
        assert result.review_id is not None
        if action == "reject":
            mesh.resolve_review(result.review_id, approve=False, reviewer="rita")
        elif action == "approve":
            mesh.resolve_review(result.review_id, approve=True, reviewer="rita")
        elif action == "approve same":  # a "correction" that is the proposal itself
            mesh.resolve_review(result.review_id, approve=True, reviewer="rita",
                                output={"label": "billing", "confidence": conf})
        else:
            mesh.resolve_review(result.review_id, approve=True, reviewer="rita",
                                output={"label": "sales", "confidence": conf})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Version 3 answers V3, then the alias moves to version 4, which answers V4; one
    malformed call is rejected (answered by nobody)."""
    tmp = tmp_path_factory.mktemp("quality")
    mesh = _mesh_with_fakes(tmp)
    with mesh:
        _drive(mesh, V3, "a")
        between = datetime.now(UTC)
        mesh.run_sync(promote(mesh, CAP, version="4", actor="test"))
        _drive(mesh, V4, "b")
        with pytest.raises(InvalidInput):
            mesh.invoke(CAP, {"txt": "no text"}, tenant="acme")
        yield mesh, between


def _ece(pairs: list[tuple[float, bool]]) -> float:
    """ECE by hand: bins of width 0.1, weighted mean of |accuracy - mean confidence| (the
    confidences here are never on a bin edge, where float rounding would decide)."""
    bins: dict[int, list[tuple[float, bool]]] = {}
    for conf, right in pairs:
        bins.setdefault(int(conf * 10), []).append((conf, right))
    return sum(len(b) / len(pairs) * abs(sum(r for _, r in b) / len(b)
                                         - sum(c for c, _ in b) / len(b))
               for b in bins.values())


def _by_version(report: QualityReport) -> dict[str, VersionQuality]:
    return {v.model_version: v for v in report.versions}


def test_accuracy_override_automation_and_calibration_per_model_version(world: Any) -> None:
    mesh, _ = world
    report = mesh.run_sync(quality(mesh, CAP))
    assert report.labels == 7 and report.unmatched == 0
    versions = _by_version(report)
    assert set(versions) == {"3", "4"}
    v3, v4 = versions["3"], versions["4"]
    assert (v3.capability, v3.capability_version, v3.model, v3.tenant) == (CAP, "1", "clf",
                                                                           None)
    # v3: 8 answered (2 ok, 6 to review), 5 labelled: 3 kept (one "corrected" to itself),
    # 1 corrected, 1 rejected; one still pending
    assert (v3.calls, v3.automated, v3.interventions) == (8, 2, 6)
    assert (v3.labelled, v3.approved, v3.corrected, v3.rejected) == (5, 3, 1, 1)
    assert v3.accuracy == pytest.approx(3 / 5)
    assert v3.override_rate == pytest.approx(2 / 5)
    assert v3.automation_rate == pytest.approx(2 / 8)
    assert (v4.calls, v4.automated, v4.interventions, v4.labelled) == (3, 1, 2, 2)
    assert (v4.accuracy, v4.override_rate) == (pytest.approx(0.5), pytest.approx(0.5))
    assert v4.automation_rate == pytest.approx(1 / 3)
    # calibration over the labelled calls, by hand
    v3_pairs = [(0.35, False), (0.32, True), (0.55, True), (0.75, True), (0.25, False)]
    assert v3.calibration is not None and v3.calibration.samples == 5
    assert v3.calibration.ece == pytest.approx(_ece(v3_pairs)) == pytest.approx(0.256)
    curve = {round(b.lower, 1): (b.count, b.mean_confidence, b.accuracy)
             for b in v3.calibration.curve}
    assert curve[0.3] == (2, pytest.approx(0.335), pytest.approx(0.5))
    assert curve[0.5] == (1, pytest.approx(0.55), pytest.approx(1.0))
    assert set(curve) == {0.2, 0.3, 0.5, 0.7}
    assert v4.calibration is not None
    assert v4.calibration.ece == pytest.approx(_ece([(0.65, True), (0.15, False)])) \
        == pytest.approx(0.25)
    for v in (v3, v4):  # review created -> labelled: measured, ordered, never negative
        assert v.resolution_p50_s is not None and v.resolution_p95_s is not None
        assert 0 <= v.resolution_p50_s <= v.resolution_p95_s


def test_per_tenant_since_and_a_pinned_version(world: Any) -> None:
    mesh, between = world
    globex = mesh.run_sync(quality(mesh, CAP, tenant="globex"))
    [only] = globex.versions
    assert (only.model_version, only.tenant, only.calls, only.labelled, only.accuracy) == \
        ("4", None, 1, 1, 1.0)
    split = mesh.run_sync(quality(mesh, by_tenant=True))
    assert [(v.model_version, v.tenant, v.calls) for v in split.versions] == [
        ("3", "acme", 8), ("4", "acme", 2), ("4", "globex", 1)]
    later = mesh.run_sync(quality(mesh, CAP, since=between.isoformat()))
    assert [v.model_version for v in later.versions] == ["4"] and later.labels == 2
    assert later.since == between.isoformat(timespec="microseconds")
    future = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    assert mesh.run_sync(quality(mesh, since=future)).versions == ()
    assert len(mesh.run_sync(quality(mesh, f"{CAP}@1")).versions) == 2
    assert mesh.run_sync(quality(mesh, f"{CAP}@2")).versions == ()  # no such version


def test_no_labels_means_none_not_zero(tmp_path: Path) -> None:
    with _mesh_with_fakes(tmp_path) as mesh:
        _drive(mesh, [(0.9, "acme", None), (0.4, "acme", "pending")], "x")
        [v] = mesh.run_sync(quality(mesh)).versions
    assert (v.calls, v.automated, v.interventions, v.labelled) == (2, 1, 1, 0)
    assert v.automation_rate == pytest.approx(0.5)
    assert (v.accuracy, v.override_rate, v.calibration) == (None, None, None)
    assert (v.resolution_p50_s, v.resolution_p95_s) == (None, None)


def test_a_label_without_its_record_is_reported_unmatched(tmp_path: Path) -> None:
    with _mesh_with_fakes(tmp_path) as mesh:
        _drive(mesh, [(0.5, "acme", "approve")], "y")
        queue = mesh.review_queue()  # a label whose call is not in this audit log
        lost = queue.enqueue(record_id="rec-rotated-away", tenant="acme",
                             capability=f"{CAP}@1", reason="confidence 0.1 below 0.8",
                             payload={"text": "x"}, proposed={"label": "a", "confidence": 0.1})
        queue.resolve(lost, approve=False, reviewer="rita")
        report = mesh.run_sync(quality(mesh, CAP))
    assert (report.labels, report.unmatched) == (2, 1)
    assert report.unmatched_record_ids == ("rec-rotated-away",)
    [v] = report.versions
    assert (v.labelled, v.accuracy) == (1, 1.0)  # the lost label counts in no version


def test_unknown_capability_and_a_bad_since_are_typed(world: Any) -> None:
    mesh, _ = world
    with pytest.raises(NotFound, match="classify-tickets") as info:
        mesh.run_sync(quality(mesh, "classify-tickets"))
    assert info.value.hint and CAP in info.value.hint
    with pytest.raises(InvalidInput, match="ISO 8601") as bad:
        mesh.run_sync(quality(mesh, since="last tuesday"))
    assert bad.value.hint


def _label(verdict: str, proposed: Any, output: Any) -> Label:
    return Label("l1", "r1", "rec", "acme", CAP, verdict,  # type: ignore[arg-type]
                 proposed, output, "rita", "2026-12-01T00:00:00+00:00")


def test_a_correction_equal_to_the_proposal_is_an_approval() -> None:
    assert proposal_kept(_label("approved", {"a": 1}, {"a": 1}))
    assert proposal_kept(_label("corrected", {"a": 1, "b": 2}, {"b": 2, "a": 1}))
    assert not proposal_kept(_label("corrected", {"a": 1}, {"a": 2}))
    assert not proposal_kept(_label("rejected", {"a": 1}, None))


# --------------------------------------------------------------------------- calibration

_pairs = st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=200)


@settings(max_examples=60, deadline=None)
@given(_pairs)
def test_ece_lies_in_0_1_and_the_curve_counts_every_call(pairs: list[tuple[float, bool]]) -> None:
    cal = calibration([r for _, r in pairs], [c for c, _ in pairs])
    assert cal is not None and 0.0 <= cal.ece <= 1.0
    assert sum(b.count for b in cal.curve) == cal.samples == len(pairs)
    for b in cal.curve:
        assert b.lower - 1e-9 <= b.mean_confidence <= b.upper + 1e-9
        assert 0 <= b.accuracy <= 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=10, max_size=10))
def test_ece_is_zero_for_a_perfectly_calibrated_set(per_bin: list[int]) -> None:
    """In bin i every call has confidence (2i+1)/20 and exactly that share is correct."""
    correct, confidence = [], []
    for i, k in enumerate(per_bin):
        n, conf = 20 * k, (2 * i + 1) / 20
        right = round(n * conf)
        correct += [True] * right + [False] * (n - right)
        confidence += [conf] * n
    cal = calibration(correct, confidence)
    assert cal is not None and len(cal.curve) == 10
    assert cal.ece == pytest.approx(0.0, abs=1e-12)


def test_calibration_edges() -> None:
    assert calibration([], []) is None
    assert calibration([True], [math.nan]) is None  # no probability to calibrate
    worst = calibration([False, True], [1.0, 0.0])
    assert worst is not None and worst.ece == pytest.approx(1.0)
    with pytest.raises(InvalidInput):
        calibration([True], [0.5, 0.6])


# --------------------------------------------------------------------------- metrics


def _gauges(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    data = reader.get_metrics_data()
    assert data is not None
    return {m.name: [(dict(p.attributes or {}), p.value) for p in m.data.data_points]
            for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def test_metrics_export_the_report_and_refresh_at_most_once_per_period(world: Any) -> None:
    mesh, _ = world
    reader = InMemoryMetricReader()
    metrics = QualityMetrics(mesh, capability=CAP, refresh_s=3600).install(
        MeterProvider(metric_readers=[reader]))
    try:
        first = _gauges(reader)
        _gauges(reader)
        assert metrics.refreshes == 1  # six gauges, two scrapes: one report
        accuracy = {(a["model_version"], a["tenant"]): v
                    for a, v in first["aios_mesh.quality.accuracy"]}
        assert accuracy[("3", "acme")] == pytest.approx(0.6)
        assert accuracy[("4", "globex")] == pytest.approx(1.0)
        assert ("4", "acme") in {(a["model_version"], a["tenant"])
                                 for a, _ in first["aios_mesh.quality.automation_rate"]}
        [(attrs, ece)] = [(a, v) for a, v in first["aios_mesh.quality.ece"]
                          if a["model_version"] == "3"]
        assert attrs == {"capability": CAP, "capability_version": "1", "model": "clf",
                         "model_version": "3", "tenant": "acme"}
        assert ece == pytest.approx(0.256)
        quantiles = {a["quantile"] for a, _ in first["aios_mesh.quality.time_to_resolution"]}
        assert quantiles == {"0.5", "0.95"}
        metrics.update(mesh.run_sync(quality(mesh, CAP, tenant="globex")))
        after = _gauges(reader)["aios_mesh.quality.accuracy"]
        assert [(a["model_version"], a["tenant"]) for a, _ in after] == [("4", "globex")]
        assert metrics.refreshes == 1  # a pushed report is served, not recomputed
    finally:
        metrics.close()


def test_a_closed_exporter_shows_its_last_report_and_computes_no_more(world: Any) -> None:
    mesh, _ = world
    reader = InMemoryMetricReader()
    metrics = QualityMetrics(mesh, refresh_s=1e-9).install(  # every scrape is stale
        MeterProvider(metric_readers=[reader]))
    _gauges(reader)
    metrics.close()
    done = metrics.refreshes
    assert done >= 1
    assert _gauges(reader)["aios_mesh.quality.accuracy"] and metrics.refreshes == done


async def test_a_scrape_from_inside_an_event_loop_still_gets_a_report(world: Any) -> None:
    mesh, _ = world
    reader = InMemoryMetricReader()
    metrics = QualityMetrics(mesh, by_tenant=False).install(
        MeterProvider(metric_readers=[reader]))
    try:
        asyncio.get_running_loop()  # where mesh.run_sync would refuse to run
        points = _gauges(reader)["aios_mesh.quality.override_rate"]
        assert {(a["model_version"], a["tenant"]) for a, _ in points} == {("3", "*"),
                                                                          ("4", "*")}
    finally:
        metrics.close()


# --------------------------------------------------------------------------- CLI

runner = CliRunner()


def triage(ticket: Ticket) -> Triage:
    """A function capability whose confidence is written in the ticket."""
    return Triage(**_answer(ticket.model_dump()))


def _cli() -> typer.Typer:
    cli = typer.Typer()
    cli.callback()(lambda: None)  # a group, so the command is called by its name
    cli.command("quality")(quality_command(_mesh, _fail, ConfigOpt, AppOpt))
    return cli


def test_the_cli_prints_tables_and_curves_and_json(tmp_path: Path) -> None:
    config = tmp_path / "aios-mesh.toml"
    config.write_text(f"""
state_dir = "state"
[tenants.acme]
[telemetry]
lineage = false
decision_events = false
[[capabilities]]
name = "triage"
input = "{__name__}:Ticket"
output = "{__name__}:Triage"
handler = "{__name__}:triage"
review_threshold = 0.8
""")
    with Mesh.from_config(config) as mesh:
        for conf, approve in ((0.9, None), (0.35, False), (0.62, True), (0.65, True)):
            result = mesh.invoke("triage", {"text": f"c={conf} t"}, tenant="acme")
            if approve is not None:
                assert result.review_id is not None
                mesh.resolve_review(result.review_id, approve=approve, reviewer="rita")
    cli = _cli()
    out = runner.invoke(cli, ["quality", "triage", "--config", str(config), "--json"])
    assert out.exit_code == 0, out.output
    [v] = json.loads(out.output)["versions"]
    assert (v["model"], v["model_version"]) == ("function:triage", "1")
    assert (v["labelled"], v["accuracy"], v["automation_rate"]) == (3, 2 / 3, 1 / 4)
    assert v["calibration"]["ece"] == pytest.approx(_ece([(0.35, False), (0.62, True),
                                                          (0.65, True)]))
    text = runner.invoke(cli, ["quality", "--config", str(config), "--tenant", "acme"])
    assert text.exit_code == 0, text.output
    for shown in ("triage@1 function:triage/1", "accuracy vs reviewers", "66.7%",
                  "reliability curve", "0.6-0.7  n=2", "█"):
        assert shown in text.output
    typo = runner.invoke(cli, ["quality", "triag", "--config", str(config)])
    assert typo.exit_code == 2 and "did you mean 'triage'" in typo.output
    # the same state read without the capability declared (a job's folder, no --app):
    # the audit log and the queue know it, so it is reported, and a typo is still caught
    bare = tmp_path / "bare.toml"
    bare.write_text(config.read_text().split("[[capabilities]]")[0])
    again = runner.invoke(cli, ["quality", "triage", "--config", str(bare), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["versions"] == json.loads(out.output)["versions"]
    typo = runner.invoke(cli, ["quality", "triag", "--config", str(bare)])
    assert typo.exit_code == 2 and "did you mean 'triage'" in typo.output
    bad = runner.invoke(cli, ["quality", "--since", "yesterday", "--config", str(config)])
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


# --------------------------------------------------------------------------- the main job's report


def test_the_invoice_report_shows_quality_per_version_and_the_reliability_curve(
        world: Any) -> None:
    import xml.etree.ElementTree as ET

    from examples.invoice_intake.report import render_report

    mesh, _ = world
    doc = json.loads(json.dumps(mesh.run_sync(quality(mesh)).to_dict()))  # as summary.json
    html = render_report(title="t", summary=[], calls=[], invoices=[], lineage=[],
                         quality=doc)
    section = html[html.index('<section id="quality">'):]
    section = section[:section.index("</section>")]
    assert "Quality from reviewers" in section and "no labels yet" not in section
    assert "clf v3" in section and "60.0%" in section and "0.256" in section
    chart = section[section.index("<svg"):section.index("</svg>") + 6]
    root = ET.fromstring(chart)  # well-formed on its own
    points = root.findall(".//{http://www.w3.org/2000/svg}circle")
    assert len(points) == 4 + 2  # the non-empty bins of v3 and of v4

    empty = render_report(title="t", summary=[], calls=[], invoices=[], lineage=[],
                          quality={**doc, "labels": 0, "versions": [
                              {**v, "calibration": None} for v in doc["versions"]]})
    assert "no labels yet" in empty and "reliability" not in empty.split('id="quality"')[1]
