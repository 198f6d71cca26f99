"""SLO contracts that route (issue 19, item 5): each call goes to the cheapest candidate
backend that currently meets the capability's SLO; when one degrades, traffic moves and the
audit log says why; a breached backend is probed and taken back once it recovers; an SLO no
candidate can meet gets a typed, recorded outcome and the burn-rate alert fires.

Latency is simulated on a fake clock that each backend advances, so the routing decisions
are deterministic (no timing in the assertions)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.capabilities import SLO, Candidate, Price
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.lifecycle.slo import SLO_TOPIC, BurnWindow, SLORouter, SLOUnattainable


class Q(BaseModel):
    text: str


class A(BaseModel):
    text: str


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    """An in-process backend whose answers take ``ms`` on the fake clock."""

    def __init__(self, clock: Clock, ms: float) -> None:
        self.clock, self.ms, self.calls = clock, ms, 0

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        self.clock.now += self.ms / 1000.0
        return {"text": item["text"]}


def world(tmp_path: Path, *, slo: SLO, burn: tuple[BurnWindow, ...] = (), **spec_kw: Any
          ) -> tuple[Mesh, SLORouter, Clock, Backend, Backend]:
    clock = Clock()
    cheap, dear = Backend(clock, 5), Backend(clock, 8)
    registry = MemoryRegistry()
    spec = CapabilitySpec(name="echo", input=Q, output=A, model="m@champion", slo=slo,
                          price=Price(per_call=0.002),
                          candidates=(Candidate(serving="cheap", price=Price(per_call=0.001)),
                                      Candidate(serving="dear", price=Price(per_call=0.003))),
                          **spec_kw)
    config = config_from_mapping({"state_dir": str(tmp_path), "tenants": {"acme": {}},
                                  "telemetry": {"lineage": False, "decision_events": False}})
    holder: list[Mesh] = []
    router = SLORouter(lambda: holder[0].ports.audit, lambda t, e: holder[0].publish(t, e),
                       window_s=10.0, min_calls=10, probe_s=1.0, clock=clock,
                       burn_windows=burn,
                       quality=lambda c, v: holder[0].live_quality.accuracy(c, v))
    mesh = Mesh(config, capabilities=[spec], adapters={"registry": registry},
                admission=[router])
    holder.append(mesh)
    for name, backend in (("cheap", cheap), ("dear", dear)):
        serving = InProcessServing()
        serving.register_function("m", "1", backend)
        mesh.ports.add_serving(name, serving)
    mesh.run_sync(registry.register("m", "inprocess:m"))
    mesh.run_sync(registry.set_alias("m", "champion", "1"))
    return mesh, router, clock, cheap, dear


def calls(mesh: Mesh, clock: Clock, n: int, *, gap_s: float = 0.05) -> list[Any]:
    out = []
    for i in range(n):
        clock.now += gap_s
        out.append(mesh.invoke("echo", {"text": f"q{i}"}, tenant="acme"))
    return out


def audit(mesh: Mesh, kind: str) -> list[dict[str, Any]]:
    return [e.record for e in mesh.run_sync(mesh.ports.audit.read())
            if e.record.get("kind") == kind]


def test_calls_go_to_the_cheapest_candidate_that_meets_the_slo(tmp_path: Path) -> None:
    mesh, _, clock, cheap, dear = world(tmp_path, slo=SLO(p95_ms=50))
    with mesh:
        results = calls(mesh, clock, 30)
        assert (cheap.calls, dear.calls) == (30, 0)
        record = results[-1].record
        assert record.serving == "cheap" and record.cost == 0.001  # the candidate's price
        assert record.route == {"backend": "cheap", "slo_met": True}
        assert record.to_dict()["route"] == record.route
        assert audit(mesh, "slo_route") == []


def test_a_degrading_backend_loses_its_traffic_and_wins_it_back(tmp_path: Path) -> None:
    mesh, router, clock, cheap, dear = world(tmp_path, slo=SLO(p95_ms=50))
    with mesh:
        calls(mesh, clock, 30)
        cheap.ms = 120  # the cheap backend degrades mid-run
        began = clock.now
        calls(mesh, clock, 200)
        slow_on_cheap = cheap.calls - 30
        # a couple of slow answers breach the p95, then only probes (one per second) go there
        assert slow_on_cheap <= 3 + (clock.now - began) / 1.0 + 1
        assert dear.calls >= 180
        [shift] = audit(mesh, "slo_route")
        assert (shift["from"], shift["to"], shift["slo_met"]) == ("cheap", "dear", True)
        assert "cheap breached: p95" in shift["reason"]
        assert {c["backend"]: c["meets"] for c in shift["candidates"]} == \
            {"cheap": False, "dear": True}
        cheap.ms = 5  # it recovers: probes see it, the slow answers age out of the window
        calls(mesh, clock, 400)
        assert [s["to"] for s in audit(mesh, "slo_route")] == ["dear", "cheap"]
        assert router.shifts[-1]["to"] == "cheap"


def test_a_candidate_over_the_cost_limit_is_not_chosen(tmp_path: Path) -> None:
    mesh, _, clock, cheap, dear = world(tmp_path, slo=SLO(p95_ms=50, max_cost=0.002))
    with mesh:
        cheap.ms = 120
        results = calls(mesh, clock, 60)
        assert dear.calls == 0  # too expensive, whatever the latency
        assert results[-1].record.route == {"backend": "cheap", "slo_met": False}


def test_an_slo_no_candidate_meets_is_refused_and_the_budget_alert_fires(
        tmp_path: Path) -> None:
    burn = (BurnWindow("page", 60.0, 10.0, 2.0),)
    mesh, router, clock, cheap, dear = world(
        tmp_path, slo=SLO(p95_ms=50, objective=0.9, on_unmet="reject"), burn=burn)
    with mesh:
        cheap.ms = dear.ms = 200
        refused: list[SLOUnattainable] = []
        for i in range(60):
            clock.now += 0.05
            try:
                mesh.invoke("echo", {"text": f"q{i}"}, tenant="acme")
            except SLOUnattainable as exc:  # typed (a 503 at the gateway) and recorded
                refused.append(exc)
        assert refused and all(exc.record_id is not None for exc in refused)
        assert "probes the backends" in (refused[0].hint or "")
        records = [e.record for e in mesh.run_sync(mesh.ports.audit.read())
                   if "record_id" in e.record]
        assert {r["error"]["code"] for r in records if r["error"]} == {"slo_unattainable"}
        [alert] = audit(mesh, "slo_alert")
        assert alert["alert"] == "page" and alert["burn_rate_long"] > 2.0
        assert router.alerts and router.alerts[0]["capability"] == "echo"

        async def announced() -> list[Any]:
            assert await asyncio.to_thread(mesh.flush)
            sub = await mesh.ports.events.subscribe(SLO_TOPIC, group="test")
            got = await sub.fetch(10, timeout=0.5)
            await sub.aclose()
            return got

        [event] = mesh.run_sync(announced())
        assert event.event.data["alert"] == "page"


def test_a_version_below_min_quality_meets_the_slo_on_no_backend(tmp_path: Path) -> None:
    """The reviewers reject what this model version answers: no backend can fix that, so its
    calls are best effort, say so in the record, and count against the error budget."""
    mesh, _, clock, _, dear = world(tmp_path, slo=SLO(p95_ms=50, min_quality=0.8),
                                    review_threshold=0.5)
    with mesh:
        for result in calls(mesh, clock, 12):  # no confidence: each one goes to a reviewer
            assert result.review_id is not None and result.record.route["slo_met"] is True
            mesh.resolve_review(result.review_id, approve=False, reviewer="rita")
        mesh.live_quality.refresh("echo")
        assert mesh.live_quality.accuracy("echo", "1") == (0.0, 12)
        [after] = calls(mesh, clock, 1)
        assert after.record.route == {"backend": "cheap", "slo_met": False, "quality": 0.0}
        assert dear.calls == 0  # no probing around: another backend serves the same version
    refuse = world(tmp_path / "strict", slo=SLO(p95_ms=50, min_quality=0.8, on_unmet="reject"),
                   review_threshold=0.5)[0]
    with refuse:
        for result in calls(refuse, Clock(), 12):
            refuse.resolve_review(result.review_id or "", approve=False, reviewer="rita")
        refuse.live_quality.refresh("echo")
        with pytest.raises(SLOUnattainable, match=r"below min_quality 0\.8"):
            refuse.invoke("echo", {"text": "again"}, tenant="acme")


def test_the_slo_contract_is_checked_where_it_is_declared() -> None:
    with pytest.raises(ValidationError):
        SLO(objective=1.0)
    with pytest.raises(ValidationError):
        SLO(on_unmet="panic")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Candidate(serving="x", weight=2)  # type: ignore[call-arg]
    spec = CapabilitySpec.from_config({
        "name": "echo", "input": f"{__name__}:Q", "output": f"{__name__}:A",
        "model": "m@champion", "slo": {"p95_ms": 50, "max_cost": 0.01},
        "candidates": [{"serving": "a", "price": {"per_call": 0.001}}, {"serving": "b"}]})
    assert [c.label for c in spec.candidates] == ["a", "b"]
