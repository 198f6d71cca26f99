"""The NATS JetStream EventBus passes the EventBus conformance suite against nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from aios_mesh.backends import load_adapter, parse_url
from aios_mesh.errors import BackendUnavailable, ConfigError
from aios_mesh.testing.conformance.events import (
    EventBusBasic,
    EventBusPoison,
    EventBusRedelivery,
    make_events,
)
from aios_mesh.testing.processes import free_port

pytestmark = pytest.mark.integration

import nats  # noqa: E402
from aios_mesh_nats import NatsEventBus  # noqa: E402
from aios_mesh_nats.testing import nats_server as start_nats  # noqa: E402


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private nats-server with JetStream on a free port; yields host:port."""
    with start_nats(tmp_path_factory.mktemp("nats-store")) as server:
        yield server.address


class NatsFixtures:
    max_attempts = 3
    visibility_timeout = 1.0

    @pytest.fixture
    async def adapter(self, nats_server: str, tmp_path: Path) -> AsyncIterator[NatsEventBus]:
        url = (f"nats://{nats_server}?stream=CONF&max_attempts={self.max_attempts}"
               f"&visibility_timeout={self.visibility_timeout}")
        bus = load_adapter("events", url, base_dir=tmp_path)
        assert isinstance(bus, NatsEventBus)
        yield bus
        await bus.aclose()

    @pytest.fixture
    async def publish_raw(self, nats_server: str, adapter: NatsEventBus,
                          ) -> AsyncIterator[Callable[[str, bytes], Awaitable[None]]]:
        """Raw bytes through a plain nats-py JetStream publish, bypassing the envelope."""

        await adapter._conn()  # the stream exists
        nc = await nats.connect(f"nats://{nats_server}")
        js = nc.jetstream()

        async def send(topic: str, raw: bytes) -> None:
            await js.publish(adapter.subject(topic), raw)

        yield send
        await nc.close()


class TestNatsEventBus(NatsFixtures, EventBusBasic, EventBusRedelivery, EventBusPoison):
    """The whole suite against nats-server."""


async def test_duplicate_publish_is_stored_once(nats_server: str) -> None:
    from aios_mesh.testing.conformance.events import receive

    bus = NatsEventBus(f"nats://{nats_server}", stream="DEDUPE", prefix="dedupe")
    sub = await bus.subscribe("dedupe.t", group="g")
    events = make_events(3)
    await bus.publish("dedupe.t", events)
    await bus.publish("dedupe.t", events)  # a relay retry: same idempotency keys
    got = await receive(sub, 6, timeout=1.5)
    assert [d.event.id for d in got] == [e.id for e in events]
    await bus.aclose()


def test_from_url_options(tmp_path: Path) -> None:
    bus = NatsEventBus.from_url(
        parse_url("nats://h:4222?stream=S1&prefix=p&max_attempts=7&visibility_timeout=5"),
        base_dir=tmp_path)
    assert (bus.servers, bus.stream, bus.prefix, bus.max_attempts, bus.visibility_timeout) == (
        ["nats://h:4222"], "S1", "p", 7, 5.0)
    assert bus.subject("a.b") == "p.a.b"


@pytest.mark.parametrize(("query", "needle"), [
    ("max_attempts=0", "max_attempts"), ("colour=blue", "colour"), ("start=middle", "start"),
    ("stream=a.b", "stream"), ("timeout=soon", "timeout"),
])
def test_bad_options_say_how_to_fix(tmp_path: Path, query: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        NatsEventBus.from_url(parse_url(f"nats://127.0.0.1:4222?{query}"), base_dir=tmp_path)
    assert needle in str(info.value)
    assert info.value.hint


async def test_server_down_is_backend_unavailable() -> None:
    bus = NatsEventBus(f"nats://127.0.0.1:{free_port()}", timeout=0.5)
    with pytest.raises(BackendUnavailable) as info:
        await bus.publish("t", make_events(1))
    assert info.value.retryable
    await bus.aclose()
