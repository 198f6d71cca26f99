"""Failures stay visible (issue 15, item 2), through the public Mesh API on the embedded
defaults: caller errors never open a breaker nor spend the retry budget, a fallback answer is
recorded as ``degraded`` with the primary's error, and one tenant's failures open only that
tenant's compartment of the (backend, model) breaker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh import CapabilitySpec, ConfigError, InvalidInput, Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.lineage import run_events_for
from aios_mesh.recorder.relay import DECISION_TOPIC

POISON = ("poison-1", "poison-2")


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    label: str


def primary(ticket: Ticket) -> Triage:
    if ticket.text in POISON:
        # an e-mail address in the message: it must be masked wherever the error is kept
        raise RuntimeError(f"parser crashed on {ticket.text} from bob@example.com")
    if ticket.text == "not-a-ticket":
        raise ValueError(f"{ticket.text!r} is not a ticket")
    return Triage(label="primary")


def rules(ticket: Ticket) -> Triage:
    return Triage(label="rules")


FALLBACK = f"function:{__name__}:rules"


def triage(**kw: Any) -> CapabilitySpec:
    return CapabilitySpec(name="triage", input=Ticket, output=Triage, handler=primary,
                          fallbacks=(FALLBACK,), **kw)


def local(tmp_path: Path, **options: Any) -> Mesh:
    options.setdefault("retry", {"backoff_s": 0.0})
    return Mesh.local(tmp_path, capabilities=[triage()], tenants=("acme", "globex"), **options)


def records(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line)["record"] for line in lines]


KEY = "function/function:triage/1"


def test_one_tenants_failures_do_not_degrade_another(tmp_path: Path) -> None:
    """The issue's scenario: two payloads that make the handler raise (3 attempts each, 6
    failures: past the default threshold of 5)."""
    with local(tmp_path) as mesh:
        # 3 attempts, then the fallback; the second call's breaker opens after its 2nd
        for text, attempts in zip(POISON, (4, 3), strict=True):
            bad = mesh.invoke("triage", {"text": text}, tenant="acme")
            assert bad.output == Triage(label="rules")
            assert bad.record.outcome == "degraded" and bad.record.attempts == attempts
            assert bad.record.error is not None
            assert bad.record.error["type"] == "BackendUnavailable"  # not CircuitOpen
        assert mesh.breakers.state("function", "function:triage/1", "acme") == "open"
        # another tenant still reaches the primary
        other = mesh.invoke("triage", {"text": "hello"}, tenant="globex")
        assert other.output == Triage(label="primary")
        assert other.record.outcome == "ok" and other.record.error is None
        assert other.record.fallback is None and other.record.serving == "function"
        assert mesh.breakers.state("function", "function:triage/1", "globex") == "closed"
        # the failing tenant is answered by the fallback, and the record says so
        cut_off = mesh.invoke("triage", {"text": "hello"}, tenant="acme")
        assert cut_off.output == Triage(label="rules")
        assert cut_off.record.outcome == "degraded" and cut_off.record.fallback == FALLBACK
        assert cut_off.record.error is not None
        assert cut_off.record.error["type"] == "CircuitOpen"
        assert "(last: BackendUnavailable)" in cut_off.record.error["message"]
        states = mesh.breakers.states()
        assert states[KEY] == "closed" and states[f"{KEY}#acme"] == "open"
        assert states[f"{KEY}#globex"] == "closed"
    recs = records(tmp_path)
    assert [r["outcome"] for r in recs] == ["degraded", "degraded", "ok", "degraded"]
    first = recs[0]["error"]
    assert first["type"] == "BackendUnavailable"
    assert "RuntimeError: parser crashed on poison-1" in first["message"]
    # the handler's exception is written down, its personal data is not
    log = (tmp_path / "audit.jsonl").read_text() + (tmp_path / "decisions.log").read_text()
    assert "bob@example.com" not in log and "[EMAIL]" in first["message"]


def test_a_backend_down_for_every_tenant_opens_the_shared_breaker(tmp_path: Path) -> None:
    """Failures from two tenants (min_failing_tenants) open the backend's breaker for all:
    a third tenant does not have to find out for itself."""
    opts = {"retry": {"max_attempts": 1, "backoff_s": 0.0},
            "breaker": {"failure_threshold": 2}}
    with Mesh.local(tmp_path, capabilities=[triage()], tenants=("acme", "globex", "initech"),
                    **opts) as mesh:
        for tenant in ("acme", "acme", "globex"):
            result = mesh.invoke("triage", {"text": "poison-1"}, tenant=tenant)
            assert result.record.outcome == "degraded"
        assert mesh.breakers.states()[KEY] == "closed"  # one tenant's compartment open
        mesh.invoke("triage", {"text": "poison-2"}, tenant="globex")
        assert mesh.breakers.states()[KEY] == "open"  # two: the backend is down for all
        third = mesh.invoke("triage", {"text": "hello"}, tenant="initech")
        assert third.output == Triage(label="rules") and third.record.attempts == 1
        assert third.record.outcome == "degraded"
        assert third.record.error is not None and third.record.error["type"] == "CircuitOpen"


def test_a_handler_rejecting_its_input_is_the_callers_error(tmp_path: Path) -> None:
    """A ValueError from the handler is an InvalidInput: no retry, no fallback, no breaker
    failure, no retry budget spent, however often it happens."""
    with local(tmp_path, breaker={"failure_threshold": 1}) as mesh:
        for _ in range(5):
            with pytest.raises(InvalidInput, match="rejected its input") as info:
                mesh.invoke("triage", {"text": "not-a-ticket"}, tenant="acme")
            assert info.value.hint
        assert mesh.breakers.states() == {KEY: "closed", f"{KEY}#acme": "closed"}
        assert mesh.parts.budget.retries_in_window == 0
        ok = mesh.invoke("triage", {"text": "hello"}, tenant="acme")
        assert ok.record.outcome == "ok"
    recs = records(tmp_path)
    assert [r["outcome"] for r in recs] == ["rejected"] * 5 + ["ok"]
    assert all(r["attempts"] == 1 and r["fallback"] is None for r in recs[:5])
    assert recs[0]["error"]["type"] == "InvalidInput"
    assert "ValueError" in recs[0]["error"]["message"]


def test_schema_failures_never_touch_the_breaker(tmp_path: Path) -> None:
    with local(tmp_path, breaker={"failure_threshold": 1}) as mesh:
        for _ in range(3):
            with pytest.raises(InvalidInput):
                mesh.invoke("triage", {"txt": "typo"}, tenant="acme")
        assert mesh.breakers.states() == {}
        assert mesh.invoke("triage", {"text": "hello"}, tenant="acme").record.outcome == "ok"


async def test_a_degraded_call_is_signalled_as_degraded(tmp_path: Path) -> None:
    """Lineage (file transport) and the decision event (sqlite bus), as the relay ships them:
    the run COMPLETEs (an answer was given), the facet and the event header say degraded."""
    async with local(tmp_path) as mesh:
        result = await mesh.ainvoke("triage", {"text": "poison-1"}, tenant="acme")
        assert await asyncio.to_thread(mesh.flush)
        sub = await mesh.ports.events.subscribe(DECISION_TOPIC, group="test")
        (delivery,) = await sub.fetch(10, timeout=0.5)
        await sub.aclose()
    assert delivery.event.headers["outcome"] == "degraded"
    assert delivery.event.data["record_id"] == result.record.record_id
    lines = (tmp_path / "lineage" / "events.jsonl").read_bytes().splitlines()
    start, end = (json.loads(line) for line in lines)
    assert (start["eventType"], end["eventType"]) == ("START", "COMPLETE")
    facet = end["run"]["facets"]["aiosMesh_call"]
    assert facet["outcome"] == "degraded" and facet["fallback"] == FALLBACK
    assert "errorMessage" not in end["run"]["facets"]  # the run did not fail
    assert [e["eventType"] for e in run_events_for(result.record.to_dict())] == \
        ["START", "COMPLETE"]


def champion(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if any(row["text"] in POISON for row in batch):
        raise RuntimeError("tokenizer overflow for alice@example.org")
    return [{"label": "champion"} for _ in batch]


def previous(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"label": "previous"} for _ in batch]


async def test_in_process_serving_bulkheads_per_tenant(tmp_path: Path) -> None:
    """The same on a model served by the in-process serving adapter, resolved through the
    memory registry, falling back to the previous alias."""
    serving, registry = InProcessServing(), MemoryRegistry()
    for version, predict in (("1", previous), ("2", champion)):
        serving.register("clf", version, predict)
        await registry.register("clf", f"inprocess:clf/{version}")
    await registry.set_alias("clf", "previous", "1")
    await registry.set_alias("clf", "champion", "2")
    spec = CapabilitySpec(name="triage", input=Ticket, output=Triage, model="clf@champion",
                          fallbacks=("model:clf@previous",))
    config = config_from_mapping({"state_dir": str(tmp_path), "retry": {"backoff_s": 0.0},
                                  "tenants": {"acme": {}, "globex": {}}})
    async with Mesh(config, capabilities=[spec],
                    adapters={"serving": serving, "registry": registry}) as mesh:
        for text in POISON:
            bad = await mesh.ainvoke("triage", {"text": text}, tenant="acme")
            assert bad.output == Triage(label="previous")
            assert bad.record.outcome == "degraded" and bad.record.fallback == \
                "model:clf@previous"
            assert bad.record.model is not None and bad.record.model["version"] == "1"
        # the champion's compartment for acme, not the previous version's
        assert mesh.breakers.states() == {
            "InProcessServing/clf/2": "closed", "InProcessServing/clf/2#acme": "open",
            "InProcessServing/clf/1": "closed", "InProcessServing/clf/1#acme": "closed"}
        good = await mesh.ainvoke("triage", {"text": "hello"}, tenant="globex")
        assert good.output == Triage(label="champion") and good.record.outcome == "ok"
        cut_off = await mesh.ainvoke("triage", {"text": "hello"}, tenant="acme")
        assert cut_off.output == Triage(label="previous")
        assert cut_off.record.error is not None
        assert cut_off.record.error["type"] == "CircuitOpen"
    recs = records(tmp_path)
    assert [r["outcome"] for r in recs] == ["degraded", "degraded", "ok", "degraded"]
    assert recs[0]["error"]["message"] == \
        "model clf/2 raised RuntimeError: tokenizer overflow for [EMAIL]"
    assert "alice@example.org" not in (tmp_path / "audit.jsonl").read_text()


def test_min_failing_tenants_below_one_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="min_failing_tenants") as info:
        Mesh.local(tmp_path, breaker={"min_failing_tenants": 0})
    assert info.value.hint


def test_a_degraded_call_is_an_ok_span_that_keeps_the_primary_error(tmp_path: Path) -> None:
    """The trace agrees with the record: an answered call is not an errored span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from aios_mesh.telemetry import Telemetry

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    doc = {"state_dir": str(tmp_path), "tenants": {"acme": {}}, "retry": {"backoff_s": 0.0}}
    mesh = Mesh(config_from_mapping(doc), capabilities=[triage()],
                telemetry=Telemetry(log=None, tracer_provider=provider))
    with mesh:
        result = mesh.invoke("triage", {"text": POISON[0]}, tenant="acme")
        assert mesh.flush(10)
    assert result.record.outcome == "degraded"
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is not StatusCode.ERROR
    assert span.attributes is not None and span.attributes["aios_mesh.outcome"] == "degraded"
