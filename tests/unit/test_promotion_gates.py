"""Gated promotion (issue 19, item 2): a candidate becomes the champion only when the
capability's declared gates pass against the champion — quality on a labelled set (the
reviewers' verdicts by default), agreement on shadow traffic under the capability's own
comparison, latency and cost ratios. The report goes to the audit log and onto the
candidate's model version either way; a forced promotion says so."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.capabilities import Canary
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.errors import ConfigError, InvalidInput
from aios_mesh.lifecycle.agreement import agreement_of
from aios_mesh.lifecycle.evaluation import Example, examples_from_jsonl
from aios_mesh.lifecycle.gates import PromotionGates, VersionEvidence, judge
from aios_mesh.rollout import GateFailed, RolloutBusy, promote, rollout_lock


class Invoice(BaseModel):
    text: str


class Fields(BaseModel):
    vendor: str
    total: float
    note: str = ""


def same_invoice(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Vendor and total decide; the free-text note does not."""
    return a["vendor"] == b["vendor"] and abs(a["total"] - b["total"]) < 0.01


def overjoyed(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    return 2.0  # not a score in [0, 1]


def truth(text: str) -> dict[str, Any]:
    vendor, total = text.split(":")
    return {"vendor": vendor, "total": float(total), "note": ""}


def good(item: dict[str, Any]) -> dict[str, Any]:
    return truth(item["text"])


def chatty(item: dict[str, Any]) -> dict[str, Any]:
    return {**truth(item["text"]), "note": "reformatted"}  # right, in other words


def wrong_total(item: dict[str, Any]) -> dict[str, Any]:
    return {**truth(item["text"]), "total": 0.0}


EXAMPLES = [Example({"text": f"V{i % 7}:{i}.5"}, truth(f"V{i % 7}:{i}.5")) for i in range(30)]


def world(tmp_path: Path, candidate: Any, **spec_kw: Any) -> tuple[Mesh, MemoryRegistry]:
    serving = InProcessServing()
    registry = MemoryRegistry()
    for version, fn in (("1", good), ("2", candidate)):
        serving.register_function("extractor", version, fn)
    spec = CapabilitySpec(name="extract-fields", input=Invoice, output=Fields,
                          model="extractor@champion", agreement=f"{__name__}:same_invoice",
                          **spec_kw)
    config = config_from_mapping({"state_dir": str(tmp_path), "tenants": {"acme": {}},
                                  "telemetry": {"lineage": False, "decision_events": False}})
    mesh = Mesh(config, capabilities=[spec], adapters={"serving": serving,
                                                         "registry": registry})
    for _ in ("1", "2"):
        mesh.run_sync(registry.register("extractor", "inprocess:extractor"))
    mesh.run_sync(registry.set_alias("extractor", "champion", "1"))
    return mesh, registry


def audit(mesh: Mesh, kind: str) -> list[dict[str, Any]]:
    return [e.record for e in mesh.run_sync(mesh.ports.audit.read())
            if e.record.get("kind") == kind]


def test_a_candidate_that_passes_its_gates_is_promoted_with_its_report(tmp_path: Path) -> None:
    gates = PromotionGates(min_quality=0.95, max_quality_drop=0.0, min_samples=20)
    mesh, registry = world(tmp_path, chatty, gates=gates)
    with mesh:
        change = mesh.run_sync(promote(mesh, "extract-fields", version="2", actor="ana",
                                       examples=EXAMPLES))
        assert (change.from_version, change.to_version) == ("1", "2")
        assert mesh.run_sync(registry.resolve("extractor@champion")).version == "2"
        [report] = audit(mesh, "promotion_gate")
        # "chatty" words its answers differently: equal under the capability's comparison
        assert report["passed"] and report["candidate"]["quality"] == 1.0
        assert report["champion"]["version"] == "1" and report["candidate"]["samples"] == 30
        assert {r["gate"] for r in report["results"]} == {"min_quality", "max_quality_drop"}
        assert report["actor"] == "ana" and report["forced"] is False
        stored = mesh.run_sync(registry.get_document("extractor", "2", "promotion.gate"))
        assert stored is not None and stored["passed"] is True
        assert audit(mesh, "alias_change")[-1]["to_version"] == "2"


def test_a_worse_candidate_is_refused_and_the_alias_stays(tmp_path: Path) -> None:
    gates = PromotionGates(min_quality=0.9, min_samples=20)
    mesh, registry = world(tmp_path, wrong_total, gates=gates)
    with mesh:
        with pytest.raises(GateFailed) as refused:
            mesh.run_sync(promote(mesh, "extract-fields", version="2", examples=EXAMPLES))
        assert "min_quality" in refused.value.message and "observed 0.0" in refused.value.message
        assert "--force" in (refused.value.hint or "")
        assert mesh.run_sync(registry.resolve("extractor@champion")).version == "1"
        assert audit(mesh, "alias_change") == []
        [report] = audit(mesh, "promotion_gate")
        assert report["passed"] is False
        # an operator may override; the audit log says it was forced
        mesh.run_sync(promote(mesh, "extract-fields", version="2", examples=EXAMPLES,
                              force=True, actor="ops"))
        assert mesh.run_sync(registry.resolve("extractor@champion")).version == "2"
        forced = audit(mesh, "promotion_gate")[-1]
        assert forced["forced"] is True and forced["passed"] is False


def test_shadow_agreement_uses_the_capabilitys_comparison(tmp_path: Path) -> None:
    gates = PromotionGates(min_agreement=0.99, min_samples=10)
    mesh, _ = world(tmp_path, chatty, gates=gates,
                    canary=Canary(model="extractor/2", shadow=True))
    with mesh:
        for example in EXAMPLES[:12]:
            mesh.invoke("extract-fields", example.input, tenant="acme")
        assert mesh.flush()
        # equality would say 0 % (every note differs); the capability's comparison: 100 %
        mesh.run_sync(promote(mesh, "extract-fields", version="2", examples=[]))
        [report] = audit(mesh, "promotion_gate")
        assert report["shadow_calls"] == 12 and report["shadow_agreement"] == 1.0


def test_thin_evidence_fails_the_gate_that_needs_it(tmp_path: Path) -> None:
    gates = PromotionGates(min_quality=0.5, min_agreement=0.5, min_samples=50)
    mesh, _ = world(tmp_path, good, gates=gates)
    with mesh, pytest.raises(GateFailed) as refused:
        mesh.run_sync(promote(mesh, "extract-fields", version="2", examples=EXAMPLES))
    assert "30 labelled examples < min_samples 50" in refused.value.message
    assert "0 shadow comparisons < min_samples 50" in refused.value.message


def test_the_reviewers_verdicts_are_the_default_labelled_set(tmp_path: Path) -> None:
    gates = PromotionGates(min_quality=1.0, min_samples=4)
    # no confidence comes with the champion's answers: each one goes to a reviewer
    mesh, _ = world(tmp_path, wrong_total, gates=gates, review_threshold=0.5)
    with mesh:
        texts = ["A:1.0", "B:2.0", "C:3.0", "D:4.0", "E:5.0"]
        results = [mesh.invoke("extract-fields", {"text": t}, tenant="acme") for t in texts]
        assert all(r.needs_review for r in results)
        for r in results[:4]:  # approved as proposed, or corrected
            mesh.resolve_review(r.review_id or "", approve=True, reviewer="rita")
        mesh.resolve_review(results[4].review_id or "", approve=False, reviewer="rita")
        with pytest.raises(GateFailed):
            mesh.run_sync(promote(mesh, "extract-fields", version="2"))
        [report] = audit(mesh, "promotion_gate")
        # four verdicts with an answer (a rejection says what is wrong, not what is right)
        assert report["evaluation_set"] == "reviews" and report["candidate"]["samples"] == 4
        assert report["champion"]["quality"] == 1.0 and report["candidate"]["quality"] == 0.0


def test_a_promote_while_a_compare_runs_is_refused(tmp_path: Path) -> None:
    mesh, _ = world(tmp_path, good, gates=PromotionGates(min_quality=0.1, min_samples=1))
    with mesh, rollout_lock(mesh, "extract-fields"), pytest.raises(RolloutBusy) as busy:
        mesh.run_sync(promote(mesh, "extract-fields", version="2", examples=EXAMPLES))
    assert busy.value.retryable and "wait" in (busy.value.hint or "")


def test_gates_name_only_known_metrics_and_at_least_one() -> None:
    with pytest.raises(ValidationError, match="extra"):
        PromotionGates(min_acurracy=0.9)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="at least one"):
        PromotionGates(min_samples=5)
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        PromotionGates(min_quality=1.5)


def test_latency_and_cost_are_judged_as_ratios_to_the_champion() -> None:
    gates = PromotionGates(max_latency_ratio=1.2, max_cost_ratio=1.0, min_samples=10)
    champion = VersionEvidence("1", 50, 0.9, p95_ms=10.0, mean_cost=0.002)
    slow = VersionEvidence("2", 50, 0.9, p95_ms=15.0, mean_cost=0.002)
    free = VersionEvidence("2", 50, 0.9, p95_ms=11.0, mean_cost=0.0)
    results = {r.gate: r for r in judge(gates, champion, slow, shadow_calls=0,
                                        shadow_agreement=None)}
    assert not results["max_latency_ratio"].passed and results["max_latency_ratio"].observed == 1.5
    assert results["max_cost_ratio"].passed
    assert all(r.passed for r in judge(gates, champion, free, shadow_calls=0,
                                       shadow_agreement=None))


def test_an_agreement_function_must_score_between_0_and_1() -> None:
    spec = CapabilitySpec(name="x", input=Invoice, output=Fields, model="m@a",
                          agreement=f"{__name__}:overjoyed")
    with pytest.raises(ConfigError, match=r"returned 2\.0") as bad:
        agreement_of(spec)({"vendor": "a"}, {"vendor": "a"})
    assert "score between 0 and 1" in (bad.value.hint or "")
    with pytest.raises(ValidationError, match="import path"):
        CapabilitySpec(name="x", input=Invoice, output=Fields, model="m@a", agreement="nope")


def test_a_jsonl_labelled_set_and_the_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": {"text": "A:1"}, "expected": {"vendor": "A", "total": 1}}\n'
                   '{"input": "oops"}\n')
    with pytest.raises(InvalidInput, match=r"line 2 of bad\.jsonl"):
        examples_from_jsonl(bad)
    good_set = tmp_path / "golden.jsonl"
    good_set.write_text("".join(
        orjson.dumps({"input": e.input, "expected": e.expected}).decode() + "\n"
        for e in EXAMPLES))
    assert examples_from_jsonl(good_set) == EXAMPLES
    from aios_mesh.cli import app

    out = CliRunner().invoke(app, ["promote", "--help"])
    assert "--eval" in out.output and "--force" in out.output
