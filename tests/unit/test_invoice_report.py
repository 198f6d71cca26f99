"""examples.invoice_intake.report: a self-contained, escaped, well-formed HTML report."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from aios_mesh.lineage import run_events_for, workflow_run_events
from aios_mesh.testing.conformance.lineage import sample_record
from examples.invoice_intake import svg
from examples.invoice_intake.report import percentile, write_report

EVIL = "<script>alert('x')</script>"
SVG_NS = "{http://www.w3.org/2000/svg}"
WORKFLOW_RUN = "f3a1b2c4d5"


def _svgs(html: str) -> list[ET.Element]:
    blocks = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    return [ET.fromstring(block) for block in blocks]  # raises on malformed markup


def _by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [el for el in root.iter() if cls in (el.get("class") or "").split()]


def _chart(roots: list[ET.Element], cls: str) -> ET.Element:
    (match,) = [r for r in roots if cls in (r.get("class") or "").split()]
    return match


def _call(capability: str, outcome: str = "ok", *, parent: str = WORKFLOW_RUN,
          model: str = "invoice-extractor", index: str | None = "vendors") -> list[dict[str, Any]]:
    record = sample_record(
        record_id=str(uuid.uuid4()), outcome=outcome,
        capability={"name": capability, "version": "1"},
        parent={"run_id": parent, "namespace": "flyte", "name": "invoice_intake"},
        model={"name": model, "version": "3"},
        index_snapshots={index: "snap-1"} if index else {},
        datasets=None,  # datasets named from model/index_snapshots (a record before datasets)
    )
    return run_events_for(record)


def _lineage() -> list[dict[str, Any]]:
    events = workflow_run_events(WORKFLOW_RUN, "examples.invoice_intake.workflow:intake",
                                 status="succeeded")
    events += _call("extract-invoice-fields")
    events += _call("extract-invoice-fields")  # same datasets: deduplicated
    events += _call(EVIL, model=EVIL, index=None)
    events += _call("approve-payment", outcome="denied", index="vendors")  # FAIL
    events += _call("unrelated", parent="some-other-run", model="other-model")  # not drawn
    # A hand-written call with an output dataset (run → dataset edge).
    wf_id = events[0]["run"]["runId"]
    events.append({
        "eventType": "COMPLETE", "eventTime": "2026-11-22T04:00:01+00:00",
        "run": {"runId": str(uuid.uuid4()),
                "facets": {"parent": {"run": {"runId": wf_id},
                                      "job": {"namespace": "flyte", "name": "intake"}}}},
        "job": {"namespace": "aios-mesh", "name": "post-ledger"},
        "inputs": [], "outputs": [{"namespace": "erp", "name": "ledger"}],
    })
    return events


CALLS = [
    {"capability": "extract-invoice-fields", "tenant": "acme", "latency_ms": 12.5,
     "cost": 0.0125, "outcome": "ok"},
    {"capability": "extract-invoice-fields", "tenant": "acme", "latency_ms": 80.0,
     "cost": 0.0125, "outcome": "ok"},
    {"capability": "match-vendor", "tenant": "globex", "latency_ms": 3.0, "cost": 0.5,
     "outcome": "ok"},
    {"capability": EVIL, "tenant": EVIL, "latency_ms": 1500.0, "cost": 0.25,
     "outcome": "error"},
    {"capability": "match-vendor", "tenant": "globex", "latency_ms": 0.0, "cost": 0.0,
     "outcome": "denied"},
]
INVOICES = [
    {"invoice": "acme-0001", "tenant": "acme", "route": "auto", "amount": 10.0,
     "currency": "USD", "correct": True},
    {"invoice": "acme-0002", "tenant": "acme", "route": "human", "amount": None,
     "currency": None, "correct": None},
    {"invoice": "acme-0003", "tenant": "acme", "route": "auto", "amount": 5.0,
     "currency": "EUR", "correct": True},
    {"invoice": "acme-0004", "tenant": "acme", "route": "denied", "amount": 1.0,
     "currency": "USD", "correct": False},
    {"invoice": "globex-0001", "tenant": "globex", "route": "exception", "amount": None,
     "currency": None, "correct": None},
    {"invoice": "evil-1", "tenant": EVIL, "route": "auto", "amount": 2.0, "currency": "GBP",
     "correct": True},
]
SUMMARY = [("Invoices", "6"), ("Automation rate", "50.0%"), (EVIL, "<b>bold</b>")]


def _write(tmp_path: Path, **overrides: Any) -> str:
    kwargs: dict[str, Any] = {"title": f"Invoice intake {EVIL}", "summary": SUMMARY,
                              "calls": CALLS, "invoices": INVOICES, "lineage": _lineage()}
    kwargs.update(overrides)
    target = tmp_path / "nested" / "dir" / "report.html"
    written = write_report(target, **kwargs)
    assert written == target
    assert not [p for p in target.parent.iterdir() if p != target]  # no temp file left
    return target.read_text(encoding="utf-8")


def test_report_is_escaped_self_contained_and_well_formed(tmp_path: Path) -> None:
    html = _write(tmp_path)
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    assert "<b>bold</b>" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html
    roots = _svgs(html)
    assert {c for r in roots for c in (r.get("class") or "").split()} >= {
        "latency", "cost", "automation", "lineage"}
    # The summary, in order.
    rows = re.findall(r'<table class="summary">.*?</table>', html, flags=re.S)[0]
    assert rows.index("Invoices") < rows.index("Automation rate") < rows.index("&lt;script&gt;")


def test_cost_per_tenant(tmp_path: Path) -> None:
    html = _write(tmp_path)
    cost = _chart(_svgs(html), "cost")
    bars = _by_class(cost, "cost-bar")
    assert sorted(b.get("data-tenant") or "" for b in bars) == sorted(["acme", "globex", EVIL])
    labels = {t.text for t in cost.iter(f"{SVG_NS}text")}
    assert {"$0.0250", "$0.5000", "$0.2500"} <= labels
    table = re.findall(r'<table class="cost">.*?</table>', html, flags=re.S)[0]
    assert "$0.0063" in table  # acme: 0.025 / 4 invoices (0.00625 rounds to even)
    assert "$0.5000" in table  # globex: 0.5 / 1 invoice
    assert "$0.1292" in table  # all: 0.775 / 6


def test_automation_bars(tmp_path: Path) -> None:
    html = _write(tmp_path)
    chart = _chart(_svgs(html), "automation")
    segs = _by_class(chart, "route-seg")
    per_tenant: dict[str, list[str]] = {}
    for seg in segs:
        per_tenant.setdefault(seg.get("data-tenant") or "", []).append(seg.get("data-route") or "")
    assert per_tenant == {"acme": ["auto", "human", "denied"], "globex": ["exception"],
                          EVIL: ["auto"]}
    labels = {t.text for t in chart.iter(f"{SVG_NS}text")}
    assert {"50.0%", "25.0%", "100.0%"} <= labels
    assert "Overall automation rate: <strong>50.0%</strong>" in html


def test_latency_series_and_percentiles(tmp_path: Path) -> None:
    html = _write(tmp_path)
    chart = _chart(_svgs(html), "latency")
    assert len(_by_class(chart, "p50")) == 3 == len(_by_class(chart, "p95"))
    assert len(_by_class(chart, "point")) == len(CALLS)
    assert "46.2 ms" in html  # extract p50 = (12.5 + 80) / 2
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)


def test_lineage_graph_nodes(tmp_path: Path) -> None:
    html = _write(tmp_path)
    graph = _chart(_svgs(html), "lineage")
    runs = _by_class(graph, "lineage-run")
    kinds = [r.get("data-kind") for r in runs]
    assert kinds.count("workflow") == 1
    # one node per capability: extract (2 runs), EVIL, approve-payment, post-ledger
    calls = {r.get("data-job"): r for r in runs if r.get("data-kind") == "call"}
    assert len(calls) == 4
    assert sorted(int(r.get("data-runs")) for r in calls.values()) == [1, 1, 1, 2]
    states = {r.get("data-state") for r in calls.values()}
    assert "FAIL" in states and "COMPLETE" in states
    datasets = {(d.get("data-namespace"), d.get("data-name"))
                for d in _by_class(graph, "lineage-dataset")}
    assert len(_by_class(graph, "lineage-dataset")) == len(datasets) == 4
    assert datasets == {("mlflow", "invoice-extractor/3"), ("qdrant", "vendors"),
                        ("mlflow", f"{EVIL}/3"), ("erp", "ledger")}
    assert len(_by_class(graph, "edge-parent")) == 4
    assert len(_by_class(graph, "edge-output")) == 1
    assert len(_by_class(graph, "edge-input")) == 2 + 1 + 2


def test_lineage_caps_call_nodes(tmp_path: Path) -> None:
    events = workflow_run_events(WORKFLOW_RUN, "wf", status="failed")
    for i in range(90):
        events += _call(f"cap-{i % 45}")
    graph = _chart(_svgs(_write(tmp_path, lineage=events)), "lineage")
    calls = [r for r in _by_class(graph, "lineage-run") if r.get("data-kind") == "call"]
    assert len(calls) == 40 and all(r.get("data-runs") == "2" for r in calls)
    assert "+5 more capabilities" in {t.text for t in graph.iter(f"{SVG_NS}text")}
    (workflow,) = [r for r in _by_class(graph, "lineage-run") if r.get("data-kind") == "workflow"]
    assert workflow.get("data-state") == "FAIL"


def test_empty_inputs(tmp_path: Path) -> None:
    html = _write(tmp_path, summary=[], calls=[], invoices=[], lineage=[])
    assert "no lineage events" in html
    assert "no calls recorded" in html
    assert "no invoices processed" in html
    assert _svgs(html) == []
    # Calls missing but invoices present: cost table still has one row per tenant.
    html = _write(tmp_path, calls=[], lineage=[])
    bars = _by_class(_chart(_svgs(html), "cost"), "cost-bar")
    assert len(bars) == 3


def test_svg_primitives_escape() -> None:
    doc = svg.document(10, 10, [svg.text(1, 2, EVIL, title=EVIL),
                                svg.rect(0, 0, -5, 3, title=EVIL, data_x=EVIL)],
                       label=EVIL)
    root = ET.fromstring(doc)
    assert root.find(f"{SVG_NS}text") is not None
    assert "<script>" not in doc
    assert svg.log_ticks(1, 100) == [1, 2, 5, 10, 20, 50, 100]
    assert svg.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.Scale(1, 100, 0, 200, log=True)(10) == pytest.approx(100)
