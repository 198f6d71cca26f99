"""Durable outbox under broker failures: Outbox -> Relay -> real broker -> IdempotentConsumer.

What is proven, on NATS JetStream (file storage, server killed with SIGKILL and restarted on
the same store dir and port) and on Kafka (tansu with S3 storage on ``moto_server``, broker
killed with SIGKILL and restarted on the same bucket and port): every event committed to the
outbox is consumed exactly once after dedupe (lost = 0, duplicates after dedupe = 0) although
the broker died mid-stream, the relay kept the unshipped rows and resumed; a broker that is
down at start only delays delivery; a consumer that crashes before ``ack`` gets the event
again (NATS).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aios_mesh_kafka.testing import moto_server, s3_env, tansu_broker
from aios_mesh_nats.testing import nats_server

from aios_mesh.outbox import IdempotentConsumer, Outbox, Relay
from aios_mesh.ports.events import Event, EventBus
from aios_mesh.testing.conformance.events import receive
from aios_mesh.testing.processes import free_port

pytestmark = pytest.mark.integration
import nats  # noqa: F401,E402
from aios_mesh_nats import NatsEventBus  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "js"
    path.mkdir()
    return path


def _events(start: int, n: int) -> list[Event]:
    return [Event(type="chaos.tested", source="chaos", tenant="acme", key=f"k{i % 4}",
                  data={"n": i}) for i in range(start, start + n)]


async def _drain(bus: EventBus, topic: str, dedupe: IdempotentConsumer, seen: list[int],
                 expected: int, timeout: float) -> int:
    """Consume through ``dedupe`` until ``expected`` distinct events were handled; returns the
    raw deliveries fetched (redeliveries included)."""
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
    with nats_server(store, port=port) as server:
        runner = asyncio.create_task(relay.run_forever(stop))
        for batch in range(5):
            outbox.put_many(("chaos.t", e) for e in _events(total, 200))
            total += 200
            await asyncio.sleep(0.02 * batch)
        server.process.kill()  # SIGKILL mid-stream: rows not yet shipped stay in the outbox
    outbox.put_many(("chaos.t", e) for e in _events(total, 300))  # written while it is down
    total += 300
    await asyncio.sleep(0.5)
    assert outbox.pending() > 0
    with nats_server(store, port=port):
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
    with nats_server(store, port=port):
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
    with nats_server(store, port=port):
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
    import kafka  # noqa: F401
    from aios_mesh_kafka import KafkaEventBus

    port = free_port()
    outbox = Outbox(tmp_path / "outbox.db")
    bus = KafkaEventBus(f"127.0.0.1:{port}", timeout=1.0, session_timeout_ms=3000,
                        heartbeat_interval_ms=300)
    relay = Relay(outbox, bus, backoff=0.05, max_backoff=0.3)
    outbox.put_many(("late.k", e) for e in _events(0, 50))
    result = await relay.run_once()
    assert result.sent == 0 and outbox.pending() == 50
    with tansu_broker(port=port):
        stop = asyncio.Event()
        runner = asyncio.create_task(relay.run_forever(stop))
        await asyncio.wait_for(_wait_empty(outbox), 30)
        sub = await bus.subscribe("late.k", group="g")
        got = await receive(sub, 50, timeout=20)
        stop.set()
        await runner
        await bus.aclose()
    assert sorted(d.event.data["n"] for d in got) == list(range(50))


async def _wait_shipped(outbox: Outbox, total: int, at_least: int) -> None:
    while total - outbox.pending() < at_least:  # noqa: ASYNC110 - polls a sqlite count
        await asyncio.sleep(0.002)


async def _read_all(bus: EventBus, topic: str, dedupe: IdempotentConsumer, seen: list[int],
                    expected: int, timeout: float) -> int:
    """Read the whole topic with a new group (from the start), through ``dedupe``, until
    ``expected`` distinct events arrived and then three 1 s fetches in a row came back empty
    (so duplicates that sit after the last new event are counted too); returns the raw
    deliveries."""
    sub = await bus.subscribe(topic, group="audit")
    deliveries = 0

    async def handle(event: Event) -> None:
        seen.append(int(event.data["n"]))

    quiet = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (len(seen) < expected or quiet < 3) and loop.time() < deadline:
        got = await sub.fetch(200, timeout=1.0)
        quiet = 0 if got else quiet + 1
        for d in got:
            deliveries += 1
            await dedupe.handle(sub, d, handle)
    await sub.aclose()
    return deliveries


async def test_kafka_broker_killed_mid_stream_loses_nothing(tmp_path: Path) -> None:
    """tansu on S3 (moto_server) killed with SIGKILL while the relay ships, restarted on the
    same port and bucket: lost = 0 and duplicates after dedupe = 0."""
    import kafka  # noqa: F401
    from aios_mesh_kafka import KafkaEventBus

    first, later = 200, 100  # 200 committed before the kill, 100 more while it is down
    total = first + later
    port = free_port()
    outbox = Outbox(tmp_path / "outbox.db")
    dedupe = IdempotentConsumer(tmp_path / "seen.db")
    bus = KafkaEventBus(f"127.0.0.1:{port}", timeout=2.0, session_timeout_ms=3000,
                        heartbeat_interval_ms=300)
    # batch_size=10: the relay ships in many small publishes, so the kill lands mid-stream
    relay = Relay(outbox, bus, batch_size=10, backoff=0.05, max_backoff=0.5)
    stop = asyncio.Event()
    with moto_server(buckets=["tansu"], log_dir=tmp_path) as s3:
        broker_env = s3_env(s3)
        storage = "s3://tansu/"
        with tansu_broker(port=port, storage=storage, env=broker_env, log_dir=tmp_path) as broker:
            outbox.put_many(("chaos.k", e) for e in _events(0, first))
            runner = asyncio.create_task(relay.run_forever(stop))
            await asyncio.wait_for(_wait_shipped(outbox, first, total // 3), 60)
            broker.process.kill()  # SIGKILL mid-stream: rows not yet shipped stay in the outbox
            pending_at_kill = outbox.pending()
        outbox.put_many(("chaos.k", e) for e in _events(first, later))  # written while down
        await asyncio.sleep(0.5)
        assert outbox.pending() >= later
        with tansu_broker(port=port, storage=storage, env=broker_env, log_dir=tmp_path):
            await asyncio.wait_for(_wait_empty(outbox), 60)
            seen: list[int] = []
            raw = await _drain(bus, "chaos.k", dedupe, seen, total, 60)
            again: list[int] = []
            audit = IdempotentConsumer(tmp_path / "seen-audit.db")
            raw_end = await _read_all(bus, "chaos.k", audit, again, total, 60)
            audit.close()
            stop.set()
            await runner
            await bus.aclose()
    print(f"\nkafka chaos: total={total} pending_at_kill={pending_at_kill} "
          f"raw_deliveries={raw} raw_duplicates={raw - len(seen)} "
          f"records_on_topic={raw_end} duplicate_records_on_topic={raw_end - len(set(again))}")
    assert pending_at_kill > 0, "the kill did not land mid-stream"
    assert sorted(set(seen)) == list(range(total)), "lost events"
    assert len(seen) == len(set(seen)), "duplicates after dedupe"
    assert sorted(set(again)) == list(range(total)), "a second group lost events"
    assert len(again) == len(set(again)), "duplicates after dedupe (second group)"
    outbox.close()
    dedupe.close()
