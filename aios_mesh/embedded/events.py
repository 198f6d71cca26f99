"""Embedded EventBus: an in-process bus over one sqlite file, no server.

URL: ``sqlite:///events.db`` (relative to the mesh's state folder) or
``sqlite:////abs/events.db``; options in the query string or as keyword arguments
(keyword arguments win)::

    sqlite:///events.db?max_attempts=5&visibility_timeout=30&retry_delay=0&start=earliest

Storage model (all in one file, WAL mode, so several processes may share it):

* ``messages(topic, pos, key, body)`` — each topic is an append-only log; ``pos`` is the
  topic's offset (1, 2, 3, ...). ``body`` is the event in the CloudEvents JSON format
  (structured content mode); bodies written before CloudEvents still decode.
* ``cursors(topic, grp, committed)`` — per consumer group, every offset ``<= committed`` is
  done (acked or dead-lettered).
* ``leases(topic, grp, pos, attempt, lease_until, ...)`` — per group, the messages above the
  cursor that were handed out at least once. A lease that is not acked before
  ``visibility_timeout`` expires and the message goes back to the group (a consumer that
  crashed before ``ack`` loses nothing).

Delivery is at least once. Within a group, a message whose key has an earlier message leased
by another member is held back, so per-key order is kept. ``nack`` (or an expired lease)
redelivers with ``attempt + 1``; a message delivered ``max_attempts`` times without an ack,
or one that cannot be parsed (poison), goes to ``<topic>.dlq`` with the reason in its headers
(:data:`DEAD_LETTER_REASON`, :data:`ORIGINAL_TOPIC`). sqlite calls are sub-millisecond, so
they run inline on the event loop; every transaction is short (``BEGIN IMMEDIATE``).

The envelope codec and the dead-letter helpers are the ones every bus shares; they live in
:mod:`aios_mesh.ports.event_codec` (re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Self

import structlog

from aios_mesh.backends import BackendURL
from aios_mesh.errors import (
    BackendUnavailable,
    ConfigError,
    IntegrityError,
    InvalidInput,
    MeshError,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.event_codec import (
    DEAD_LETTER_ATTEMPTS,
    DEAD_LETTER_REASON,
    DEAD_LETTER_SUFFIX,
    ORIGINAL_TOPIC,
    POISON_EVENT_TYPE,
    dead_letter_event,
    dead_letter_topic,
    decode_event,
    encode_event,
    poison_event,
)
from aios_mesh.ports.events import Delivery, Event

__all__ = [
    "DEAD_LETTER_ATTEMPTS",
    "DEAD_LETTER_REASON",
    "DEAD_LETTER_SUFFIX",
    "ORIGINAL_TOPIC",
    "POISON_EVENT_TYPE",
    "SqliteEventBus",
    "SqliteSubscription",
    "dead_letter_event",
    "dead_letter_topic",
    "decode_event",
    "encode_event",
    "poison_event",
]

_log = structlog.get_logger(__name__)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS topics(
    name TEXT PRIMARY KEY, next_pos INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages(
    topic TEXT NOT NULL, pos INTEGER NOT NULL, key TEXT, body BLOB NOT NULL,
    published REAL NOT NULL, PRIMARY KEY(topic, pos)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors(
    topic TEXT NOT NULL, grp TEXT NOT NULL, committed INTEGER NOT NULL,
    PRIMARY KEY(topic, grp)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases(
    topic TEXT NOT NULL, grp TEXT NOT NULL, pos INTEGER NOT NULL,
    attempt INTEGER NOT NULL, lease_until REAL NOT NULL, owner TEXT, lease TEXT,
    done INTEGER NOT NULL DEFAULT 0, reason TEXT,
    PRIMARY KEY(topic, grp, pos)) WITHOUT ROWID;
"""

_SCAN: Final = """
SELECT m.pos, m.key, m.body, l.attempt, l.lease_until, l.owner, l.done, l.reason
FROM messages AS m
LEFT JOIN leases AS l ON l.topic = m.topic AND l.grp = ? AND l.pos = m.pos
WHERE m.topic = ? AND m.pos > ?
ORDER BY m.pos LIMIT ?
"""
_SCAN_PAGE: Final = 256

Start = Literal["earliest", "latest"]


class SqliteEventBus:
    """EventBus over one sqlite file (see the module docstring for the storage model).

    Args:
        path: the database file (created with its folder if missing).
        max_attempts: deliveries of one message before it goes to ``<topic>.dlq``.
        visibility_timeout: seconds a fetched message stays leased to its consumer; unacked,
            it is then redelivered to the group.
        retry_delay: seconds a nacked message waits before it is redelivered.
        busy_timeout: seconds to wait for another process's write lock.
        poll_interval: how often a waiting ``fetch`` looks for messages published by other
            processes (publishes in this process wake it at once).
        start: where a new consumer group begins: ``"earliest"`` (every retained message)
            or ``"latest"`` (only messages published after it subscribed).
    """

    features: ClassVar[frozenset[Feature]] = frozenset(
        {Feature.CONSUMER_GROUPS, Feature.DEAD_LETTER, Feature.DURABLE})

    def __init__(self, path: str | Path, *, max_attempts: int = 5,
                 visibility_timeout: float = 30.0, retry_delay: float = 0.0,
                 busy_timeout: float = 5.0, poll_interval: float = 0.05,
                 start: Start = "earliest") -> None:
        if max_attempts < 1:
            raise ConfigError(f"max_attempts={max_attempts} must be at least 1",
                              hint="write max_attempts=5")
        if start not in ("earliest", "latest"):
            raise ConfigError(f"start={start!r} is neither 'earliest' nor 'latest'",
                              hint="write start=earliest")
        self.path = Path(path)
        self.max_attempts = max_attempts
        self.visibility_timeout = visibility_timeout
        self.retry_delay = retry_delay
        self.poll_interval = poll_interval
        self.start: Start = start
        self._waiters: dict[str, asyncio.Event] = {}
        self._acks: dict[tuple[str, str], list[int]] = {}
        self._ack_flush: asyncio.Handle | None = None
        self._lease_ids = itertools.count(1)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None,
                                   timeout=busy_timeout, cached_statements=64)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise _error(exc, self.path) from exc
        self._conn: sqlite3.Connection | None = conn

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """Build from ``sqlite:///events.db?max_attempts=5&visibility_timeout=30``.

        Options (query string or keyword, keyword wins): ``max_attempts`` (int, 5),
        ``visibility_timeout`` (s, 30), ``retry_delay`` (s, 0), ``busy_timeout`` (s, 5),
        ``poll_interval`` (s, 0.05), ``start`` (``earliest`` | ``latest``).
        """
        url = url.with_options(options)
        url.check_options({"max_attempts", "visibility_timeout", "retry_delay", "busy_timeout",
                           "poll_interval", "start"}, what="sqlite events")
        start = url.choice_option("start", ("earliest", "latest"), "earliest")
        return cls(
            url.resolve_path(base_dir),
            max_attempts=url.int_option("max_attempts", 5, min=1),
            visibility_timeout=url.seconds_option("visibility_timeout", 30.0, min=0.001),
            retry_delay=url.seconds_option("retry_delay", 0.0),
            busy_timeout=url.seconds_option("busy_timeout", 5.0),
            poll_interval=url.seconds_option("poll_interval", 0.05, min=0.001),
            start="latest" if start == "latest" else "earliest",
        )

    # -- port ------------------------------------------------------------------------------

    async def publish(self, topic: str, events: Sequence[Event]) -> None:
        """Append ``events`` to ``topic`` in order, in one transaction (durable on return)."""
        _check_topic(topic)
        rows: list[tuple[str | None, bytes]] = []
        for event in events:
            if not isinstance(event, Event):
                raise InvalidInput(f"publish takes Event objects, got {type(event).__name__}",
                                   hint="wrap the payload: Event(type=..., source=..., "
                                        "tenant=..., data=...)")
            rows.append((event.key, encode_event(event)))
        if rows:
            self.publish_raw_many(topic, rows)

    async def subscribe(self, topic: str, *, group: str) -> SqliteSubscription:
        """Join consumer group ``group`` on ``topic`` (the group is created on first use)."""
        _check_topic(topic)
        if not isinstance(group, str) or not group:
            raise InvalidInput("a consumer group needs a non-empty name",
                               hint="subscribe(topic, group='billing')")
        with self._tx() as conn:
            if self.start == "latest":
                row = conn.execute("SELECT next_pos FROM topics WHERE name = ?",
                                   (topic,)).fetchone()
                committed = (row[0] - 1) if row else 0
            else:
                committed = 0
            conn.execute("INSERT OR IGNORE INTO cursors(topic, grp, committed) VALUES (?, ?, ?)",
                         (topic, group, committed))
        return SqliteSubscription(self, topic, group)

    async def aclose(self) -> None:
        """Write pending acks and close the database connection (idempotent)."""
        if self._conn is not None and self._acks:
            with contextlib.suppress(MeshError):  # unwritten acks only mean redelivery
                self.flush_acks()
        if self._ack_flush is not None:
            self._ack_flush.cancel()
            self._ack_flush = None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        for waiter in self._waiters.values():
            waiter.set()
        self._waiters.clear()

    # -- extras ----------------------------------------------------------------------------

    async def publish_raw(self, topic: str, raw: bytes, *, key: str | None = None) -> None:
        """Append raw bytes as they are (tests use it to publish poison messages)."""
        _check_topic(topic)
        self.publish_raw_many(topic, [(key, bytes(raw))])

    def publish_raw_many(self, topic: str, rows: Sequence[tuple[str | None, bytes]]) -> None:
        """Append ``(key, body)`` rows to ``topic`` in one transaction (sync)."""
        with self._tx() as conn:
            self._append(conn, topic, rows)
        self._notify(topic)

    def lag(self, topic: str, *, group: str) -> int:
        """Messages on ``topic`` not yet done by ``group`` (in flight included)."""
        self.flush_acks()
        conn = self._connection()
        with _translate(self.path):
            row = conn.execute(
                "SELECT (SELECT coalesce(max(next_pos) - 1, 0) FROM topics WHERE name = ?)"
                " - coalesce((SELECT committed FROM cursors WHERE topic = ? AND grp = ?), 0)"
                " - (SELECT count(*) FROM leases WHERE topic = ? AND grp = ? AND done = 1)",
                (topic, topic, group, topic, group)).fetchone()
        return int(row[0])

    # -- internals -------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BackendUnavailable(f"event bus {self.path} is closed",
                                     hint="open a new SqliteEventBus")
        return self._conn

    def flush_acks(self) -> None:
        """Write the acks queued by ``Subscription.ack`` now (one transaction)."""
        if self._acks:
            with self._tx():
                pass

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; queued acks are applied first, in the same transaction."""
        conn = self._connection()
        acks, self._acks = self._acks, {}
        try:
            with _translate(self.path):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for (topic, group), positions in acks.items():
                        conn.executemany(
                            "UPDATE leases SET done = 1 WHERE topic = ? AND grp = ? AND pos = ?"
                            " AND done = 0", [(topic, group, pos) for pos in positions])
                        self._advance(conn, topic, group)
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
        except BaseException:
            for key, positions in acks.items():  # not written: keep them for the next try
                self._acks.setdefault(key, [])[:0] = positions
            raise

    def _queue_ack(self, topic: str, group: str, pos: int) -> None:
        """Acks are batched: written with the next bus transaction, or as soon as the event
        loop runs callbacks again. A crash before that only means a redelivery."""
        self._acks.setdefault((topic, group), []).append(pos)
        if self._ack_flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush_acks()
                return
            self._ack_flush = loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._ack_flush = None
        if self._conn is None:
            return
        try:
            self.flush_acks()
        except MeshError as exc:  # kept queued; the next bus call writes them
            _log.warning("events.ack_flush_failed", path=str(self.path), error=str(exc))

    def _append(self, conn: sqlite3.Connection, topic: str,
                rows: Sequence[tuple[str | None, bytes]]) -> None:
        row = conn.execute("SELECT next_pos FROM topics WHERE name = ?", (topic,)).fetchone()
        first = int(row[0]) if row else 1
        now = time.time()
        conn.executemany(
            "INSERT INTO messages(topic, pos, key, body, published) VALUES (?, ?, ?, ?, ?)",
            [(topic, first + i, key, body, now) for i, (key, body) in enumerate(rows)])
        conn.execute("INSERT INTO topics(name, next_pos) VALUES (?, ?) "
                     "ON CONFLICT(name) DO UPDATE SET next_pos = excluded.next_pos",
                     (topic, first + len(rows)))

    def _dead_letter(self, conn: sqlite3.Connection, topic: str, group: str, pos: int,
                     attempt: int, event: Event, lease: str | None) -> None:
        """Mark ``pos`` done for ``group`` and append ``event`` to the DLQ (inside a tx)."""
        self._append(conn, dead_letter_topic(topic), [(event.key, encode_event(event))])
        conn.execute(
            "INSERT INTO leases(topic, grp, pos, attempt, lease_until, owner, lease, done, reason)"
            " VALUES (?, ?, ?, ?, 0, NULL, ?, 1, ?) ON CONFLICT(topic, grp, pos) DO UPDATE SET"
            " attempt = excluded.attempt, done = 1, reason = excluded.reason",
            (topic, group, pos, attempt, lease, event.headers.get(DEAD_LETTER_REASON)))
        self._notify(dead_letter_topic(topic))

    def _advance(self, conn: sqlite3.Connection, topic: str, group: str) -> None:
        """Move the group's cursor over the run of done offsets just above it."""
        row = conn.execute("SELECT committed FROM cursors WHERE topic = ? AND grp = ?",
                           (topic, group)).fetchone()
        if row is None:
            return
        start = committed = int(row[0])
        while True:
            done = conn.execute(
                "SELECT pos FROM leases WHERE topic = ? AND grp = ? AND pos > ? AND done = 1 "
                "ORDER BY pos LIMIT 512", (topic, group, committed)).fetchall()
            for (pos,) in done:
                if pos != committed + 1:
                    break
                committed = pos
            else:
                if len(done) == 512:
                    continue
            break
        if committed != start:
            conn.execute("UPDATE cursors SET committed = ? WHERE topic = ? AND grp = ?",
                         (committed, topic, group))
            conn.execute("DELETE FROM leases WHERE topic = ? AND grp = ? AND pos <= ?",
                         (topic, group, committed))

    def _claim(self, topic: str, group: str, owner: str, max_messages: int) -> list[Delivery]:
        """Lease up to ``max_messages`` deliverable messages to ``owner`` (one transaction)."""
        out: list[Delivery] = []
        now = time.time()
        until = now + self.visibility_timeout
        lease = f"{owner}:{next(self._lease_ids)}"
        dead = False
        with self._tx() as conn:
            row = conn.execute("SELECT committed FROM cursors WHERE topic = ? AND grp = ?",
                               (topic, group)).fetchone()
            after = int(row[0]) if row else 0
            blocked: set[str] = set()
            grants: list[tuple[Any, ...]] = []
            while len(out) < max_messages:
                page = conn.execute(_SCAN, (group, topic, after, _SCAN_PAGE)).fetchall()
                for pos, key, body, attempt, lease_until, holder, done, reason in page:
                    after = pos
                    if done or (key is not None and key in blocked):
                        continue
                    if attempt is not None and lease_until > now:  # leased right now
                        if key is not None and holder != owner:
                            blocked.add(key)
                        continue
                    attempt = (attempt or 0) + 1
                    if attempt > self.max_attempts:  # its last lease expired unacked
                        try:
                            event = decode_event(body)
                        except InvalidInput:  # pragma: no cover - decoded when first leased
                            event = poison_event(body, topic=topic, reason="unparseable")
                        why = (f"not acked within {self.visibility_timeout:g}s "
                               f"on {attempt - 1} deliveries")
                        if reason:
                            why += f"; last nack: {reason}"
                        self._dead_letter(conn, topic, group, pos, attempt - 1,
                                          dead_letter_event(event, topic=topic, reason=why,
                                                            attempts=attempt - 1), None)
                        dead = True
                        continue
                    try:
                        event = decode_event(body)
                    except InvalidInput as exc:
                        self._dead_letter(conn, topic, group, pos, attempt,
                                          poison_event(body, topic=topic, reason=str(exc)),
                                          None)
                        dead = True
                        continue
                    grants.append((topic, group, pos, attempt, until, owner, lease))
                    out.append(Delivery(event=event, topic=topic, attempt=attempt,
                                        token=(pos, lease)))
                    if len(out) >= max_messages:
                        break
                if len(page) < _SCAN_PAGE:
                    break
            if grants:
                conn.executemany(
                    "INSERT INTO leases(topic, grp, pos, attempt, lease_until, owner, lease, done)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT(topic, grp, pos) DO UPDATE SET"
                    " attempt = excluded.attempt, lease_until = excluded.lease_until,"
                    " owner = excluded.owner, lease = excluded.lease", grants)
            if dead:
                self._advance(conn, topic, group)
        return out

    def _nack(self, topic: str, group: str, pos: int, lease: str, reason: str) -> None:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT attempt, lease, done FROM leases WHERE topic = ? AND grp = ? AND pos = ?",
                (topic, group, pos)).fetchone()
            if row is None or row[2] or row[1] != lease:
                return  # acked, dead-lettered, or already redelivered to another member
            attempt = int(row[0])
            if attempt >= self.max_attempts:
                body = conn.execute("SELECT body FROM messages WHERE topic = ? AND pos = ?",
                                    (topic, pos)).fetchone()[0]
                why = reason or f"nacked on {attempt} deliveries"
                self._dead_letter(conn, topic, group, pos, attempt,
                                  dead_letter_event(decode_event(body), topic=topic,
                                                    reason=why, attempts=attempt), lease)
                self._advance(conn, topic, group)
                return
            conn.execute("UPDATE leases SET lease_until = ?, owner = NULL, lease = NULL,"
                         " reason = ? WHERE topic = ? AND grp = ? AND pos = ?",
                         (time.time() + self.retry_delay, reason or None, topic, group, pos))
        self._notify(topic)

    def _release(self, topic: str, group: str, owner: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE leases SET lease_until = 0, owner = NULL, lease = NULL"
                         " WHERE topic = ? AND grp = ? AND owner = ? AND done = 0",
                         (topic, group, owner))
        self._notify(topic)

    def _notify(self, topic: str) -> None:
        waiter = self._waiters.pop(topic, None)
        if waiter is not None:
            waiter.set()

    async def _wait(self, topic: str, seconds: float) -> None:
        waiter = self._waiters.get(topic)
        if waiter is None:
            waiter = self._waiters[topic] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), seconds)


class SqliteSubscription:
    """One member of a consumer group; ``fetch`` leases messages to this member."""

    def __init__(self, bus: SqliteEventBus, topic: str, group: str) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self.member = uuid.uuid4().hex
        self._closed = False

    async def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Up to ``max_messages`` deliveries; waits up to ``timeout`` s for the first one."""
        if self._closed:
            raise BackendUnavailable("subscription is closed", hint="subscribe again")
        if max_messages < 1:
            raise InvalidInput(f"max_messages={max_messages} must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            got = self.bus._claim(self.topic, self.group, self.member, max_messages)
            remaining = deadline - loop.time()
            if got or remaining <= 0:
                return got
            await self.bus._wait(self.topic, min(remaining, self.bus.poll_interval))

    async def ack(self, delivery: Delivery) -> None:
        """Mark the delivery done for this group (a late or repeated ack is harmless).

        Acks are batched: written in the bus's next transaction or when the event loop next
        runs callbacks (one transaction for a whole batch); ``bus.flush_acks()`` forces it.
        """
        pos, _ = self._token(delivery)
        self.bus._queue_ack(self.topic, self.group, pos)

    async def nack(self, delivery: Delivery, *, reason: str = "") -> None:
        """Redeliver (``attempt + 1``) or, after ``max_attempts``, dead-letter with ``reason``."""
        pos, lease = self._token(delivery)
        self.bus._nack(self.topic, self.group, pos, lease, reason)

    async def aclose(self) -> None:
        """Leave the group; messages leased to this member go back to the group at once."""
        if self._closed:
            return
        self._closed = True
        if self.bus._conn is not None:
            self.bus._release(self.topic, self.group, self.member)

    def _token(self, delivery: Delivery) -> tuple[int, str]:
        token = delivery.token
        if (delivery.topic != self.topic or not isinstance(token, tuple) or len(token) != 2
                or not isinstance(token[0], int) or not isinstance(token[1], str)):
            raise InvalidInput("this delivery does not belong to this subscription",
                               hint="ack/nack a delivery on the subscription that fetched it")
        return token[0], token[1]


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not topic:
        raise InvalidInput("a topic needs a non-empty name", hint="e.g. 'invoices.extracted'")


def _error(exc: sqlite3.Error, path: Path) -> MeshError:
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text
                                                      or "unable to open" in text):
        return BackendUnavailable(f"event bus {path} is unavailable: {exc}",
                                  hint="another process holds the write lock too long; "
                                       "retry or raise busy_timeout")
    return IntegrityError(f"event bus {path} failed: {exc}",
                          hint="check the file and its folder are writable and not corrupt")


@contextlib.contextmanager
def _translate(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise _error(exc, path) from exc
