"""The Kafka EventBus passes the EventBus conformance suite against a real tansu broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from aios_mesh.backends import load_adapter, parse_url
from aios_mesh.errors import ConfigError
from aios_mesh.testing.conformance.events import (
    EventBusBasic,
    EventBusPoison,
    EventBusRedelivery,
)
from aios_mesh.testing.processes import free_port

pytestmark = pytest.mark.integration

from aios_mesh_kafka import KafkaEventBus  # noqa: E402
from aios_mesh_kafka.testing import tansu_broker  # noqa: E402


@pytest.fixture(scope="module")
def tansu() -> Iterator[str]:
    """A private tansu broker (memory storage) on a free port; yields host:port."""
    with tansu_broker() as broker:
        yield broker.address


class KafkaFixtures:
    max_attempts = 3
    visibility_timeout = 2.0
    receive_timeout = 20.0

    @pytest.fixture
    async def adapter(self, tansu: str, tmp_path: Path) -> AsyncIterator[KafkaEventBus]:
        url = (f"kafka://{tansu}?client_id=conformance&session_timeout_ms=3000"
               f"&heartbeat_interval_ms=300&max_attempts={self.max_attempts}"
               f"&visibility_timeout={self.visibility_timeout}&timeout=10")
        bus = load_adapter("events", url, base_dir=tmp_path)
        assert isinstance(bus, KafkaEventBus)
        yield bus
        await bus.aclose()

    @pytest.fixture
    def publish_raw(self, adapter: KafkaEventBus) -> Callable[[str, bytes], Awaitable[None]]:
        """Raw bytes through the plain kafka-python producer, bypassing the envelope."""
        from kafka import KafkaProducer

        async def send(topic: str, raw: bytes) -> None:
            import asyncio

            def blocking() -> None:
                adapter._ensure_topic(topic)
                producer = KafkaProducer(bootstrap_servers=adapter.bootstrap_servers, acks="all")
                try:
                    producer.send(topic, value=raw).get(timeout=10)
                finally:
                    producer.close(timeout=5)

            await asyncio.to_thread(blocking)

        return send


class TestKafkaEventBus(KafkaFixtures, EventBusBasic, EventBusRedelivery, EventBusPoison):
    """The whole suite against tansu."""


def test_from_url_options(tmp_path: Path) -> None:
    bus = KafkaEventBus.from_url(
        parse_url("kafka://h1:9092?bootstrap=h2:9092&client_id=x&session_timeout_ms=2000&max_attempts=7"
                  "&partitions=3&start=latest"), base_dir=tmp_path)
    assert bus.bootstrap_servers == "h1:9092,h2:9092"
    assert (bus.client_id, bus.session_timeout_ms, bus.max_attempts, bus.partitions,
            bus.start) == ("x", 2000, 7, 3, "latest")


@pytest.mark.parametrize(("query", "needle"), [
    ("max_attempts=0", "max_attempts"), ("colour=blue", "colour"), ("start=middle", "start"),
    ("session_timeout_ms=soon", "session_timeout_ms"), ("create_topics=maybe", "create_topics"),
])
def test_bad_options_say_how_to_fix(tmp_path: Path, query: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        KafkaEventBus.from_url(parse_url(f"kafka://127.0.0.1:9092?{query}"), base_dir=tmp_path)
    assert needle in str(info.value)
    assert info.value.hint


async def test_broker_down_is_backend_unavailable(tmp_path: Path) -> None:
    from aios_mesh.errors import BackendTimeout, BackendUnavailable
    from aios_mesh.testing.conformance.events import make_events

    bus = KafkaEventBus(f"127.0.0.1:{free_port()}", timeout=1.0)
    with pytest.raises((BackendUnavailable, BackendTimeout)) as info:
        await bus.publish("t", make_events(1))
    assert info.value.retryable
    await bus.aclose()
