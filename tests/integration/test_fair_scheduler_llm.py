"""The fair scheduler in front of a real llama.cpp server (Gemma 3 270M behind
``openai+http://``; the server runs one generation at a time), scheduler concurrency 1.

Sixteen noisy callers flood the server while a quiet tenant asks now and then: the quiet
tenant's calls are granted next (tests/unit/test_fair_scheduler.py shows a
first-come-first-served limit putting each behind the whole flood); cancelled waiters leave
their queue holding nothing. A call that must queue past its SLO is refused at once with
``Overloaded`` and recorded. Assertions are on the order of grants and on records, never on
wall-clock times; generations are two tokens long."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aios_mesh_llamacpp.testing import SERVED_MODEL, llama_server
from pydantic import BaseModel

from aios_mesh import (
    SLO,
    Call,
    CapabilitySpec,
    Generation,
    Mesh,
    Overloaded,
    TextOutput,
)
from aios_mesh.config import config_from_mapping
from aios_mesh.pipeline.call import Release
from aios_mesh.pipeline.fair import FairScheduler
from aios_mesh.testing.servers import Server

pytestmark = pytest.mark.integration


class Ask(BaseModel):
    text: str


def generate(slo: SLO | None = None) -> CapabilitySpec:
    return CapabilitySpec(name="say", input=Ask, output=TextOutput, model="gemma@champion",
                          serving="llm", slo=slo or SLO(timeout_s=120),
                          generate=Generation(prompt="Say one word about {{ text }}.",
                                              max_tokens=2, context_window=256))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with llama_server(tmp_path_factory.mktemp("fair-llm"), n_ctx=256) as running:
        yield running


class Log:
    """Two admission controllers around the scheduler: the first notes each call's arrival
    at the scheduler, the second its grant (controllers run in list order)."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.granted = asyncio.Event()

    def controller(self, what: str) -> Any:
        log = self

        class Note:
            name = f"note-{what}"

            def applies(self, spec: CapabilitySpec) -> bool:
                return True

            async def admit(self, call: Call) -> Release:
                log.entries.append(f"{what}:{call.tenant}:{call.raw['text']}")
                if what == "grant":
                    log.granted.set()
                return lambda: None

        return Note()


async def mesh_for(tmp_path: Path, server: Server, limiter: Any, log: Log,
                   spec: CapabilitySpec) -> Mesh:
    url = f"openai+http://{server.address}/v1?model={SERVED_MODEL}"
    doc = {"state_dir": str(tmp_path),
           "backends": {"registry": "memory://", "serving_named": {"llm": url}},
           "tenants": {"noisy": {}, "quiet": {}},
           "telemetry": {"otel": False, "lineage": False, "decision_events": False},
           "relay": {"mode": "thread"}}
    mesh = Mesh(config_from_mapping(doc), capabilities=[spec],
                admission=[log.controller("arrive"), limiter, log.controller("grant")])
    registry = mesh.ports.registry
    version = await registry.register("gemma", "llama.cpp: gemma-3-270m")
    await registry.set_alias("gemma", "champion", version.version)
    return mesh


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["record"]
            for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


async def test_a_quiet_tenant_goes_next_while_sixteen_callers_flood_the_server(
        tmp_path: Path, server: Server) -> None:
    """16 noisy callers in loops; once they are queued, a quiet tenant asks three times in a
    row. Then the noisy callers are cancelled, most of them while waiting: they leave their
    queue and hold nothing."""
    log = Log()
    scheduler = FairScheduler(backends={"llm": 1})
    mesh = await mesh_for(tmp_path, server, scheduler, log, generate())

    async def noisy(i: int) -> None:
        for j in itertools.count():
            await mesh.ainvoke("say", {"text": f"n{i}.{j}"}, tenant="noisy")

    flood = [asyncio.create_task(noisy(i)) for i in range(16)]
    while sum(e.startswith("arrive:noisy") for e in log.entries) < 16:
        log.granted.clear()
        await log.granted.wait()  # the noisy callers queue up behind the first one
    for k in range(3):
        await mesh.ainvoke("say", {"text": f"q{k}"}, tenant="quiet")
    assert scheduler.load("llm").waiting["interactive"] >= 8  # the flood was still queued
    for task in flood:
        task.cancel()
    await asyncio.gather(*flood, return_exceptions=True)
    load = scheduler.load("llm")
    assert (load.in_flight, load.waiting) == (0, {"interactive": 0, "bulk": 0})
    await mesh.aclose()

    for k in range(3):  # at most the noisy call granted just before it arrived is in between
        arrived = log.entries.index(f"arrive:quiet:q{k}")
        granted = log.entries.index(f"grant:quiet:q{k}")
        between = [e for e in log.entries[arrived:granted] if e.startswith("grant:noisy")]
        assert len(between) <= 1, log.entries
    rows = records(tmp_path)
    quiet = [r for r in rows if r["tenant"] == "quiet"]
    assert [r["outcome"] for r in quiet] == ["ok"] * 3
    assert all(r["usage"]["output_tokens"] >= 1 for r in quiet)  # the server generated
    noisy_outcomes = Counter(r["outcome"] for r in rows if r["tenant"] == "noisy")
    assert set(noisy_outcomes) <= {"ok", "cancelled"} and noisy_outcomes["cancelled"] >= 8


async def test_a_call_that_would_wait_past_its_slo_is_refused_and_recorded(
        tmp_path: Path, server: Server) -> None:
    log = Log()
    scheduler = FairScheduler(backends={"llm": 1})
    # no generation, however short, fits 1 ms twice over: any call that must queue is late
    mesh = await mesh_for(tmp_path, server, scheduler, log, generate(SLO(p95_ms=1)))
    await mesh.ainvoke("say", {"text": "warm"}, tenant="quiet")  # the first sample
    assert scheduler.load("llm").mean_service_s is not None
    log.granted.clear()
    running = asyncio.create_task(mesh.ainvoke("say", {"text": "long"}, tenant="noisy"))
    await log.granted.wait()  # holds the one slot until the server answers
    with pytest.raises(Overloaded) as err:
        await mesh.ainvoke("say", {"text": "late"}, tenant="quiet")
    assert err.value.retry_after_s is not None and err.value.retry_after_s > 0
    await running
    await mesh.aclose()
    rows = records(tmp_path)
    rejected = [r for r in rows if r["outcome"] == "rejected"]
    assert len(rows) == 3 and len(rejected) == 1
    assert (rejected[0]["error"]["code"], rejected[0]["tenant"]) == ("overloaded", "quiet")
    assert sorted(r["outcome"] for r in rows) == ["ok", "ok", "rejected"]
    assert scheduler.load("llm").in_flight == 0
