"""The main job's "seeing it" additions: the simulated reviewer (against the corpus's ground
truth, on a real embedded mesh and review queue), the summary's run facts (versions from
the records and the lock file, reason codes per tenant, sample record ids, the drift panel)
and the report sections that show them."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh import Mesh
from aios_mesh.capabilities import capability
from aios_mesh.config import config_from_mapping
from aios_mesh.lockfile import LockFile
from aios_mesh.ports.registry import ModelRef
from aios_mesh.testing.conformance.lineage import sample_record
from examples.invoice_intake.corpus import make_corpus
from examples.invoice_intake.extractor import FIELDS
from examples.invoice_intake.report import render_report
from examples.invoice_intake.reviewer import NOTE, REVIEWER, decide, simulate_reviews
from examples.invoice_intake.run import (
    _reasons,
    _record_of,
    _samples,
    _versions,
    review_reason_code,
)

EVIL = "<script>alert('x')</script>"
CORPUS = {inv.id: inv for inv in make_corpus(12)}


def _truth(invoice: str) -> Any:
    return CORPUS[invoice].truth


def _fields(invoice: str) -> dict[str, Any]:
    truth = _truth(invoice)
    return {name: getattr(truth, name) for name in FIELDS}


# --------------------------------------------------------------------------- decisions
def test_the_reviewer_approves_a_right_proposal_and_corrects_a_wrong_one() -> None:
    invoice = next(iter(CORPUS))
    right = {**_fields(invoice), "confidence": 0.3}
    assert decide("extract-invoice-fields@1", right, {}, _truth(invoice)).verdict == "approved"
    wrong = {**right, "total": (right["total"] or 0) + 1}
    fixed = decide("extract-invoice-fields@1", wrong, {}, _truth(invoice))
    assert (fixed.verdict, fixed.approve) == ("corrected", True)
    assert fixed.output == {**_fields(invoice), "confidence": 0.3}
    vendor = {"vendor_id": "nope", "name": "x", "score": 0.4, "confidence": 0.2}
    matched = decide("match-vendor", vendor, {}, _truth(invoice))
    assert matched.verdict == "corrected" and matched.output is not None
    assert matched.output["vendor_id"] == _truth(invoice).vendor_id
    genuine = {"fields": _fields(invoice), "vendor": {"vendor_id": _truth(invoice).vendor_id}}
    assert decide("route-invoice@1", {"action": "approve"}, genuine,
                  _truth(invoice)).verdict == "approved"
    misread = {**genuine, "fields": {**_fields(invoice), "currency": "XXX"}}
    rejected = decide("route-invoice@1", {"action": "approve"}, misread, _truth(invoice))
    assert (rejected.verdict, rejected.approve) == ("rejected", False)


class Text(BaseModel):
    invoice: str
    wrong: bool = False


class Fields(BaseModel):
    vendor_name: str | None = None
    invoice_number: str | None = None
    invoice_date: str | None = None
    currency: str | None = None
    total: float | None = None
    confidence: float | None = None


@capability("extract-invoice-fields", review_threshold=0.5)
def extract_fields(payload: Text) -> Fields:
    """The corpus's true fields (a wrong total when asked), always unsure: parked."""
    truth = CORPUS[payload.invoice].truth
    fields = {name: getattr(truth, name) for name in FIELDS}
    if payload.wrong:
        fields["total"] = (fields["total"] or 0) + 10
    return Fields(**fields, confidence=0.2)


def test_simulated_reviews_decide_half_the_queue_at_most_through_the_real_queue(
        tmp_path: Path) -> None:
    mesh = Mesh(config_from_mapping({"state_dir": str(tmp_path), "tenants": {"acme": {}},
                                     "telemetry": {"lineage": False,
                                                   "decision_events": False}}),
                capabilities=[extract_fields])
    with mesh:
        items = []
        for i, invoice in enumerate(sorted(CORPUS)[:8]):
            result = mesh.invoke("extract-invoice-fields",
                                 {"invoice": invoice, "wrong": i % 2 == 1}, tenant="acme")
            assert result.review_id is not None
            items.append({"invoice": invoice, "tenant": "acme", "route": "human",
                          "review": {"id": result.review_id, "status": "pending"}})
        truth = {k: v.truth for k, v in CORPUS.items()}
        summary = simulate_reviews(mesh, items, truth, sample=6)
        assert summary["simulated"] and summary["reviewer"] == REVIEWER
        assert (summary["waiting"], summary["decided"]) == (8, 4)  # half of 8, under 6
        assert summary["by_capability"] == {"extract-invoice-fields": {"approved": 2,
                                                                       "corrected": 2}}
        queue = mesh.review_queue()
        labels = queue.labels()
        assert len(labels) == 4 and {lb.labelled_by for lb in labels} == {REVIEWER}
        assert len(queue.list("pending")) == 4
        decided = [i for i in items if i["review"]["status"] != "pending"]
        # the first four invoices in invoice order: the same ones on every run
        assert [i["invoice"] for i in decided] == sorted(CORPUS)[:4]
        assert all(queue.get(i["review"]["id"]).note == NOTE for i in decided)
        audit = mesh.run_sync(mesh.ports.audit.read())
        entries = [e.record for e in audit if e.record.get("kind") == "review_decision"]
        assert len(entries) == 4 and {e["reviewer"] for e in entries} == {REVIEWER}
        assert simulate_reviews(mesh, items, truth, sample=0)["decided"] == 0


# --------------------------------------------------------------------------- summary facts
def _record(outcome: str, tenant: str = "acme", **kw: Any) -> Any:
    doc = sample_record(record_id=str(uuid.uuid4()), outcome=outcome, tenant=tenant,
                        capability={"name": "route-invoice", "version": "1"}, **kw)
    return _record_of(doc)


def test_versions_come_from_the_records_and_the_lock_file(tmp_path: Path) -> None:
    lock = tmp_path / "aios-mesh.lock"
    LockFile(models={"invoice-extractor@champion": ModelRef(
        "invoice-extractor", "3", source="file:///secret/path", alias="champion",
        tags={"aios_mesh.tracking_uri": "http://user:pw@host"})},
        indexes={"vendors": "snap-1"}).write(lock)
    records = [_record("ok", model={"name": "invoice-extractor", "version": "3",
                                    "alias": "champion"},
                       index_snapshots={"vendors": "snap-1"}) for _ in range(2)]
    records.append(_record("ok", model={"name": "invoice-extractor", "version": "4"},
                           prompt={"name": "brief", "version": "2", "alias": "champion"},
                           index_snapshots={}))
    got = _versions(records, lock)
    assert got["models"] == [
        {"name": "invoice-extractor", "version": "3", "alias": "champion", "calls": 2},
        {"name": "invoice-extractor", "version": "4", "alias": None, "calls": 1}]
    assert got["prompts"] == [{"name": "brief", "version": "2", "alias": "champion",
                               "calls": 1}]
    assert got["indexes"] == [{"collection": "vendors", "snapshot": "snap-1", "calls": 2}]
    assert got["lock"]["models"] == {"invoice-extractor@champion": {
        "name": "invoice-extractor", "version": "3", "alias": "champion"}}
    assert "secret" not in str(got) and "pw@" not in str(got)  # no source URI, no tags
    assert _versions([], None)["lock"] == {}


def test_reason_codes_per_tenant_and_samples_per_route() -> None:
    denied = _record("denied", tenant="globex", policy={
        "allow": False, "reason_code": None,
        "checks": [{"allow": True, "reason_code": None},
                   {"allow": False, "reason_code": "currency_not_accepted"}]})
    parked = [_record("review", review_id=f"r{i}", policy={"allow": True}) for i in range(3)]
    coded = _record("review", review_id="r9", policy={"reason_code": "amount_over_limit"})
    reasons = {"r0": "confidence 0.100 below 0.35", "r1": "policy obligation require_human",
               "r2": "paused: INC-1"}
    got = _reasons([denied, *parked, coded, _record("ok")], reasons)
    assert got == {"review": {"acme": {"amount_over_limit": 1, "low_confidence": 1,
                                       "paused": 1, "policy_require_human": 1}},
                   "denied": {"globex": {"currency_not_accepted": 1}}}
    assert review_reason_code("fallback chain ended in human review") == "fallback_to_human"
    items = [{"invoice": f"i{n:02d}", "tenant": "acme", "route": "auto" if n % 3 else "human",
              "records": [f"a{n}", f"b{n}"]} for n in range(20, 0, -1)]
    samples = _samples(items, k=2)
    assert samples == {"auto": [{"invoice": "i01", "tenant": "acme", "record_id": "b1"},
                                {"invoice": "i02", "tenant": "acme", "record_id": "b2"}],
                       "human": [{"invoice": "i03", "tenant": "acme", "record_id": "b3"},
                                 {"invoice": "i06", "tenant": "acme", "record_id": "b6"}]}


# --------------------------------------------------------------------------- report
def _render(**kw: Any) -> str:
    return render_report(title="t", summary=[], calls=[], invoices=[], lineage=[], **kw)


ALARM = {"alarm_id": "a1", "at": "2026-12-07T10:00:00+00:00", "capability": EVIL,
         "model": "invoice-extractor", "model_version": "3", "calls": 800, "window": 300,
         "per_test_alpha": 1e-6, "features_tested": 20, "worst_feature": "input.text.length",
         "worst_effect": 0.41,
         "drifted": [{"feature": "input.text.length", "kind": "numeric", "test": "ks",
                      "statistic": 0.5, "p_value": 1e-9, "effect": 0.41},
                     {"feature": EVIL, "kind": "categorical", "test": "chi2",
                      "statistic": 80.0, "p_value": 1e-8, "effect": 0.3}]}


def test_report_shows_run_versions_reasons_samples_and_drift() -> None:
    html = _render(
        run={"date": "2026-12-07T10:00:00+00:00", "profile": "embedded", "invoices": 90,
             "state": "/tmp/s"},
        versions={"models": [{"name": EVIL, "version": "3", "alias": "champion",
                              "calls": 90}],
                  "prompts": [], "indexes": [{"collection": "vendors", "snapshot": "s-1",
                                              "calls": 87}],
                  "lock": {"file": "aios-mesh.lock", "created_at": "2026-12-07",
                           "models": {"x@champion": {"name": "x", "version": "3"}},
                           "prompts": {}, "indexes": {"vendors": "s-1"}}},
        reasons={"review": {"acme": {"low_confidence": 2}}, "denied": {}},
        samples={"auto": [{"invoice": "acme-0001", "tenant": "acme", "record_id": "rec-1"}]},
        reviewer={"simulated": True, "reviewer": REVIEWER, "decided": 4, "waiting": 8},
        quality={"labels": 4, "versions": []}, drift={"monitor": "on", "alarms": [ALARM]})
    assert "<script" not in html and "&lt;script&gt;" in html
    for section in ("run", "reasons", "samples", "drift"):
        assert f'<section id="{section}">' in html
    assert html.index('id="run"') < html.index('id="summary"')
    assert "2026-12-07T10:00:00+00:00" in html and "embedded" in html
    assert "low_confidence" in html and "no denied calls" in html and "rec-1" in html
    assert "Simulated reviewer" in html  # the quality labels say where they come from
    (chart,) = [ET.fromstring(b) for b in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
                if 'class="chart drift"' in b]
    bars = [el for el in chart.iter() if "drift-bar" in (el.get("class") or "")]
    assert len(bars) == 2
    widths = [float(b.get("width") or 0) for b in bars]
    assert widths[0] > widths[1] > 0  # sorted by effect, drawn to scale


@pytest.mark.parametrize("drift", [None, {"monitor": "off", "alarms": []}])
def test_report_says_when_the_drift_monitor_is_off(drift: Any) -> None:
    html = _render(drift=drift)
    assert "drift monitor off" in html
    assert "drift monitor on: no alarm" in _render(drift={"monitor": "on", "alarms": []})
