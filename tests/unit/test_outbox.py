"""Outbox and Relay: order per key, at least once, restart and crash safety, dedupe helper."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_mesh.embedded.events import SqliteEventBus
from aios_mesh.errors import BackendUnavailable, InvalidInput
from aios_mesh.outbox import IdempotentConsumer, Outbox, Relay, RelayResult
from aios_mesh.ports.event_codec import DEAD_LETTER_REASON
from aios_mesh.ports.events import Event
from aios_mesh.testing.conformance.events import receive


def ev(key: str | None, n: int, tenant: str = "acme") -> Event:
    return Event(type="t.happened", source="test", tenant=tenant, key=key, data={"n": n})


class Collector:
    """A callable sink that records what it accepted and fails on demand."""

    def __init__(self, fail_times: int = 0, fail_keys: frozenset[str] = frozenset()) -> None:
        self.fail_times = fail_times
        self.fail_keys = fail_keys
        self.calls = 0
        self.accepted: list[tuple[str, Event]] = []

    async def __call__(self, topic: str, event: Event) -> None:
        self.calls += 1
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("sink down")
        if event.key in self.fail_keys:
            raise ConnectionError(f"sink rejects {event.key}")
        self.accepted.append((topic, event))

    def per_key(self) -> dict[tuple[str, str | None], list[int]]:
        out: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        for topic, event in self.accepted:
            out[(topic, event.key)].append(event.data["n"])
        return dict(out)


async def drain(relay: Relay, *, rounds: int = 200) -> None:
    for _ in range(rounds):
        await relay.run_once()
        if relay.outbox.pending() == 0:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{relay.outbox.pending()} rows still pending")


def test_put_pending_and_validation(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db") as box:
        assert box.pending() == 0
        box.put("a", ev("k", 0))
        box.put_many([("a", ev("k", 1)), ("b", ev(None, 2))])
        assert box.pending() == 3
        with pytest.raises(InvalidInput):
            box.put("", ev("k", 0))
        with pytest.raises(InvalidInput):
            box.put("a", {"not": "an event"})  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            box.put_many([("a", ev("k", 3)), ("a", "x")])  # type: ignore[list-item]
        assert box.pending() == 3  # put_many is all or nothing
    with pytest.raises(BackendUnavailable):
        box.put("a", ev("k", 0))


async def test_relay_ships_everything_in_order_and_deletes(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for n in range(30):
        box.put("invoices", ev(f"k{n % 3}", n))
    sink = Collector()
    result = await Relay(box, sink).run_once()
    assert result == RelayResult(sent=30)
    assert box.pending() == 0
    assert [e.data["n"] for _, e in sink.accepted] == list(range(30))
    assert await Relay(box, sink).run_once() == RelayResult()
    box.close()


async def test_failing_sink_is_retried_until_accepted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for n in range(10):
        box.put("t", ev("k", n))
    sink = Collector(fail_times=4)
    relay = Relay(box, sink, backoff=0.001, max_backoff=0.01, poll_interval=0.005)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run_forever(stop))
    for _ in range(400):
        if box.pending() == 0:
            break
        await asyncio.sleep(0.005)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert box.pending() == 0
    assert sink.per_key() == {("t", "k"): list(range(10))}  # nothing lost, order kept
    assert sink.calls == 14
    box.close()


async def test_a_failing_key_waits_while_others_go_on(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    for n in range(6):
        box.put("t", ev("bad" if n % 2 else "good", n))
    sink = Collector(fail_keys=frozenset({"bad"}))
    relay = Relay(box, sink, backoff=60)
    first = await relay.run_once()
    assert (first.sent, first.failed, first.deferred) == (3, 1, 2)
    assert sink.per_key() == {("t", "good"): [0, 2, 4]}
    # the failed key is in backoff: not even tried on the next pass
    calls = sink.calls
    second = await relay.run_once()
    assert (second.sent, second.failed, second.deferred) == (0, 0, 3)
    assert sink.calls == calls
    row = sqlite3.connect(tmp_path / "o.db").execute(
        "SELECT attempts, last_error FROM outbox ORDER BY seq LIMIT 1").fetchone()
    assert row[0] == 1
    assert "sink rejects bad" in row[1]
    box.close()


async def test_restart_resumes_pending_rows(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    for n in range(8):
        box.put("t", ev("a" if n < 4 else "b", n))
    down = Collector(fail_keys=frozenset({"b"}))
    await Relay(box, down).run_once()
    assert box.pending() == 4
    box.close()

    box = Outbox(path)  # a new process, say
    assert box.pending() == 4
    up = Collector()
    await drain(Relay(box, up))
    assert up.per_key() == {("t", "b"): [4, 5, 6, 7]}
    box.close()


async def test_routing_by_topic_pattern_and_unroutable_rows_wait(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put("lineage.run", ev(None, 0))
    box.put("invoices", ev("k", 1))
    box.put("audit", ev("k", 2))
    lineage, rest = Collector(), Collector()
    relay = Relay(box, {"lineage.*": lineage, "invoices": rest})
    result = await relay.run_once()
    assert (result.sent, result.unroutable) == (2, 1)
    assert [t for t, _ in lineage.accepted] == ["lineage.run"]
    assert [t for t, _ in rest.accepted] == ["invoices"]
    assert box.pending() == 1
    assert relay.sink_for("audit") is None
    box.close()


async def test_undecodable_rows_are_set_aside(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.put("t", ev("k", 0))
    with sqlite3.connect(tmp_path / "o.db") as raw:
        raw.execute("INSERT INTO outbox(topic, key, body, created) VALUES ('t','k','{bad',0)")
    box.put("t", ev("k", 2))
    sink = Collector()
    result = await Relay(box, sink).run_once()
    assert (result.sent, result.dead) == (2, 1)
    assert (box.pending(), box.dead()) == (0, 1)
    box.close()


async def test_relay_to_an_event_bus(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    bus = SqliteEventBus(tmp_path / "ev.db")
    sub = await bus.subscribe("invoices", group="billing")
    events = [ev(f"k{n % 4}", n) for n in range(100)]
    for e in events:
        box.put("invoices", e)
    result = await Relay(box, bus).run_once()
    assert result.sent == 100
    got = await receive(sub, 100, timeout=5)
    assert [d.event for d in got] == events  # the whole envelope, in order
    await bus.aclose()
    box.close()


class FlakyBus:
    """An EventBus-like sink whose publish fails while ``down`` is set."""

    def __init__(self) -> None:
        self.down = True
        self.published: list[Event] = []

    async def publish(self, topic: str, events: list[Event]) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.published.extend(events)


async def test_bus_outage_loses_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    bus = FlakyBus()
    relay = Relay(box, bus, backoff=0.0)
    for n in range(20):
        box.put("t", ev(f"k{n % 2}", n))
    result = await relay.run_once()
    assert (result.sent, result.failed) == (0, 20)
    bus.down = False
    await drain(relay)
    assert [e.data["n"] for e in bus.published] == list(range(20))
    box.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["a", "b"]),
                              st.sampled_from(["k1", "k2", "k3", None])),
                    min_size=1, max_size=40),
       failures=st.lists(st.booleans(), max_size=60))
def test_order_per_key_under_random_failures(tmp_path_factory: pytest.TempPathFactory,
                                             ops: list[tuple[str, str | None]],
                                             failures: list[bool]) -> None:
    path = tmp_path_factory.mktemp("hyp") / "o.db"
    box = Outbox(path)
    for n, (topic, key) in enumerate(ops):
        box.put(topic, ev(key, n))
    script = iter(failures)
    accepted: list[tuple[str, Event]] = []

    async def sink(topic: str, event: Event) -> None:
        if next(script, False):
            raise ConnectionError("flaky")
        accepted.append((topic, event))

    asyncio.run(drain(Relay(box, sink, backoff=0.0), rounds=200))
    box.close()
    expected: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for n, (topic, key) in enumerate(ops):
        expected[(topic, key)].append(n)
    got: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for topic, event in accepted:
        got[(topic, event.key)].append(event.data["n"])
    assert got == expected  # every row exactly once here (sink refused = not accepted)


# -- crashes -----------------------------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import sys
    from aios_mesh.outbox import Outbox
    from aios_mesh.ports.events import Event
    box = Outbox(sys.argv[1])
    n = 0
    while True:
        box.put("t", Event(type="t", source="s", tenant="a", key=f"k{n % 5}", data={"n": n}))
        print(n, flush=True)   # printed only after put returned: committed
        n += 1
""")

_RELAYER = textwrap.dedent("""
    import asyncio, sys
    from aios_mesh.embedded.events import SqliteEventBus
    from aios_mesh.outbox import Outbox, Relay
    async def main():
        box = Outbox(sys.argv[1]); bus = SqliteEventBus(sys.argv[2])
        relay = Relay(box, bus, batch_size=7)
        print("ready", flush=True)
        while True:
            await relay.run_once()
    asyncio.run(main())
""")


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            text=True, env=env)


async def test_sigkill_mid_write_loses_no_committed_row(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    proc = _spawn(_WRITER, str(path))
    assert proc.stdout is not None
    committed: list[int] = []
    for line in proc.stdout:
        committed.append(int(line))
        if len(committed) >= 2000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    committed += [int(line) for line in proc.stdout.read().split()]
    proc.stdout.close()

    box = Outbox(path)
    sink = Collector()
    await drain(Relay(box, sink))
    relayed = [e.data["n"] for _, e in sink.accepted]
    lost = set(committed) - set(relayed)
    assert lost == set()
    assert relayed == sorted(relayed)  # a single writer: global order kept too
    box.close()


async def test_sigkill_mid_relay_delivers_every_row_at_least_once(tmp_path: Path) -> None:
    box_path, bus_path = tmp_path / "o.db", tmp_path / "ev.db"
    box = Outbox(box_path)
    events = [ev(f"k{n % 3}", n) for n in range(3000)]
    box.put_many(("t", e) for e in events)
    box.close()
    proc = _spawn(_RELAYER, str(box_path), str(bus_path))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    box = Outbox(box_path)
    for _ in range(2000):  # kill it once it has shipped some but not all
        if box.pending() < 2500:
            break
        await asyncio.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    assert box.pending() > 0, "relay finished before it could be killed; use more rows"

    bus = SqliteEventBus(bus_path)
    await drain(Relay(box, bus))
    sub = await bus.subscribe("t", group="check")
    got = await receive(sub, 10_000, timeout=1.0, batch=1000)
    ids = [d.event.id for d in got]
    assert set(ids) == {e.id for e in events}  # lost = 0 (duplicates allowed)
    # duplicates are consecutive re-sends; the first delivery of each key is in order
    for k in range(3):
        firsts = list(dict.fromkeys(d.event.data["n"] for d in got if d.event.key == f"k{k}"))
        assert firsts == [n for n in range(3000) if n % 3 == k]
    await bus.aclose()
    box.close()


# -- dedupe ------------------------------------------------------------------------------------


async def test_idempotent_consumer_drops_redeliveries(tmp_path: Path) -> None:
    bus = SqliteEventBus(tmp_path / "ev.db")
    sub = await bus.subscribe("t", group="g")
    dedupe = IdempotentConsumer(tmp_path / "seen.db")
    event = ev("k", 1)
    await bus.publish("t", [event, event])  # the relay re-sent it after a crash
    handled: list[str] = []

    async def handler(e: Event) -> None:
        handled.append(e.id)

    ran = [await dedupe.handle(sub, d, handler) for d in await sub.fetch(10, timeout=1)]
    assert ran == [True, False]
    assert handled == [event.id]
    assert dedupe.seen(event.idempotency_key)
    assert bus.lag("t", group="g") == 0  # both acked
    assert dedupe.prune() == 0
    dedupe.close()

    dedupe = IdempotentConsumer(tmp_path / "seen.db", ttl=-1)  # remembered across restarts
    assert dedupe.seen(event.idempotency_key)
    assert dedupe.prune() == 1
    dedupe.close()
    await bus.aclose()


async def test_idempotent_consumer_nacks_when_the_handler_fails(tmp_path: Path) -> None:
    bus = SqliteEventBus(tmp_path / "ev.db", max_attempts=2)
    sub = await bus.subscribe("t", group="g")
    dlq = await bus.subscribe("t.dlq", group="g")
    dedupe = IdempotentConsumer(tmp_path / "seen.db")
    await bus.publish("t", [ev("k", 1)])

    async def broken(e: Event) -> None:
        raise ValueError("cannot parse vendor")

    for _ in range(2):
        [delivery] = await sub.fetch(1, timeout=1)
        assert await dedupe.handle(sub, delivery, broken) is False
    [dead] = await dlq.fetch(1, timeout=1)
    assert "ValueError: cannot parse vendor" in dead.event.headers[DEAD_LETTER_REASON]
    dedupe.close()
    await bus.aclose()
