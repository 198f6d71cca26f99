"""The background relay, for real: a child process per mesh ships decision records and
published events from the durable outboxes (JSONL audit log, sqlite outbox) to a real bus
(the embedded sqlite bus, and nats-server for outages), with nothing asked of the caller.

What it must do (issue "Honest operations"): start with the mesh and ship a crashed
process's backlog within 5 s without any call; never block a publisher while the broker is
down; say ``flush() is False`` while anything is pending; survive its own ``kill -9``; notice
an audit log that was cut or restored, raise an alarm and re-ship; one relay per state folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aios_mesh_nats.testing import nats_server
from pydantic import BaseModel

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.audit import JsonlAuditLog
from aios_mesh.embedded.events import SqliteEventBus
from aios_mesh.outbox import IdempotentConsumer
from aios_mesh.ports.events import Event, EventBus
from aios_mesh.recorder.relay import (
    ALARM_TOPIC,
    DECISION_TOPIC,
    LOG_REWOUND_EVENT_TYPE,
    RecordRelay,
)
from aios_mesh.relay import ProcessRunner, ThreadRunner
from aios_mesh.testing.conformance.events import receive
from aios_mesh.testing.processes import free_port


class Ticket(BaseModel):
    text: str


class Label(BaseModel):
    label: str


def label(ticket: Ticket) -> Label:
    return Label(label="billing" if "invoice" in ticket.text else "other")


SPEC = CapabilitySpec(name="label-ticket", input=Ticket, output=Label, handler=label)


def mesh_on(state: Path, **extra: Any) -> Mesh:
    doc = {"state_dir": str(state), "tenants": {"acme": {}},
           "telemetry": {"otel": False, "log": False}, **extra}
    return Mesh(config_from_mapping(doc), capabilities=[SPEC])


async def decisions(state: Path, n: int, timeout: float = 10.0) -> list[Event]:
    bus = SqliteEventBus(state / "events.db")
    try:
        sub = await bus.subscribe(DECISION_TOPIC, group="test")
        return [d.event for d in await receive(sub, n, timeout=timeout)]
    finally:
        await bus.aclose()


def test_the_relay_runs_in_a_child_process_by_default(tmp_path: Path) -> None:
    with mesh_on(tmp_path) as mesh:
        assert isinstance(mesh.relay, ProcessRunner)
        assert mesh.relay.pid is not None and mesh.relay.pid != os.getpid()
        for i in range(20):
            mesh.invoke("label-ticket", {"text": f"invoice {i}"}, tenant="acme")
        assert mesh.flush(20)
        assert mesh.relay.stats.decision_events == 20
        pid = mesh.relay.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # close() stopped it
    got = asyncio.run(decisions(tmp_path, 20))
    assert len({e.idempotency_key for e in got}) == 20


def test_an_adapter_given_as_an_object_keeps_the_relay_on_a_thread(tmp_path: Path) -> None:
    audit = JsonlAuditLog(tmp_path / "audit.jsonl")
    mesh = Mesh(config_from_mapping({"state_dir": str(tmp_path), "tenants": {"acme": {}},
                                     "telemetry": {"otel": False, "log": False}}),
                capabilities=[SPEC], adapters={"audit": audit})
    with mesh:
        assert isinstance(mesh.relay, ThreadRunner)
        mesh.invoke("label-ticket", {"text": "invoice"}, tenant="acme")
        assert mesh.flush(10)
        assert mesh.relay.stats.decision_events == 1


CRASHING_PROCESS = textwrap.dedent("""
    import os, sys
    sys.path[:0] = {paths!r}
    from pathlib import Path
    from aios_mesh.ports.events import Event
    from tests.integration.test_relay import mesh_on
    # A relay on a thread that lingers 5 s: the process dies before it ships anything.
    mesh = mesh_on(Path({state!r}), relay={{"mode": "thread", "linger_s": 5}})
    for i in range(40):
        mesh.invoke("label-ticket", {{"text": f"invoice {{i}}"}}, tenant="acme")
    mesh.publish_many(("app.events", Event(type="app.done", source="test", tenant="acme",
                                           data={{"n": i}})) for i in range(7))
    os._exit(0)  # a crash: no close, no flush
""")


def test_a_new_mesh_ships_a_crashed_backlog_within_5s_without_any_call(tmp_path: Path) -> None:
    code = CRASHING_PROCESS.format(paths=sys.path, state=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    audit = JsonlAuditLog(tmp_path / "audit.jsonl")
    assert len(audit.read_sync()) == 40
    assert not (tmp_path / "signals.cursor").exists()  # nothing was shipped
    with mesh_on(tmp_path):  # no call, no flush: the relay starts with the mesh
        started = time.monotonic()
        got = asyncio.run(decisions(tmp_path, 40, timeout=5))
        assert len(got) == 40, f"shipped {len(got)} of 40 in 5 s"

        async def app_events() -> list[Event]:
            bus = SqliteEventBus(tmp_path / "events.db")
            sub = await bus.subscribe("app.events", group="test")
            left = max(0.5, 5 - (time.monotonic() - started))
            out = [d.event for d in await receive(sub, 7, timeout=left)]
            await bus.aclose()
            return out

        assert len(asyncio.run(app_events())) == 7


def _broker(kind: str, tmp_path: Path, port: int) -> Any:
    if kind == "nats":
        return nats_server(tmp_path / "js", port=port)
    from aios_mesh_kafka.testing import tansu_broker

    return tansu_broker(port=port)


BROKER_URLS = {"nats": "nats://127.0.0.1:{port}?stream=RELAYDOWN&connect_timeout=0.5",
               "kafka": "kafka://127.0.0.1:{port}?connect_timeout=0.5"}


@pytest.mark.parametrize("kind", ["nats", "kafka"])
def test_flush_is_false_while_the_bus_is_down_and_true_once_shipped(tmp_path: Path,
                                                                    kind: str) -> None:
    port = free_port()
    url = BROKER_URLS[kind].format(port=port)
    mesh = mesh_on(tmp_path, backends={"events": url}, relay={"max_backoff_s": 0.5})
    with mesh:
        for i in range(3):
            mesh.invoke("label-ticket", {"text": f"invoice {i}"}, tenant="acme")
        mesh.publish_many(("app.t", Event(type="app.t", source="test", tenant="acme",
                                          data={"n": i})) for i in range(5))
        assert mesh.flush(1.5) is False  # the broker is not there: nothing was lost either
        assert mesh.outbox().pending() == 5
        with _broker(kind, tmp_path, port):
            assert mesh.flush(60) is True
            assert mesh.outbox().pending() == 0
            assert mesh.relay.stats.decision_events == 3


def test_publishing_never_waits_for_a_broker_that_is_down(tmp_path: Path) -> None:
    """10,000 events published while the broker is down: every publish only appends; all
    arrive once it is back, none twice after dedupe (the latency itself is measured in
    benchmarks/events.py, not asserted here)."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}?stream=RELAYOUT&timeout=0.5"
    total = 10_000
    with mesh_on(tmp_path, backends={"events": url}, relay={"max_backoff_s": 0.5}) as mesh:
        for start in range(0, total, 1000):
            mesh.publish_many(("out.t", Event(type="out.t", source="test", tenant="acme",
                                              key=f"k{i % 8}", data={"n": i}))
                              for i in range(start, start + 1000))
        asyncio.run(mesh.publish("out.t", Event(type="out.t", source="test", tenant="acme",
                                               key="k0", data={"n": total})))
        assert mesh.outbox().pending() == total + 1
        with nats_server(tmp_path / "js", port=port):
            assert mesh.flush(120)

            async def consume() -> list[int]:
                from aios_mesh_nats import NatsEventBus

                bus: EventBus = NatsEventBus(url.split("?")[0], stream="RELAYOUT")
                dedupe = IdempotentConsumer(tmp_path / "seen.db")
                sub = await bus.subscribe("out.t", group="g")
                seen: list[int] = []

                async def handle(event: Event) -> None:
                    seen.append(int(event.data["n"]))

                deadline = time.monotonic() + 60
                while len(seen) < total + 1 and time.monotonic() < deadline:
                    for d in await sub.fetch(500, timeout=0.5):
                        await dedupe.handle(sub, d, handle)
                await sub.aclose()
                await bus.aclose()
                dedupe.close()
                return seen

            seen = asyncio.run(consume())
    assert sorted(seen) == list(range(total + 1))


def test_a_killed_relay_process_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    with mesh_on(tmp_path) as mesh:
        for i in range(10):
            mesh.invoke("label-ticket", {"text": f"invoice {i}"}, tenant="acme")
        first = mesh.relay.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        time.sleep(1.2)  # past the restart guard
        for i in range(10, 30):
            mesh.invoke("label-ticket", {"text": f"invoice {i}"}, tenant="acme")
        assert mesh.flush(20)
        assert mesh.relay.pid not in (None, first)
    got = asyncio.run(decisions(tmp_path, 30))
    assert len({e.idempotency_key for e in got}) == 30


def test_one_relay_ships_a_state_folder_the_other_stands_by(tmp_path: Path) -> None:
    with mesh_on(tmp_path) as a, mesh_on(tmp_path) as b:
        for i in range(15):
            (a if i % 2 else b).invoke("label-ticket", {"text": f"invoice {i}"},
                                       tenant="acme")
        assert a.flush(20) and b.flush(20)
        shipped = a.relay.stats.decision_events + b.relay.stats.decision_events
        assert shipped == 15  # each record once, by whichever relay holds the lock
    got = asyncio.run(decisions(tmp_path, 16, timeout=3))
    assert len(got) == 15


# -- a log that was cut or restored ------------------------------------------------------------


def _audit_records(audit: JsonlAuditLog, start: int, n: int) -> None:
    for i in range(start, start + n):
        record = {"kind": "decision", "record_id": f"r{i}", "tenant": "acme",
                  "capability": {"name": "label-ticket", "version": "1"},
                  "outcome": "ok", "n": i}
        asyncio.run(audit.append(record))


def _relay(state: Path) -> RecordRelay:
    bus = SqliteEventBus(state / "events.db")
    return RecordRelay(audit=lambda: (JsonlAuditLog(state / "audit.jsonl"), True),
                       lineage=None, bus=lambda: (bus, True),
                       cursor_path=state / "signals.cursor")


async def _topic(state: Path, topic: str, n: int) -> list[Event]:
    bus = SqliteEventBus(state / "events.db")
    sub = await bus.subscribe(topic, group="check")
    got = [d.event for d in await receive(sub, n, timeout=2)]
    await bus.aclose()
    return got


@pytest.mark.parametrize("how", ["cut", "restored"])
def test_a_rewound_log_is_noticed_alarmed_and_reshipped(tmp_path: Path, how: str,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    log = tmp_path / "audit.jsonl"
    _audit_records(JsonlAuditLog(log), 0, 10)
    old_copy = log.read_bytes()
    _audit_records(JsonlAuditLog(log), 10, 10)
    relay = _relay(tmp_path)
    assert asyncio.run(relay.ship()).shipped == 20
    asyncio.run(relay.aclose())
    if how == "cut":  # the last 15 records are gone
        lines = log.read_bytes().splitlines(keepends=True)
        log.write_bytes(b"".join(lines[:5]))
    else:  # restored from the copy made after 10 records
        log.write_bytes(old_copy)
    _audit_records(JsonlAuditLog(log), 0, 3)  # new calls after the rewind
    relay = _relay(tmp_path)  # a restarted relay, cursor read from its file
    with caplog.at_level(logging.ERROR, logger="aios_mesh.recorder.relay"):
        result = asyncio.run(relay.ship())
    asyncio.run(relay.aclose())
    kept = 5 if how == "cut" else 10  # the records before the rewind that still match
    assert result.caught_up and relay.stats.rewinds == 1
    assert any("no longer holds record 20" in r.getMessage() for r in caplog.records)
    alarms = asyncio.run(_topic(tmp_path, ALARM_TOPIC, 1))
    assert [a.type for a in alarms] == [LOG_REWOUND_EVENT_TYPE]
    assert alarms[0].data["cursor_seq"] == 20
    resumed = alarms[0].data["resumed_after_seq"]
    assert kept - 3 <= resumed <= kept  # a kept checkpoint near the cut, never past it
    # Everything after the resume point went out again (at least once), the 3 new included.
    assert result.shipped == kept + 3 - resumed
    decided = asyncio.run(_topic(tmp_path, DECISION_TOPIC, 50))
    assert {e.data["n"] for e in decided[20:]} >= {0, 1, 2}
    cursor = orjson.loads((tmp_path / "signals.cursor").read_bytes())
    assert cursor["seq"] == kept + 3


def test_a_cursor_in_the_old_format_is_read(tmp_path: Path) -> None:
    _audit_records(JsonlAuditLog(tmp_path / "audit.jsonl"), 0, 6)
    (tmp_path / "signals.cursor").write_text("4")
    relay = _relay(tmp_path)
    assert asyncio.run(relay.ship()).shipped == 2
    asyncio.run(relay.aclose())


def test_a_cut_postgres_audit_log_is_noticed_and_reshipped(tmp_path: Path) -> None:
    """The same check on the PostgreSQL audit log (the machine's server): rows deleted from
    the table's tail are noticed by hash, not by counting."""
    import uuid

    import psycopg
    from aios_mesh_postgres import PostgresAuditLog

    server = "postgresql://postgres@127.0.0.1:5432"
    name = f"aios_mesh_relay_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    table = "audit_relay"
    try:
        def open_log() -> PostgresAuditLog:
            return PostgresAuditLog(f"{server}/{name}", table=table)

        async def append(start: int, n: int) -> None:
            log = open_log()
            for i in range(start, start + n):
                await log.append({"kind": "decision", "record_id": f"r{i}", "tenant": "acme",
                                  "capability": {"name": "label-ticket"}, "outcome": "ok",
                                  "n": i})
            await log.aclose()

        bus = SqliteEventBus(tmp_path / "events.db")

        def relay() -> RecordRelay:
            return RecordRelay(audit=lambda: (open_log(), True), lineage=None,
                               bus=lambda: (bus, False), cursor_path=tmp_path / "cursor")

        asyncio.run(append(0, 20))
        first = relay()
        assert asyncio.run(first.ship()).shipped == 20
        asyncio.run(first.aclose())
        with psycopg.connect(f"{server}/{name}", autocommit=True) as conn:
            conn.execute(f"DELETE FROM {table} WHERE seq > 5")  # the tail is cut
        asyncio.run(append(100, 3))
        second = relay()
        result = asyncio.run(second.ship())
        asyncio.run(second.aclose())
        assert second.stats.rewinds == 1 and result.caught_up
        alarms = asyncio.run(_topic(tmp_path, ALARM_TOPIC, 1))
        resumed = alarms[0].data["resumed_after_seq"]
        assert 2 <= resumed <= 5
        assert result.shipped == 5 - resumed + 3
        asyncio.run(bus.aclose())
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
