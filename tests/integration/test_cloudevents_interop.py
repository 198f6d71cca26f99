"""CloudEvents interop through real brokers, with clients we did not write.

Kafka (tansu): confluent-kafka produces CloudEvents made by the CloudEvents SDK in binary and
structured mode and our KafkaEventBus consumes them; our bus produces and confluent-kafka
consumes, the SDK parses. NATS (nats-server with JetStream): the same with nats-py as the
plain client and the SDK's JSON event format (the NATS binding's structured mode).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse

from aios_mesh.ports.event_codec import DEAD_LETTER_REASON, POISON_EVENT_TYPE
from aios_mesh.ports.events import Delivery, Event, EventBus
from aios_mesh.testing import launcher
from aios_mesh.testing.conformance.events import receive

pytestmark = pytest.mark.integration

import confluent_kafka  # noqa: E402
import nats  # noqa: E402
from aios_mesh_kafka import KafkaEventBus  # noqa: E402
from aios_mesh_nats import NatsEventBus  # noqa: E402


def _ours() -> Event:
    return Event(type="invoice.paid", source="svc://billing", tenant="acme", key="vendor-7",
                 subject="inv-42", data={"total": 12.5, "text": "Grüße ✓"},
                 headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-"
                                         "b7ad6b7169203331-01"},
                 idempotency_key="inv-42:paid")


def _theirs(**extra: Any) -> CloudEvent:
    return CloudEvent({"type": "com.example.paid", "source": "/billing", "tenant": "acme",
                       "subject": "inv-9", **extra}, {"total": 3})


def _assert_is(ce: Any, event: Event) -> None:
    """The SDK's view of ``event``: every attribute and the data."""
    attrs = dict(ce.get_attributes())
    assert attrs.pop("time") == isoparse(event.time)
    expected = dict(event.attributes())
    del expected["time"]
    assert attrs == expected
    assert ce.get_data() == event.data


def _assert_from(event: Event, ce: CloudEvent) -> None:
    """Our view of the SDK's ``ce``: its attributes, with our defaults filled."""
    assert (event.id, event.source, event.type, event.subject, event.tenant) == (
        ce.get_id(), ce.get_source(), ce.get_type(), ce.get_subject(), "acme")
    assert isoparse(event.time) == ce.get_time()
    assert event.idempotency_key == ce.get_id()  # the documented default
    assert event.data == ce.get_data()


async def _nothing_dead(bus: EventBus, topic: str, group: str) -> None:
    dlq = await bus.subscribe(f"{topic}.dlq", group=group)
    assert await dlq.fetch(10, timeout=1.0) == []
    await dlq.aclose()


def _by_id(deliveries: list[Delivery]) -> dict[str, Event]:
    return {d.event.id: d.event for d in deliveries}


# -- Kafka -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tansu() -> Iterator[str]:
    with launcher("kafka")() as broker:
        yield broker.address


@pytest.fixture
async def kafka_bus(tansu: str) -> AsyncIterator[KafkaEventBus]:
    bus = KafkaEventBus(tansu, client_id="interop", session_timeout_ms=3000,
                        heartbeat_interval_ms=300, timeout=10)
    yield bus
    await bus.aclose()


def _create_topic(address: str, topic: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": address})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1,
                                                replication_factor=1)]).values():
        future.result(timeout=10)


def _produce(address: str, topic: str, messages: list[ce_kafka.KafkaMessage]) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": address, "acks": "all"})
    errors: list[Any] = []
    for m in messages:
        producer.produce(topic, value=m.value, key=m.key, headers=list(m.headers.items()),
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(15) == 0
    assert errors == []


def _consume(address: str, topic: str, n: int) -> list[Any]:
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = confluent_kafka.Consumer({"bootstrap.servers": address,
                                         "group.id": f"sdk-{uuid.uuid4().hex[:8]}",
                                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got.append(msg)
    finally:
        consumer.close()
    return got


async def test_kafka_their_producer_our_consumer(tansu: str, kafka_bus: KafkaEventBus) -> None:
    topic = f"interop.in.{uuid.uuid4().hex[:8]}"
    binary = _theirs(partitionkey="vendor-9", traceparent="00-ab-cd-01")
    structured = _theirs()
    minimal = CloudEvent({"type": "com.example.ping", "source": "/ping", "tenant": "acme"})
    await asyncio.to_thread(_create_topic, tansu, topic)
    await asyncio.to_thread(_produce, tansu, topic, [
        ce_kafka.to_binary(binary, JSONFormat()),
        ce_kafka.to_structured(structured, JSONFormat()),
        ce_kafka.to_binary(minimal, JSONFormat())])
    sub = await kafka_bus.subscribe(topic, group="billing")
    got = _by_id(await receive(sub, 3, timeout=30))
    await sub.aclose()
    assert set(got) == {binary.get_id(), structured.get_id(), minimal.get_id()}
    _assert_from(got[binary.get_id()], binary)
    assert got[binary.get_id()].key == "vendor-9"
    assert got[binary.get_id()].headers == {"traceparent": "00-ab-cd-01"}
    _assert_from(got[structured.get_id()], structured)
    ping = got[minimal.get_id()]
    assert (ping.data, ping.idempotency_key, ping.subject) == ({}, minimal.get_id(), None)
    await _nothing_dead(kafka_bus, topic, "billing")


async def test_kafka_our_producer_their_consumer(tansu: str, kafka_bus: KafkaEventBus) -> None:
    topic = f"interop.out.{uuid.uuid4().hex[:8]}"
    event = _ours()
    await kafka_bus.publish(topic, [event])
    [msg] = await asyncio.to_thread(_consume, tansu, topic, 1)
    headers = dict(msg.headers())
    assert headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/json"
    assert msg.key() == b"vendor-7"
    ce = ce_kafka.from_kafka(ce_kafka.KafkaMessage(headers=headers, key=msg.key(),
                                                   value=msg.value()), JSONFormat())
    assert isinstance(ce, CloudEvent)  # the SDK validated it as a v1.0 event
    _assert_is(ce, event)



async def test_kafka_binary_message_without_tenant_is_dead_lettered_with_its_headers(
        tansu: str, kafka_bus: KafkaEventBus) -> None:
    topic = f"interop.poison.{uuid.uuid4().hex[:8]}"
    tenantless = CloudEvent({"type": "com.example.paid", "source": "/billing"}, {"total": 3})
    await asyncio.to_thread(_create_topic, tansu, topic)
    await asyncio.to_thread(_produce, tansu, topic,
                            [ce_kafka.to_binary(tenantless, JSONFormat())])
    sub = await kafka_bus.subscribe(topic, group="billing")
    # the consumer never sees it: its fetch dead-letters it
    assert await receive(sub, 1, timeout=10) == []
    dlq = await kafka_bus.subscribe(f"{topic}.dlq", group="billing")
    [dead] = await receive(dlq, 1, timeout=30)
    for s in (sub, dlq):
        await s.aclose()
    assert dead.event.type == POISON_EVENT_TYPE
    assert "lacks tenant" in dead.event.headers[DEAD_LETTER_REASON]
    assert dead.event.data["wire_headers"]["ce_id"] == tenantless.get_id()
    assert orjson.loads(dead.event.data["raw"]) == {"total": 3}

# -- NATS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nats_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with launcher("nats")(tmp_path_factory.mktemp("nats")) as server:
        yield server.address


@pytest.fixture
async def nats_bus(nats_address: str) -> AsyncIterator[NatsEventBus]:
    bus = NatsEventBus(f"nats://{nats_address}", stream="INTEROP")
    yield bus
    await bus.aclose()


async def test_nats_their_producer_our_consumer(nats_address: str,
                                                nats_bus: NatsEventBus) -> None:
    topic = f"interop.in.{uuid.uuid4().hex[:8]}"
    sub = await nats_bus.subscribe(topic, group="billing")  # (creates the stream)
    theirs = _theirs(partitionkey="vendor-9")
    minimal = CloudEvent({"type": "com.example.ping", "source": "/ping", "tenant": "acme"})
    nc = await nats.connect(f"nats://{nats_address}")
    try:
        for ce in (theirs, minimal):
            await nc.jetstream().publish(nats_bus.subject(topic), JSONFormat().write(ce),
                                         headers={"content-type": JSONFormat.CONTENT_TYPE})
    finally:
        await nc.close()
    got = _by_id(await receive(sub, 2, timeout=20))
    await sub.aclose()
    _assert_from(got[theirs.get_id()], theirs)
    assert got[theirs.get_id()].key == "vendor-9"
    assert got[minimal.get_id()].data == {}
    await _nothing_dead(nats_bus, topic, "billing")


async def test_nats_our_producer_their_parser(nats_address: str,
                                              nats_bus: NatsEventBus) -> None:
    topic = f"interop.out.{uuid.uuid4().hex[:8]}"
    event = _ours()
    await nats_bus.publish(topic, [event])
    nc = await nats.connect(f"nats://{nats_address}")
    try:
        msg = await nc.jetstream().get_last_msg("INTEROP", nats_bus.subject(topic))
    finally:
        await nc.close()
    assert (msg.headers or {}).get("content-type") == "application/cloudevents+json"
    assert orjson.loads(msg.data or b"")["specversion"] == "1.0"
    ce = JSONFormat().read(CloudEvent, msg.data or b"")
    _assert_is(ce, event)

