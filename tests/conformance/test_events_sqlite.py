"""The embedded sqlite EventBus passes the EventBus conformance suite, plus its own checks."""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from aios_mesh.backends import load_adapter, parse_url
from aios_mesh.embedded.events import POISON_EVENT_TYPE, SqliteEventBus
from aios_mesh.errors import ConfigError, InvalidInput
from aios_mesh.ports.base import Feature
from aios_mesh.ports.event_codec import DEAD_LETTER_ATTEMPTS, DEAD_LETTER_REASON
from aios_mesh.testing.conformance.events import (
    EventBusBasic,
    EventBusPoison,
    EventBusRedelivery,
    make_events,
    receive,
)


class SqliteFixtures:
    max_attempts = 3
    visibility_timeout = 0.3

    @pytest.fixture
    async def adapter(self, tmp_path: Path) -> AsyncIterator[SqliteEventBus]:
        url = (f"sqlite:///events.db?max_attempts={self.max_attempts}"
               f"&visibility_timeout={self.visibility_timeout}")
        bus = load_adapter("events", url, base_dir=tmp_path)
        assert isinstance(bus, SqliteEventBus)
        yield bus
        await bus.aclose()

    @pytest.fixture
    def publish_raw(self, adapter: SqliteEventBus) -> Callable[[str, bytes], Awaitable[None]]:
        return adapter.publish_raw


class TestSqliteEventBus(SqliteFixtures, EventBusBasic, EventBusRedelivery, EventBusPoison):
    """The whole suite."""


# -- sqlite-specific ---------------------------------------------------------------------------


def test_from_url_options_and_path(tmp_path: Path) -> None:
    bus = SqliteEventBus.from_url(
        parse_url("sqlite:///sub/ev.db?max_attempts=7&visibility_timeout=2.5&start=latest"),
        base_dir=tmp_path, retry_delay=0.1)
    assert bus.path == tmp_path / "sub" / "ev.db"
    assert (bus.max_attempts, bus.visibility_timeout, bus.retry_delay, bus.start) == (
        7, 2.5, 0.1, "latest")
    assert bus.features >= {Feature.CONSUMER_GROUPS, Feature.DEAD_LETTER, Feature.DURABLE}
    asyncio.run(bus.aclose())


@pytest.mark.parametrize(("query", "needle"), [
    ("max_attempts=zero", "max_attempts"),
    ("max_attempts=0", "max_attempts"),
    ("visibility_timeout=-1", "visibility_timeout"),
    ("start=middle", "start"),
    ("colour=blue", "colour"),
])
def test_bad_options_say_how_to_fix(tmp_path: Path, query: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        SqliteEventBus.from_url(parse_url(f"sqlite:///ev.db?{query}"), base_dir=tmp_path)
    assert needle in str(info.value)
    assert info.value.hint


async def test_publish_rejects_non_events(tmp_path: Path) -> None:
    bus = SqliteEventBus(tmp_path / "ev.db")
    with pytest.raises(InvalidInput):
        await bus.publish("t", ["not an event"])  # type: ignore[list-item]
    with pytest.raises(InvalidInput):
        await bus.publish("", make_events(1))
    await bus.aclose()


async def test_messages_and_offsets_survive_reopen(tmp_path: Path) -> None:
    bus = SqliteEventBus(tmp_path / "ev.db")
    sub = await bus.subscribe("t", group="g")
    events = make_events(4, key="k")
    await bus.publish("t", events)
    got = await receive(sub, 2, timeout=5, batch=2)
    assert [d.event.id for d in got] == [e.id for e in events[:2]]
    await bus.aclose()  # no sub.aclose(): as if the process stopped

    bus = SqliteEventBus(tmp_path / "ev.db")
    sub = await bus.subscribe("t", group="g")
    rest = await receive(sub, 2, timeout=5)
    assert [d.event.id for d in rest] == [e.id for e in events[2:]]
    assert bus.lag("t", group="g") == 0
    await bus.aclose()


async def test_start_latest_skips_history(tmp_path: Path) -> None:
    bus = SqliteEventBus(tmp_path / "ev.db", start="latest")
    await bus.publish("t", make_events(3))
    sub = await bus.subscribe("t", group="late")
    assert await sub.fetch(10, timeout=0.05) == []
    fresh = make_events(1)
    await bus.publish("t", fresh)
    assert [d.event.id for d in await sub.fetch(10, timeout=1)] == [fresh[0].id]
    await bus.aclose()


async def test_a_key_is_not_handed_to_two_members_at_once(tmp_path: Path) -> None:
    bus = SqliteEventBus(tmp_path / "ev.db")
    a = await bus.subscribe("t", group="g")
    b = await bus.subscribe("t", group="g")
    await bus.publish("t", make_events(3, key="same") + make_events(2, key="other"))
    first = await a.fetch(1, timeout=1)       # a holds "same" #0
    second = await b.fetch(10, timeout=0.05)  # b must not get "same" #1, #2
    assert [d.event.key for d in first] == ["same"]
    assert {d.event.key for d in second} == {"other"}
    await a.ack(first[0])
    third = await b.fetch(10, timeout=1)
    assert [d.event.data["n"] for d in third] == [1, 2]
    await bus.aclose()


async def test_expired_leases_count_towards_max_attempts(tmp_path: Path) -> None:
    bus = SqliteEventBus(tmp_path / "ev.db", max_attempts=2, visibility_timeout=0.05)
    sub = await bus.subscribe("t", group="g")
    dlq = await bus.subscribe("t.dlq", group="g")
    await bus.publish("t", make_events(1))
    for attempt in (1, 2):
        got = await sub.fetch(1, timeout=1)
        assert [d.attempt for d in got] == [attempt]
        await asyncio.sleep(0.08)
    assert await sub.fetch(1, timeout=0.1) == []
    dead = await dlq.fetch(1, timeout=1)
    assert "not acked" in dead[0].event.headers[DEAD_LETTER_REASON]
    assert dead[0].event.headers[DEAD_LETTER_ATTEMPTS] == "2"
    await bus.aclose()


async def test_poison_wrapper_keeps_exact_bytes(tmp_path: Path) -> None:
    import base64

    bus = SqliteEventBus(tmp_path / "ev.db")
    dlq = await bus.subscribe("t.dlq", group="g")
    sub = await bus.subscribe("t", group="g")
    await bus.publish_raw("t", b"\x00\xffbin")
    assert await sub.fetch(1, timeout=0.05) == []
    dead = await dlq.fetch(1, timeout=1)
    assert dead[0].event.type == POISON_EVENT_TYPE
    assert base64.b64decode(dead[0].event.data["raw_b64"]) == b"\x00\xffbin"
    await bus.aclose()


def _producer(path: str, topic: str, n: int) -> None:
    async def main() -> None:
        bus = SqliteEventBus(path)
        for i in range(n):
            await bus.publish(topic, make_events(1, key=f"k{i % 3}"))
        await bus.aclose()

    asyncio.run(main())


async def test_processes_share_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "ev.db")
    bus = SqliteEventBus(path)
    sub = await bus.subscribe("shared", group="g")
    ctx = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    procs = [ctx.Process(target=_producer, args=(path, "shared", 100)) for _ in range(2)]
    for p in procs:
        p.start()
    got = await receive(sub, 200, timeout=20)
    for p in procs:
        await asyncio.to_thread(p.join, 10)
        assert p.exitcode == 0
    assert len(got) == 200
    assert len({d.event.id for d in got}) == 200
    await bus.aclose()


async def test_concurrent_tasks_consume_each_event_once(tmp_path: Path) -> None:
    bus = SqliteEventBus(tmp_path / "ev.db")
    events = [e for k in range(10) for e in make_events(30, key=f"k{k}")]
    subs = [await bus.subscribe("t", group="g") for _ in range(4)]
    seen: list[tuple[str | None, int]] = []

    async def worker(sub: object) -> None:
        from aios_mesh.embedded.events import SqliteSubscription
        assert isinstance(sub, SqliteSubscription)
        while len(seen) < len(events):
            for d in await sub.fetch(5, timeout=0.05):
                seen.append((d.event.key, d.event.data["n"]))
                await asyncio.sleep(0)
                await sub.ack(d)

    await bus.publish("t", events)
    await asyncio.wait_for(asyncio.gather(*(worker(s) for s in subs)), 20)
    assert len(seen) == len(events)
    for k in range(10):  # per-key order holds across members of the group
        assert [n for key, n in seen if key == f"k{k}"] == list(range(30))
    await bus.aclose()
