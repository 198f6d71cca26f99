"""Automatic rollback (issue 19, item 6): a canary whose quality against the reviewers'
labels, error rate, latency or drift breaches its capability's gates is rolled back by
moving its alias back to the champion's version — recorded with the evidence, announced as
an event — while a good canary is left alone."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.capabilities import Canary
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.lifecycle.gates import PromotionGates
from aios_mesh.lifecycle.rollback import ROLLBACK_TOPIC, AutoRollback


class Invoice(BaseModel):
    text: str


class Fields(BaseModel):
    vendor: str
    total: float


def truth(text: str) -> dict[str, Any]:
    vendor, total = text.split(":")
    return {"vendor": vendor, "total": float(total)}


def good(item: dict[str, Any]) -> dict[str, Any]:
    return truth(item["text"])


def wrong(item: dict[str, Any]) -> dict[str, Any]:
    return {**truth(item["text"]), "total": -1.0}


def broken(item: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("the candidate crashed")


def world(tmp_path: Path, candidate: Any, gates: PromotionGates, *,
          canary: str = "extractor@challenger", percent: float = 50.0,
          review: bool = True, champion: Any = good) -> Mesh:
    serving = InProcessServing()
    registry = MemoryRegistry()
    serving.register_function("extractor", "1", champion)
    serving.register_function("extractor", "2", candidate)
    spec = CapabilitySpec(name="extract-fields", input=Invoice, output=Fields,
                          model="extractor@champion", gates=gates,
                          canary=Canary(model=canary, percent=percent),
                          review_threshold=0.5 if review else None)
    config = config_from_mapping({"state_dir": str(tmp_path), "tenants": {"acme": {}},
                                  "telemetry": {"lineage": False, "decision_events": False}})
    mesh = Mesh(config, capabilities=[spec], adapters={"serving": serving,
                                                         "registry": registry})
    for _ in ("1", "2"):
        mesh.run_sync(registry.register("extractor", "inprocess:extractor"))
    mesh.run_sync(registry.set_alias("extractor", "champion", "1"))
    mesh.run_sync(registry.set_alias("extractor", "challenger", "2"))
    return mesh


def guard_of(mesh: Mesh) -> AutoRollback:
    found = next(p for p in mesh.recorder.processors if p.name == "auto-rollback")
    assert isinstance(found, AutoRollback)
    return found


def traffic(mesh: Mesh, calls: int, *, review: bool = True) -> dict[str, int]:
    """Calls, each reviewed at once by a reviewer who knows the truth; counts the calls the
    candidate (version 2) answered."""
    answered = {"candidate": 0, "errors": 0}
    for i in range(calls):
        text = f"V{i % 11}:{i}.25"
        try:
            result = mesh.invoke("extract-fields", {"text": text}, tenant="acme")
        except Exception:
            answered["errors"] += 1
            answered["candidate"] += 1
            continue
        if (result.record.model or {}).get("version") == "2":
            answered["candidate"] += 1
        if review and result.review_id:
            right = result.output is not None and result.output.model_dump() == truth(text)
            mesh.resolve_review(result.review_id, approve=True, reviewer="rita",
                                output=None if right else truth(text))
        guard_of(mesh).flush(5.0)  # the check runs off the caller's path; let it land
    return answered


def rollbacks(mesh: Mesh) -> list[dict[str, Any]]:
    return [e.record for e in mesh.run_sync(mesh.ports.audit.read())
            if e.record.get("action") == "auto_rollback"]


def test_an_always_wrong_canary_is_rolled_back_on_the_reviewers_labels(tmp_path: Path) -> None:
    mesh = world(tmp_path, wrong, PromotionGates(min_quality=0.9, min_samples=5))
    with mesh:
        counts = traffic(mesh, 120)
        [entry] = rollbacks(mesh)
        assert (entry["alias"], entry["from_version"], entry["to_version"]) == \
            ("challenger", "2", "1")
        [evidence] = entry["evidence"]
        assert evidence["gate"] == "min_quality" and evidence["observed"] == 0.0
        assert evidence["p_value"] < 1e-5
        assert mesh.run_sync(mesh.ports.registry.resolve("extractor@challenger")).version == "1"
        # the candidate answered only until the evidence was in (checks every 10 of its calls)
        assert 10 <= counts["candidate"] <= 30
        assert entry["canary_calls"] == counts["candidate"]

        async def announced() -> list[Any]:
            assert await asyncio.to_thread(mesh.flush)
            sub = await mesh.ports.events.subscribe(ROLLBACK_TOPIC, group="test")
            got = await sub.fetch(10, timeout=0.5)
            await sub.aclose()
            return got

        [event] = mesh.run_sync(announced())
        assert event.event.data["evidence"] == entry["evidence"]


def half_wrong(item: dict[str, Any]) -> dict[str, Any]:
    """A model that is right on every other question (a hard slice of traffic)."""
    number = int(item["text"].split(":")[1].split(".")[0])
    return good(item) if number % 2 else wrong(item)


def test_on_a_hard_slice_the_canary_is_judged_against_the_primary(tmp_path: Path) -> None:
    """Reviewers see the unsure calls, where even the champion is often wrong: an absolute
    floor would roll back a canary as good as the champion; the drop against the primary on
    the same slice does not, and still catches a worse one."""
    same = world(tmp_path / "same", half_wrong,
                 PromotionGates(max_quality_drop=0.1, min_samples=10), champion=half_wrong)
    with same:
        traffic(same, 160)
        assert rollbacks(same) == []
    worse = world(tmp_path / "worse", wrong,
                  PromotionGates(max_quality_drop=0.1, min_samples=10), champion=half_wrong)
    with worse:
        traffic(worse, 160)
        [entry] = rollbacks(worse)
        [evidence] = entry["evidence"]
        # the primary keeps about half its proposals on this slice, the canary none
        assert evidence["gate"] == "max_quality_drop" and 0.3 < evidence["observed"] < 0.7
        assert evidence["samples"] >= 10  # min_samples labelled canary calls first


def test_a_good_canary_stays(tmp_path: Path) -> None:
    mesh = world(tmp_path, good, PromotionGates(min_quality=0.9, max_error_rate=0.05,
                                                min_samples=5))
    with mesh:
        counts = traffic(mesh, 150)
        assert counts["candidate"] > 40  # it was watched through many checks
        assert rollbacks(mesh) == []
        assert mesh.run_sync(mesh.ports.registry.resolve("extractor@challenger")).version == "2"


def test_a_failing_canary_is_rolled_back_on_its_error_rate(tmp_path: Path) -> None:
    mesh = world(tmp_path, broken, PromotionGates(max_error_rate=0.05, min_samples=5),
                 review=False)
    with mesh:
        traffic(mesh, 80, review=False)
        [entry] = rollbacks(mesh)
        assert entry["evidence"][0]["gate"] == "max_error_rate"
        assert entry["evidence"][0]["observed"] == 1.0


def test_a_drift_alarm_for_the_canary_version_rolls_it_back(tmp_path: Path) -> None:
    mesh = world(tmp_path, good, PromotionGates(min_quality=0.5, min_samples=5), review=False)
    with mesh:
        traffic(mesh, 6, review=False)
        guard = guard_of(mesh)
        guard.drift_alarm("extract-fields", "1")  # the champion drifting: not the canary
        assert guard.flush(5.0) and rollbacks(mesh) == []
        guard.drift_alarm("extract-fields", "2")
        assert guard.flush(5.0)
        [entry] = rollbacks(mesh)
        assert entry["evidence"][0]["gate"] == "drift"


def test_a_pinned_canary_cannot_move_and_says_so(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    mesh = world(tmp_path, broken, PromotionGates(max_error_rate=0.05, min_samples=5),
                 canary="extractor/2", review=False)
    with caplog.at_level(logging.WARNING, logger="aios_mesh.lifecycle"), mesh:
        traffic(mesh, 40, review=False)
        assert rollbacks(mesh) == []
    assert any("pins a version" in r.getMessage() for r in caplog.records)


def test_capabilities_without_a_canary_cost_one_attribute_read(tmp_path: Path) -> None:
    serving = InProcessServing()
    serving.register_function("extractor", "1", good)
    spec = CapabilitySpec(name="plain", input=Invoice, output=Fields, model="extractor@champion")
    registry = MemoryRegistry()
    config = config_from_mapping({"state_dir": str(tmp_path), "tenants": {"acme": {}},
                                  "telemetry": {"lineage": False, "decision_events": False}})
    with Mesh(config, capabilities=[spec], adapters={"serving": serving,
                                                     "registry": registry}) as mesh:
        mesh.run_sync(registry.register("extractor", "inprocess:extractor"))
        mesh.run_sync(registry.set_alias("extractor", "champion", "1"))
        mesh.invoke("plain", {"text": "A:1"}, tenant="acme")
        guard = guard_of(mesh)
        assert guard.rollbacks == [] and guard.flush(0.1)
