"""The lifecycle and business KPIs on the gateway's ``/metrics``: a real gateway app on the
embedded mesh (in-process serving, the memory registry, the sqlite state and audit log),
called over HTTP (httpx over ASGI; Starlette's TestClient for the background refresh), then
scraped and parsed with prometheus_client's own parser.

Real calls (answered and parked), real review decisions through the review API, a real pause
and resume, a real promote and manual rollback; an automatic rollback and a drift alarm are
the audit entries those processors write.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from starlette.requests import HTTPConnection
from starlette.testclient import TestClient

from aios_mesh import Mesh, rollout
from aios_mesh.capabilities import capability
from aios_mesh.config import config_from_mapping
from aios_mesh.errors import BackendUnavailable
from aios_mesh.gateway import create_app
from aios_mesh.gateway.app import GatewaySettings
from aios_mesh.gateway.identity import Principal, Unauthenticated
from aios_mesh.gateway.metrics import LIFECYCLE_METRICS, LifecycleMetrics
from aios_mesh.gateway.routes import calls, health, review
from aios_mesh.lifecycle.pause import pause, resume


class Invoice(BaseModel):
    text: str
    confidence: float = 0.95


class Extracted(BaseModel):
    vendor: str
    confidence: float


@capability("extract", model="ext@champion", review_threshold=0.8)
def extract(payload: Invoice) -> Extracted:
    """The vendor is the text's first word (served by the model ``ext``)."""
    ...


def _model(version: str) -> Any:
    def answer(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"vendor": f"{p['text'].split()[0]}-v{version}",
                 "confidence": p.get("confidence", 0.95)} for p in batch]
    return answer


PRINCIPALS = {
    "acme": Principal("acme", "app", credential="k1"),
    "globex": Principal("globex", "app", credential="k2"),
    "reviewer": Principal("acme", "ana", roles=frozenset({"reviewer"}), credential="k3"),
}


class Keys:
    async def authenticate(self, request: HTTPConnection) -> Principal:
        principal = PRINCIPALS.get(request.headers.get("authorization", "")
                                   .removeprefix("Bearer "))
        if principal is None:
            raise Unauthenticated("unknown credential", hint="send a known test key")
        return principal


async def make_mesh(state: Path) -> Mesh:
    mesh = Mesh(config_from_mapping({
        "state_dir": str(state), "tenants": {"acme": {}, "globex": {}},
        "backends": {"registry": "memory://"}, "retry": {"max_attempts": 1},
        "telemetry": {"lineage": False, "decision_events": False}}), capabilities=[extract])
    registry = mesh.ports.registry
    for version in ("1", "2"):
        ref = mesh.local_serving.register("ext", version, _model(version))
        await registry.register("ext", ref.source)
    await registry.set_alias("ext", "champion", "1")
    return mesh


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    built = await make_mesh(tmp_path)
    yield built
    await built.aclose()


def app_for(mesh: Mesh, refresh_s: float = 30.0) -> Any:
    return create_app(mesh, authenticator=Keys(), close_mesh=False,
                      settings=GatewaySettings(metrics_refresh_s=refresh_s),
                      modules=[health.routes, calls.routes, review.routes])


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition by (sample name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float | None:
    """The sample of ``name`` with exactly these labels (None when absent)."""
    return samples.get((name, frozenset(labels.items())))


async def call(client: httpx.AsyncClient, who: str, text: str, confidence: float = 0.95
               ) -> dict[str, Any]:
    response = await client.post("/v1/capabilities/extract/invoke",
                                 json={"text": text, "confidence": confidence},
                                 headers={"Authorization": f"Bearer {who}"})
    assert response.status_code in (200, 202), response.text
    body: dict[str, Any] = response.json()
    return body


async def test_calls_reviews_pause_and_promote_show_up_after_a_refresh(mesh: Mesh) -> None:
    app = app_for(mesh)
    lifecycle: LifecycleMetrics = app.state.gateway.metrics.lifecycle
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw") as client:
        for i in range(3):
            await call(client, "acme", f"Acme {i}")
        parked = [await call(client, "acme", f"Initech {i}", 0.4) for i in range(2)]
        await call(client, "globex", "Globex 1")
        ids = [p["review_id"] for p in parked]
        assert all(ids)
        reviewer = {"Authorization": "Bearer reviewer"}
        assert (await client.post(f"/v1/review/{ids[0]}/approve",
                                  headers=reviewer)).status_code == 200
        assert (await client.post(f"/v1/review/{ids[1]}/reject", headers=reviewer,
                                  json={"note": "wrong vendor"})).status_code == 200
        await pause(mesh, "extract", tenant="globex", mode="human", reason="INC-1",
                    actor="oncall")
        await rollout.promote(mesh, "extract", version="2", actor="ana")

        before = parse((await client.get("/metrics")).text)
        # nothing read yet: a scrape shows the snapshot, it never reads the stores itself
        assert value(before, "aios_mesh_calls_recorded_total", capability="extract",
                     tenant="acme", outcome="ok") is None
        assert await lifecycle.refresh()
        got = parse((await client.get("/metrics")).text)

    def v(name: str, **labels: str) -> float | None:
        return value(got, name, **labels)

    assert v("aios_mesh_calls_recorded_total", capability="extract", tenant="acme",
             outcome="ok") == 3
    assert v("aios_mesh_calls_recorded_total", capability="extract", tenant="acme",
             outcome="review") == 2
    assert v("aios_mesh_task_success_total", capability="extract", tenant="acme") == 3
    assert v("aios_mesh_task_success_total", capability="extract", tenant="globex") == 1
    assert v("aios_mesh_human_interventions_total", capability="extract", tenant="acme") == 2
    assert v("aios_mesh_human_interventions_total", capability="extract",
             tenant="globex") is None
    assert v("aios_mesh_automation_rate", capability="extract",
             tenant="acme") == pytest.approx(3 / 5)
    assert v("aios_mesh_reviews_decided_total", capability="extract", tenant="acme",
             decision="approved") == 1
    assert v("aios_mesh_reviews_decided_total", capability="extract", tenant="acme",
             decision="rejected") == 1
    assert v("aios_mesh_review_resolution_seconds_count", capability="extract",
             tenant="acme") == 2
    assert v("aios_mesh_review_resolution_seconds_bucket", capability="extract",
             tenant="acme", le="+Inf") == 2
    assert v("aios_mesh_review_resolution_seconds_bucket", capability="extract",
             tenant="acme", le="60.0") == 2  # decided within the test
    assert v("aios_mesh_promotions_total", capability="extract", target="model") == 1
    assert v("aios_mesh_pause_changes_total", capability="extract", action="pause") == 1
    assert v("aios_mesh_pauses_in_force", capability="extract", tenant="globex",
             mode="human") == 1
    version1 = {"capability": "extract", "capability_version": "1", "model": "ext",
                "model_version": "1"}
    assert v("aios_mesh_quality_labels", **version1) == 2
    assert v("aios_mesh_quality_accuracy", **version1) == pytest.approx(0.5)
    assert v("aios_mesh_quality_override_rate", **version1) == pytest.approx(0.5)
    ece = v("aios_mesh_quality_ece", **version1)
    assert ece is not None and 0 <= ece <= 1
    assert v("aios_mesh_quality_automation_rate", **version1) == pytest.approx(4 / 6)
    refreshed = v("aios_mesh_lifecycle_refreshed_timestamp_seconds")
    assert refreshed is not None and abs(refreshed - time.time()) < 3600
    assert v("aios_mesh_lifecycle_refresh_failures_total") == 0
    # the gateway's own counters are still there, untouched
    assert v("aios_mesh_gateway_calls_total", capability="extract", mode="invoke",
             outcome="ok") == 4


async def test_the_log_is_followed_incrementally(mesh: Mesh) -> None:
    """A second pass adds only what came since the first: a paused call, a resume, a manual
    rollback, an automatic one and a drift alarm (the entries those processors write)."""
    lifecycle = LifecycleMetrics(mesh)
    await mesh.ainvoke("extract", {"text": "Acme"}, tenant="acme")
    await pause(mesh, "extract", tenant="acme", mode="human", reason="x", actor="oncall")
    assert await lifecycle.refresh()
    await mesh.ainvoke("extract", {"text": "Acme"}, tenant="acme")  # parked: paused
    await resume(mesh, "extract", tenant="acme", actor="oncall")
    await rollout.promote(mesh, "extract", version="2", actor="ana")
    await rollout.rollback(mesh, "extract", actor="ana")
    audit = mesh.ports.audit
    await audit.append({"kind": "alias_change", "action": "auto_rollback",
                        "capability": "extract", "target": "model", "model": "ext",
                        "alias": "challenger", "from_version": "2", "to_version": "1"})
    await audit.append({"kind": "drift_alarm", "capability": "extract", "model": "ext",
                        "model_version": "1", "worst_feature": "input.text.length"})
    assert await lifecycle.refresh()
    got = {(s.name, frozenset(s.labels.items())): s.value
           for family in lifecycle.collect() for s in family.samples}

    def v(name: str, **labels: str) -> float | None:
        return value(got, name, **labels)

    assert v("aios_mesh_task_success_total", capability="extract", tenant="acme") == 1
    assert v("aios_mesh_human_interventions_total", capability="extract", tenant="acme") == 1
    assert v("aios_mesh_pause_changes_total", capability="extract", action="pause") == 1
    assert v("aios_mesh_pause_changes_total", capability="extract", action="resume") == 1
    assert v("aios_mesh_pauses_in_force", capability="extract", tenant="acme",
             mode="human") is None  # resumed
    assert v("aios_mesh_rollbacks_total", capability="extract", target="model",
             trigger="manual") == 1
    assert v("aios_mesh_rollbacks_total", capability="extract", target="model",
             trigger="automatic") == 1
    assert v("aios_mesh_drift_alarms_total", capability="extract", model_version="1") == 1


async def test_a_store_that_cannot_be_read_keeps_the_last_snapshot(
        mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    lifecycle = LifecycleMetrics(mesh)
    await mesh.ainvoke("extract", {"text": "Acme"}, tenant="acme")
    assert await lifecycle.refresh()

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("the audit database is down", hint="start it")

    monkeypatch.setattr(mesh.ports.audit, "read", down)
    assert not await lifecycle.refresh()
    got = {(s.name, frozenset(s.labels.items())): s.value
           for family in lifecycle.collect() for s in family.samples}
    assert value(got, "aios_mesh_task_success_total", capability="extract",
                 tenant="acme") == 1
    assert value(got, "aios_mesh_lifecycle_refresh_failures_total") == 1


def test_a_running_gateway_refreshes_when_scraped(tmp_path: Path) -> None:
    """Under the app's lifespan the background task reads the stores once a scrape asked,
    at most every ``metrics_refresh_s``."""
    import asyncio

    mesh = asyncio.run(make_mesh(tmp_path))
    try:
        with TestClient(app_for(mesh, refresh_s=0.05)) as client:
            answered = client.post("/v1/capabilities/extract/invoke", json={"text": "Acme"},
                                   headers={"Authorization": "Bearer acme"})
            assert answered.status_code == 200, answered.text
            deadline, seen = time.monotonic() + 30, None
            while seen is None and time.monotonic() < deadline:
                seen = value(parse(client.get("/metrics").text),
                             "aios_mesh_task_success_total", capability="extract",
                             tenant="acme")
                time.sleep(0.05)
            assert seen == 1
    finally:
        mesh.close()


def test_every_exported_name_is_documented() -> None:
    """The table the dashboard test reads names every family, and the guide shows each."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "guides"
             / "lifecycle.md").read_text()
    for name, (kind, labels, doc) in LIFECYCLE_METRICS.items():
        assert name.startswith("aios_mesh_") and kind in ("counter", "gauge", "histogram")
        assert doc.endswith(".") and len(set(labels)) == len(labels)
        shown = {"counter": f"`{name}_total`", "gauge": f"`{name}`",
                 "histogram": f"`{name}_bucket/_sum/_count`"}[kind]
        assert f"| {shown} | {kind} |" in guide, name
