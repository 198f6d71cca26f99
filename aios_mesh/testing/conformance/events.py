"""EventBus conformance suite.

Mixins:

* :class:`EventBusBasic` — publish/fetch/ack round trip with the whole envelope, per-key
  order, two groups each get every event, members of one group share the events.
* :class:`EventBusRedelivery` — ``nack`` redelivers with ``attempt + 1``, an unacked lease
  expires and is redelivered to the group, bounded retries end in ``<topic>.dlq``.
* :class:`EventBusPoison` — a malformed message or another CloudEvents ``specversion`` is
  dead-lettered with its reason and never reaches (or crashes) the consumer; a foreign
  CloudEvent with only the required attributes, and an envelope written before CloudEvents,
  are delivered with the documented defaults.

The concrete class provides two fixtures and may tune the class attributes of
:class:`EventBusFixtures`::

    class TestSqlite(EventBusBasic, EventBusRedelivery, EventBusPoison):
        max_attempts = 3          # the adapter must be built with these two settings
        visibility_timeout = 0.3

        @pytest.fixture
        async def adapter(self, tmp_path):
            bus = SqliteEventBus(tmp_path / "events.db", max_attempts=self.max_attempts,
                                 visibility_timeout=self.visibility_timeout)
            yield bus
            await bus.aclose()

        @pytest.fixture
        def publish_raw(self, adapter):
            return adapter.publish_raw      # async (topic, raw_bytes) -> None

Dead-letter contract: the DLQ event of a valid message is that event (same ``id`` and
``idempotency_key``) with the headers ``deadletterreason``, ``deadlettertopic`` (and
``deadletterattempts``) added; a message that cannot be parsed is carried by a wrapper event
of type ``aios.mesh.poison`` whose ``data["raw"]`` holds the payload (see
:func:`aios_mesh.ports.event_codec.poison_event`).

Tests poll with ``fetch`` until they have what they expect or ``receive_timeout`` passes, so
brokers with asynchronous group joins and at-least-once delivery pass without sleeps.
Every test uses its own topic names.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import orjson
import pytest

from aios_mesh.ports.event_codec import DEAD_LETTER_REASON, ORIGINAL_TOPIC
from aios_mesh.ports.events import Delivery, Event, EventBus, Subscription

__all__ = [
    "DEAD_LETTER_REASON",
    "ORIGINAL_TOPIC",
    "EventBusBasic",
    "EventBusFixtures",
    "EventBusPoison",
    "EventBusRedelivery",
    "make_events",
    "receive",
]


PublishRaw = Callable[[str, bytes], Awaitable[Any]]


def make_events(n: int, *, key: str | None = None, tenant: str = "acme",
                type: str = "conformance.tested") -> list[Event]:
    """``n`` events numbered in ``data["n"]`` (0..n-1), all with ``key``."""
    return [Event(type=type, source="aios-mesh/conformance", tenant=tenant, key=key,
                  data={"n": i, "key": key}) for i in range(n)]


async def receive(sub: Subscription, n: int, *, timeout: float, ack: bool = True,
                  batch: int = 100) -> list[Delivery]:
    """Fetch until ``n`` deliveries arrived or ``timeout`` s passed (acking each if ``ack``)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for delivery in await sub.fetch(min(batch, n - len(got)), timeout=min(remaining, 1.0)):
            got.append(delivery)
            if ack:
                await sub.ack(delivery)
    return got


async def _nothing(sub: Subscription, wait: float) -> list[Delivery]:
    return await sub.fetch(10, timeout=wait)


class EventBusFixtures:
    """Settings the concrete class's ``adapter`` must be built with, and shared fixtures."""

    #: the adapter dead-letters a message after this many deliveries
    max_attempts: ClassVar[int] = 3
    #: seconds after which an unacked delivery is given back to the group
    visibility_timeout: ClassVar[float] = 1.0
    #: how long a test waits for messages it expects
    receive_timeout: ClassVar[float] = 10.0
    #: how long a test waits to be sure nothing (more) arrives
    quiet_period: ClassVar[float] = 0.3

    @pytest.fixture
    def topic(self, request: pytest.FixtureRequest) -> str:
        """A topic name no other test uses."""
        name = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:60]
        return f"conf.{name}.{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def group(self) -> str:
        return f"g-{uuid.uuid4().hex[:8]}"


class EventBusBasic(EventBusFixtures):
    """Round trip, envelope, order per key, groups."""

    def test_is_an_event_bus(self, adapter: EventBus) -> None:
        assert isinstance(adapter, EventBus)
        assert isinstance(adapter.features, frozenset)

    async def test_round_trip_preserves_envelope(self, adapter: EventBus, topic: str,
                                                 group: str) -> None:
        sub = await adapter.subscribe(topic, group=group)
        sent = Event(type="invoice.extracted", source="svc://invoices", tenant="acme",
                     subject="inv-42", key="vendor-7",
                     data={"total": 12.5, "lines": [{"sku": "a", "qty": 2}], "ok": True,
                           "note": None, "text": "Grüße ✓"},
                     headers={"traceparent": "00-abc-def-01", "custom": "yes"},
                     idempotency_key="inv-42:extract")
        await adapter.publish(topic, [sent])
        got = await receive(sub, 1, timeout=self.receive_timeout, ack=False)
        assert len(got) == 1
        delivery = got[0]
        assert delivery.topic == topic
        assert delivery.attempt == 1
        for name in ("type", "source", "tenant", "subject", "key", "id", "time",
                     "idempotency_key", "data"):
            assert getattr(delivery.event, name) == getattr(sent, name), name
        assert delivery.event.headers.items() >= sent.headers.items()
        await sub.ack(delivery)
        assert await _nothing(sub, self.quiet_period) == []
        await sub.aclose()

    async def test_publish_empty_batch_is_a_no_op(self, adapter: EventBus, topic: str,
                                                  group: str) -> None:
        sub = await adapter.subscribe(topic, group=group)
        await adapter.publish(topic, [])
        assert await _nothing(sub, self.quiet_period) == []
        await sub.aclose()

    async def test_fetch_waits_at_most_its_timeout(self, adapter: EventBus, topic: str,
                                                   group: str) -> None:
        sub = await adapter.subscribe(topic, group=group)
        started = time.monotonic()
        assert await sub.fetch(10, timeout=0.2) == []
        assert time.monotonic() - started < 0.2 + 2.0
        await sub.aclose()

    async def test_order_per_key(self, adapter: EventBus, topic: str, group: str) -> None:
        sub = await adapter.subscribe(topic, group=group)
        keys = ["k1", "k2", "k3"]
        streams = {k: make_events(20, key=k) for k in keys}
        interleaved = [streams[k][i] for i in range(20) for k in keys]
        for start in range(0, len(interleaved), 7):  # several publish calls
            await adapter.publish(topic, interleaved[start:start + 7])
        got = await receive(sub, len(interleaved), timeout=self.receive_timeout, batch=16)
        assert len(got) == len(interleaved)
        for k in keys:
            seen = [d.event.data["n"] for d in got if d.event.key == k]
            assert seen == list(range(20)), k
        await sub.aclose()

    async def test_two_groups_each_get_every_event(self, adapter: EventBus,
                                                   topic: str) -> None:
        billing = await adapter.subscribe(topic, group="billing")
        audit = await adapter.subscribe(topic, group="audit")
        events = make_events(25, key="k")
        await adapter.publish(topic, events)
        for sub in (billing, audit):
            got = await receive(sub, 25, timeout=self.receive_timeout)
            assert [d.event.id for d in got] == [e.id for e in events]
        for sub in (billing, audit):
            assert await _nothing(sub, self.quiet_period) == []
            await sub.aclose()

    async def test_group_members_share_the_events(self, adapter: EventBus, topic: str,
                                                  group: str) -> None:
        a = await adapter.subscribe(topic, group=group)
        b = await adapter.subscribe(topic, group=group)
        events = [e for k in range(8) for e in make_events(5, key=f"k{k}")]
        await adapter.publish(topic, events)
        ids: list[str] = []
        deadline = time.monotonic() + self.receive_timeout
        while len(ids) < len(events) and time.monotonic() < deadline:
            for sub in (a, b):
                for delivery in await sub.fetch(7, timeout=0.2):
                    ids.append(delivery.event.id)
                    await sub.ack(delivery)
        want = {e.id for e in events}
        assert sorted(ids) == sorted(want), (  # all, and none twice
            f"missing {len(want - set(ids))}, delivered twice {len(ids) - len(set(ids))}, "
            f"of {len(want)}")
        for sub in (a, b):
            assert await _nothing(sub, self.quiet_period) == []
            await sub.aclose()

    async def test_in_flight_messages_are_not_handed_to_another_member(
            self, adapter: EventBus, topic: str, group: str) -> None:
        a = await adapter.subscribe(topic, group=group)
        b = await adapter.subscribe(topic, group=group)
        events = [make_events(1, key=f"k{i}")[0] for i in range(10)]
        await adapter.publish(topic, events)
        held = await receive(a, 1, timeout=self.receive_timeout, ack=False, batch=10)
        assert held
        # well inside a's lease, b must not see what a holds
        other = await b.fetch(10, timeout=min(self.quiet_period, self.visibility_timeout / 4))
        assert not {d.event.id for d in held} & {d.event.id for d in other}
        for d in held:
            await a.ack(d)
        for d in other:
            await b.ack(d)
        for sub in (a, b):
            await sub.aclose()

    async def test_acked_events_stay_acked_for_the_group(self, adapter: EventBus,
                                                         topic: str, group: str) -> None:
        sub = await adapter.subscribe(topic, group=group)
        events = make_events(6)
        await adapter.publish(topic, events)
        got = await receive(sub, 3, timeout=self.receive_timeout, batch=3)
        assert [d.event.id for d in got] == [e.id for e in events[:3]]
        await sub.aclose()
        again = await adapter.subscribe(topic, group=group)
        rest = await receive(again, 3, timeout=self.receive_timeout)
        assert [d.event.id for d in rest] == [e.id for e in events[3:]]
        assert await _nothing(again, self.quiet_period) == []
        await again.aclose()


class EventBusRedelivery(EventBusFixtures):
    """At least once: nack, lease expiry, bounded retries into ``<topic>.dlq``."""

    async def test_nack_redelivers_with_next_attempt(self, adapter: EventBus, topic: str,
                                                     group: str) -> None:
        sub = await adapter.subscribe(topic, group=group)
        event = make_events(1, key="k")[0]
        await adapter.publish(topic, [event])
        first = await receive(sub, 1, timeout=self.receive_timeout, ack=False)
        assert [(d.event.id, d.attempt) for d in first] == [(event.id, 1)]
        await sub.nack(first[0], reason="transient")
        second = await receive(sub, 1, timeout=self.receive_timeout, ack=False)
        assert [(d.event.id, d.attempt) for d in second] == [(event.id, 2)]
        assert second[0].event.idempotency_key == event.idempotency_key
        await sub.ack(second[0])
        assert await _nothing(sub, self.quiet_period) == []
        await sub.aclose()

    async def test_unacked_lease_expires_and_is_redelivered(self, adapter: EventBus,
                                                            topic: str, group: str) -> None:
        crashed = await adapter.subscribe(topic, group=group)
        event = make_events(1)[0]
        await adapter.publish(topic, [event])
        got = await receive(crashed, 1, timeout=self.receive_timeout, ack=False)
        assert [d.event.id for d in got] == [event.id]
        # the member "crashes": no ack, no close. Another member gets the message back.
        survivor = await adapter.subscribe(topic, group=group)
        again = await receive(survivor, 1, ack=False,
                              timeout=self.visibility_timeout * 3 + self.receive_timeout)
        assert [d.event.id for d in again] == [event.id]
        assert again[0].attempt >= 2
        await survivor.ack(again[0])
        assert await _nothing(survivor, self.quiet_period) == []
        await survivor.aclose()

    async def test_closing_without_ack_gives_messages_back(self, adapter: EventBus,
                                                           topic: str, group: str) -> None:
        first = await adapter.subscribe(topic, group=group)
        events = make_events(3, key="k")
        await adapter.publish(topic, events)
        got = await receive(first, 3, timeout=self.receive_timeout, ack=False)
        assert len(got) == 3
        await first.aclose()
        second = await adapter.subscribe(topic, group=group)
        again = await receive(second, 3, timeout=self.visibility_timeout * 3
                              + self.receive_timeout)
        assert [d.event.id for d in again] == [e.id for e in events]
        await second.aclose()

    async def test_bounded_retries_end_in_dead_letter_topic(self, adapter: EventBus,
                                                            topic: str, group: str) -> None:
        dlq = await adapter.subscribe(f"{topic}.dlq", group=group)
        sub = await adapter.subscribe(topic, group=group)
        event = make_events(1, key="k")[0]
        follower = make_events(1, key="k")[0]
        await adapter.publish(topic, [event, follower])
        attempts: list[int] = []
        for _ in range(self.max_attempts):
            got = await receive(sub, 1, timeout=self.receive_timeout, ack=False, batch=1)
            assert [d.event.id for d in got] == [event.id]
            attempts.append(got[0].attempt)
            await sub.nack(got[0], reason="handler failed: boom")
        assert attempts == list(range(1, self.max_attempts + 1))
        # the poisoned event no longer blocks its key
        nxt = await receive(sub, 1, timeout=self.receive_timeout)
        assert [d.event.id for d in nxt] == [follower.id]
        assert await _nothing(sub, self.quiet_period) == []
        dead = await receive(dlq, 1, timeout=self.receive_timeout)
        assert len(dead) == 1
        assert dead[0].event.id == event.id
        assert dead[0].event.idempotency_key == event.idempotency_key
        assert dead[0].event.data == event.data
        assert "boom" in dead[0].event.headers[DEAD_LETTER_REASON]
        assert dead[0].event.headers[ORIGINAL_TOPIC] == topic
        for s in (sub, dlq):
            await s.aclose()

    async def test_late_ack_after_redelivery_is_harmless(self, adapter: EventBus, topic: str,
                                                         group: str) -> None:
        slow = await adapter.subscribe(topic, group=group)
        event = make_events(1)[0]
        await adapter.publish(topic, [event])
        got = await receive(slow, 1, timeout=self.receive_timeout, ack=False)
        fast = await adapter.subscribe(topic, group=group)
        again = await receive(fast, 1, ack=False,
                              timeout=self.visibility_timeout * 3 + self.receive_timeout)
        assert [d.event.id for d in again] == [event.id]
        await slow.ack(got[0])     # too late, but must not fail
        await fast.ack(again[0])
        for s in (slow, fast):
            assert await _nothing(s, self.quiet_period) == []
            await s.aclose()


class EventBusPoison(EventBusFixtures):
    """Malformed messages are dead-lettered with a reason; the consumer keeps going.

    Needs a ``publish_raw`` fixture: ``async (topic, raw_bytes) -> None`` that puts the bytes
    on the topic as they are, bypassing the envelope.
    """

    async def _assert_dead_lettered(self, adapter: EventBus, publish_raw: PublishRaw,
                                    topic: str, group: str, raw: bytes,
                                    reason_part: str) -> None:
        dlq = await adapter.subscribe(f"{topic}.dlq", group=group)
        sub = await adapter.subscribe(topic, group=group)
        good = make_events(1)[0]
        await publish_raw(topic, raw)
        await adapter.publish(topic, [good])
        got = await receive(sub, 1, timeout=self.receive_timeout)
        assert [d.event.id for d in got] == [good.id]  # the consumer never sees the poison
        assert await _nothing(sub, self.quiet_period) == []
        dead = await receive(dlq, 1, timeout=self.receive_timeout)
        assert len(dead) == 1
        headers = dead[0].event.headers
        assert reason_part in headers[DEAD_LETTER_REASON].lower()
        assert headers[ORIGINAL_TOPIC] == topic
        assert dead[0].event.data.get("raw") == raw.decode("utf-8", "replace")
        for s in (sub, dlq):
            await s.aclose()

    async def test_malformed_json_is_dead_lettered(self, adapter: EventBus,
                                                   publish_raw: PublishRaw, topic: str,
                                                   group: str) -> None:
        await self._assert_dead_lettered(adapter, publish_raw, topic, group,
                                         b"{not json at all", "json")

    async def test_non_utf8_bytes_are_dead_lettered(self, adapter: EventBus,
                                                    publish_raw: PublishRaw, topic: str,
                                                    group: str) -> None:
        await self._assert_dead_lettered(adapter, publish_raw, topic, group,
                                         b"\xff\xfe\x00garbage", "json")

    async def test_missing_fields_are_dead_lettered(self, adapter: EventBus,
                                                    publish_raw: PublishRaw, topic: str,
                                                    group: str) -> None:
        await self._assert_dead_lettered(adapter, publish_raw, topic, group,
                                         b'{"type": "x", "data": {}}', "lacks")

    async def test_unknown_specversion_is_dead_lettered(self, adapter: EventBus,
                                                        publish_raw: PublishRaw,
                                                        topic: str, group: str) -> None:
        doc = orjson.loads(make_events(1)[0].to_bytes())
        doc["specversion"] = "0.3"
        await self._assert_dead_lettered(adapter, publish_raw, topic, group,
                                         orjson.dumps(doc), "specversion")

    async def _receive_raw(self, adapter: EventBus, publish_raw: PublishRaw, topic: str,
                           group: str, raw: bytes) -> Event:
        dlq = await adapter.subscribe(f"{topic}.dlq", group=group)
        sub = await adapter.subscribe(topic, group=group)
        await publish_raw(topic, raw)
        got = await receive(sub, 1, timeout=self.receive_timeout)
        assert len(got) == 1, "a valid foreign event must be delivered, not dead-lettered"
        assert await _nothing(dlq, self.quiet_period) == []
        for s in (sub, dlq):
            await s.aclose()
        return got[0].event

    async def test_minimal_cloudevent_is_delivered_with_defaults(
            self, adapter: EventBus, publish_raw: PublishRaw, topic: str, group: str) -> None:
        raw = orjson.dumps({"specversion": "1.0", "id": "ext-1", "source": "/billing",
                            "type": "com.example.paid", "tenant": "acme"})
        event = await self._receive_raw(adapter, publish_raw, topic, group, raw)
        assert (event.id, event.source, event.type, event.tenant) == (
            "ext-1", "/billing", "com.example.paid", "acme")
        assert event.idempotency_key == "ext-1"
        assert event.data == {}
        assert event.time  # filled on receipt

    async def test_envelope_written_before_cloudevents_is_delivered(
            self, adapter: EventBus, publish_raw: PublishRaw, topic: str, group: str) -> None:
        raw = orjson.dumps({"type": "invoice.paid", "source": "legacy", "tenant": "acme",
                            "data": {"n": 1}, "headers": {"x-custom": "yes"}})
        event = await self._receive_raw(adapter, publish_raw, topic, group, raw)
        assert (event.type, event.tenant, event.data) == ("invoice.paid", "acme", {"n": 1})
        assert event.idempotency_key == event.id  # id: a hash of the message
        assert event.headers == {"xcustom": "yes"}

    async def test_poison_storm_does_not_stop_the_consumer(self, adapter: EventBus,
                                                           publish_raw: PublishRaw,
                                                           topic: str, group: str) -> None:
        sub = await adapter.subscribe(topic, group=group)
        good = make_events(5, key="k")
        for i, event in enumerate(good):
            await publish_raw(topic, b"[1, 2, 3]" if i % 2 else b"null")
            await adapter.publish(topic, [event])
        got = await receive(sub, 5, timeout=self.receive_timeout)
        assert [d.event.id for d in got] == [e.id for e in good]
        await sub.aclose()
