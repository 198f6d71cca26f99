"""The event worker on the embedded sqlite bus: routing, results, review resumption,
redelivery dedupe, dead letters, and SIGTERM draining in a real subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aios_mesh import Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.ports.event_codec import DEAD_LETTER_REASON
from aios_mesh.ports.events import Event
from aios_mesh.testing.conformance.events import receive
from aios_mesh.worker import Worker
from tests.integration.worker_app import always_down, route_ticket

REPO = Path(__file__).resolve().parents[2]


def make_mesh(state: Path, **extra: Any) -> Mesh:
    config = config_from_mapping({
        "state_dir": str(state), "tenants": {"acme": {}},
        "backends": {"events": "sqlite:///events.db?max_attempts=2&visibility_timeout=2"},
        "retry": {"max_attempts": 1},
        "telemetry": {"lineage": False, "decision_events": False}, **extra})
    return Mesh(config, capabilities=[route_ticket, always_down])


def tickets(texts: list[str]) -> list[Event]:
    return [Event(type="ticket.created", source="test", tenant="acme", key=f"k{i % 3}",
                  data={"text": t} if t is not None else {"bogus": 1})
            for i, t in enumerate(texts)]


async def run_until(worker: Worker, done: Any, timeout: float = 30) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110 (polling a counter)
        await asyncio.sleep(0.05)
    stop.set()
    await task


async def test_routes_events_publishes_results_and_resumes_reviews(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path)
    mesh.on("tickets.new", "route-ticket", result_topic="tickets.routed")
    bus = mesh.port("events")
    texts = ["invoice 1", "hello", "unsure what this is", None, "invoice 2", "unsure 2"]
    await bus.publish("tickets.new", tickets(texts))
    worker = Worker(mesh, concurrency=4)
    await run_until(worker, lambda: worker.stats.received >= len(texts))
    assert (worker.stats.answered, worker.stats.review, worker.stats.failed) == (3, 2, 1)

    out = await bus.subscribe("tickets.routed", group="test")
    got = await receive(out, 4, timeout=5)
    kinds = sorted(d.event.type for d in got)
    assert kinds == ["route-ticket.failed", "route-ticket.result", "route-ticket.result",
                     "route-ticket.result"]
    failed = next(d.event for d in got if d.event.type.endswith("failed"))
    assert failed.data["error"]["type"] == "InvalidInput"

    pending = mesh.review_queue().list()
    assert len(pending) == 2 and all(p.resume for p in pending)
    await mesh.aresolve_review(pending[0].id, approve=True, reviewer="ana",
                        output={"label": "billing", "confidence": 1.0})
    await mesh.aresolve_review(pending[1].id, approve=False, reviewer="ana", note="spam")
    resumed = await receive(out, 2, timeout=5)
    by_type = {d.event.type: d.event for d in resumed}
    assert by_type["route-ticket.result"].data["output"] == {"label": "billing",
                                                             "confidence": 1.0}
    assert by_type["route-ticket.result"].data["reviewed_by"] == "ana"
    assert "route-ticket.rejected" in by_type
    decisions = [e.record for e in await mesh.port("audit").read()
                 if e.record.get("kind") == "review_decision"]
    assert [d["decision"] for d in decisions] == ["approved", "rejected"]
    worker.close()
    await mesh.aclose()


async def test_redelivered_event_is_processed_once(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path)
    mesh.on("tickets.new", "route-ticket", result_topic="tickets.routed")
    bus = mesh.port("events")
    [event] = tickets(["invoice 9"])
    await bus.publish("tickets.new", [event, event])  # the producer retried
    worker = Worker(mesh)
    await run_until(worker, lambda: worker.stats.received >= 2)
    assert (worker.stats.answered, worker.stats.duplicates) == (1, 1)
    out = await bus.subscribe("tickets.routed", group="test")
    assert len(await receive(out, 2, timeout=2)) == 1
    worker.close()
    await mesh.aclose()


async def test_backend_outage_is_nacked_then_dead_lettered(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path)
    mesh.on("jobs", "always-down", result_topic="jobs.done")
    bus = mesh.port("events")
    await bus.publish("jobs", tickets(["x"]))
    worker = Worker(mesh)
    await run_until(worker, lambda: worker.stats.retried >= 2, timeout=20)
    dlq = await bus.subscribe("jobs.dlq", group="test")
    [dead] = await receive(dlq, 1, timeout=10)
    assert "BackendUnavailable" in dead.event.headers[DEAD_LETTER_REASON]
    worker.close()
    await mesh.aclose()


def test_sigterm_drains_in_flight_work_and_a_restart_finishes_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "aios-mesh.toml"
    config.write_text("""
state_dir = "state"
[tenants.acme]
[backends]
events = "sqlite:///events.db?visibility_timeout=60"
[telemetry]
lineage = false
decision_events = false
[[capabilities]]
name = "route-ticket"
input = "tests.integration.worker_app:Ticket"
output = "tests.integration.worker_app:Route"
handler = "tests.integration.worker_app:route_ticket"
[[routes]]
topic = "tickets.new"
capability = "route-ticket"
result_topic = "tickets.routed"
""")
    n = 200
    mesh = Mesh.from_config(config)
    mesh.run_sync(mesh.port("events").publish("tickets.new",
                                               tickets([f"invoice {i}" for i in range(n)])))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "aios_mesh.cli", "worker", "--config", str(config),
           "--concurrency", "4"]

    def results() -> list[Event]:
        async def read() -> list[Event]:
            sub = await mesh.port("events").subscribe("tickets.routed", group=f"r{time.time()}")
            got = await receive(sub, n + 10, timeout=0.3)
            await sub.aclose()
            return [d.event for d in got]
        return mesh.run_sync(read())

    first = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(results()) < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.stderr.read() if first.stderr else ""
    partial = len(results())
    assert 8 <= partial < n  # it stopped part-way, cleanly

    second = subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(results()) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    final = results()
    causes = [e.headers["causationid"] for e in final]
    assert len(causes) == n and len(set(causes)) == n  # every event once: none lost, no dupes
    mesh.close()
