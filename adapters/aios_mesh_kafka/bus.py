"""The EventBus port on Apache Kafka (or any Kafka-protocol broker) through kafka-python.

URL: ``kafka://host:9092?client_id=aios-mesh&max_attempts=5`` — options (query
string or keyword, keyword wins):

* ``bootstrap``: more brokers, comma-separated (``?bootstrap=h2:9092,h3:9092``),
* ``client_id`` (``aios-mesh``), ``timeout`` (s, 10: delivery, metadata and commit waits),
* ``connect_timeout`` (s, 2): how long finding a broker (bootstrap) may take,
* ``session_timeout_ms`` (6000), ``heartbeat_interval_ms`` (session / 6),
* ``max_attempts`` (5): deliveries of one message before it goes to ``<topic>.dlq``,
* ``visibility_timeout`` (s, 30): how long a fetched, unacked message stays with its member,
* ``start`` (``earliest`` | ``latest``): where a new consumer group begins,
* ``partitions`` (1) and ``replication`` (1): used when the bus creates a missing topic,
* ``create_topics`` (true), ``idempotent`` (false: enable the idempotent producer).

Publish: one keyed record per event (key = ``Event.key``, else ``Event.id``) in the
CloudEvents Kafka binding's *binary content mode*: every attribute a ``ce_<name>`` record
header (``ce_specversion``, ``ce_id``, ``ce_source``, ``ce_type``, ``ce_time``, ``ce_tenant``,
``ce_idempotencykey``, ``ce_partitionkey``, ...), ``content-type: application/json``, and the
data as the record value; ``acks=all``, one request in flight per connection (order per key
holds through retries); ``publish`` returns once every record is acknowledged.
A consumer reads binary mode (a ``ce_specversion`` header) and structured mode (the
CloudEvents JSON format as the value, or the envelope written before CloudEvents).

Consume: one ``KafkaConsumer`` per subscription, in the consumer group, with manual commits.
kafka-python is synchronous and not thread-safe, so each subscription owns one thread that
makes every call on its consumer; between ``fetch`` calls that thread keeps polling with the
partitions paused, so the member answers rebalances at once, and a (re)join is finished in
one go (see ``_settle``: a ``fetch`` during a rebalance may take up to the session timeout
longer than its ``timeout``). Per partition the subscription
tracks what it handed out and what was acked, and commits the highest *contiguous* acked
offset (a gap — an unacked or nacked message — holds the commit back, so nothing is lost).

``nack`` retries *in place*: the partition is rewound to the nacked offset and the same
message comes back (``attempt + 1``) before anything behind it, which keeps per-key order;
after ``max_attempts`` deliveries it is dead-lettered to ``<topic>.dlq`` with the embedded
bus's headers (:data:`~aios_mesh.ports.event_codec.DEAD_LETTER_REASON`, ...). A message not
acked within ``visibility_timeout`` is rewound too; a member that stops calling ``fetch``
while holding such messages leaves the group, so another member gets its partitions (the
"crashed consumer" case), and rejoins on its next ``fetch``. Messages that cannot be parsed
(bad JSON, missing attributes, another ``specversion``) are dead-lettered as poison and
never reach the caller.

Delivery counts live in the bus object (shared by its subscriptions in one process): a
message redelivered to another process after a crash starts again at ``attempt`` 1 (tansu
drops offset-commit metadata, so the count cannot travel with the commit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Self, TypeVar

import structlog

from aios_mesh.backends import BackendURL
from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    MeshError,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.event_codec import (
    dead_letter_event,
    dead_letter_topic,
    decode_message,
    poison_event,
    to_binary,
)
from aios_mesh.ports.events import Delivery, Event

__all__ = ["KafkaEventBus", "KafkaSubscription"]

_log = structlog.get_logger(__name__)
_T = TypeVar("_T")

_KNOWN: Final = frozenset({
    "client_id", "timeout", "session_timeout_ms", "heartbeat_interval_ms", "max_attempts",
    "visibility_timeout", "start", "partitions", "replication", "create_topics", "idempotent",
    "bootstrap", "connect_timeout",
})
_HINT: Final = "check the broker is running and reachable (kafka://host:port)"


def _translate(exc: BaseException, what: str) -> MeshError:
    """A kafka-python (or socket) error as the mesh's error type."""
    if isinstance(exc, MeshError):
        return exc
    name = type(exc).__name__
    if "Timeout" in name or isinstance(exc, TimeoutError):
        return BackendTimeout(f"kafka {what} timed out: {name}: {exc}",
                              hint="the broker is slow or down; retry, or raise timeout=")
    return BackendUnavailable(f"kafka {what} failed: {name}: {exc}", hint=_HINT)


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not topic:
        raise InvalidInput("a topic needs a non-empty name", hint="e.g. 'invoices.extracted'")


class KafkaEventBus:
    """EventBus on a Kafka-protocol broker (see the module docstring).

    Args:
        bootstrap_servers: ``"host:port"`` or several, comma-separated.
        client_id: the Kafka client id of the producer and consumers.
        max_attempts: deliveries of one message before it goes to ``<topic>.dlq``.
        visibility_timeout: seconds a fetched message stays with its member unacked.
        session_timeout_ms: consumer group session timeout (keep it low on tansu).
        heartbeat_interval_ms: consumer heartbeats (default: session timeout / 6).
        timeout: seconds to wait for delivery reports, metadata and commits.
        start: where a new consumer group starts: ``"earliest"`` or ``"latest"``.
        partitions: partitions of topics this bus creates.
        replication: replication factor of topics this bus creates.
        create_topics: create missing topics (and their ``.dlq``) on first use.
        idempotent: use the idempotent producer (needs broker support).
    """

    features: ClassVar[frozenset[Feature]] = frozenset(
        {Feature.CONSUMER_GROUPS, Feature.DEAD_LETTER, Feature.DURABLE})

    def __init__(self, bootstrap_servers: str, *, client_id: str = "aios-mesh",
                 max_attempts: int = 5, visibility_timeout: float = 30.0,
                 session_timeout_ms: int = 6000, heartbeat_interval_ms: int | None = None,
                 timeout: float = 10.0, start: str = "earliest", partitions: int = 1,
                 replication: int = 1, create_topics: bool = True,
                 idempotent: bool = False, connect_timeout: float = 2.0) -> None:
        if max_attempts < 1:
            raise ConfigError(f"max_attempts={max_attempts} must be at least 1",
                              hint="write max_attempts=5")
        if start not in ("earliest", "latest"):
            raise ConfigError(f"start={start!r} is neither 'earliest' nor 'latest'",
                              hint="write start=earliest")
        if not bootstrap_servers:
            raise ConfigError("kafka:// needs host:port", hint="write kafka://127.0.0.1:9092")
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.max_attempts = max_attempts
        self.visibility_timeout = visibility_timeout
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms or max(100, session_timeout_ms // 6)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.start = start
        self.partitions = partitions
        self.replication = replication
        self.create_topics = create_topics
        self.idempotent = idempotent
        self._lock = threading.Lock()
        self._producer: Any = None
        self._admin: Any = None
        self._topics: set[str] = set()
        self._subs: set[KafkaSubscription] = set()
        self._attempts: dict[tuple[str, str, int], dict[int, int]] = {}
        self._closed = False

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """Build from ``kafka://host:port?client_id=..&session_timeout_ms=..&max_attempts=..``
        (see the module docstring for every option)."""
        url = url.with_options(options)
        url.check_options(_KNOWN, what="kafka")
        netloc = url.raw.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        servers = ",".join(x for x in [netloc.rsplit("@", 1)[-1], url.option("bootstrap", "")]
                           if x)
        if not servers:
            raise ConfigError(f"{url.redacted()} names no broker",
                              hint="write kafka://HOST:PORT, e.g. kafka://127.0.0.1:9092")
        return cls(
            servers,
            client_id=url.option("client_id", "aios-mesh") or "aios-mesh",
            max_attempts=url.int_option("max_attempts", 5, min=1),
            visibility_timeout=url.seconds_option("visibility_timeout", 30.0, min=0.01),
            session_timeout_ms=url.int_option("session_timeout_ms", 6000, min=100),
            heartbeat_interval_ms=url.int_option("heartbeat_interval_ms", min=10),
            timeout=url.seconds_option("timeout", 10.0, min=0.01),
            connect_timeout=url.seconds_option("connect_timeout", 2.0, min=0.01),
            start=url.choice_option("start", ("earliest", "latest"), "earliest"),
            partitions=url.int_option("partitions", 1, min=1),
            replication=url.int_option("replication", 1, min=1),
            create_topics=url.flag("create_topics", True),
            idempotent=url.flag("idempotent", False),
        )

    # -- port ------------------------------------------------------------------------------

    async def publish(self, topic: str, events: Sequence[Event]) -> None:
        """Send ``events`` to ``topic`` in order; returns once the broker acked all of them
        (``acks=all``). Raises :class:`BackendUnavailable` / :class:`BackendTimeout`."""
        _check_topic(topic)
        if not all(isinstance(e, Event) for e in events):
            raise InvalidInput("publish takes Event objects", hint="wrap payloads in Event(...)")
        if not events:
            return
        rows = [_record(e) for e in events]
        await asyncio.to_thread(self._send_sync, topic, rows)

    async def subscribe(self, topic: str, *, group: str) -> KafkaSubscription:
        """Join consumer group ``group`` on ``topic`` (the join itself happens on the
        subscription's thread; ``fetch`` waits for the assignment)."""
        _check_topic(topic)
        if not isinstance(group, str) or not group:
            raise InvalidInput("a consumer group needs a non-empty name",
                               hint="subscribe(topic, group='billing')")
        self._open()
        await asyncio.to_thread(self._ensure_topic, topic)
        sub = KafkaSubscription(self, topic, group)
        try:
            await sub._call(sub._create)
        except BaseException:
            await sub.aclose()
            raise
        self._subs.add(sub)
        return sub

    async def aclose(self) -> None:
        """Close every subscription (committing what was acked), then the producer."""
        self._closed = True
        for sub in list(self._subs):
            await sub.aclose()
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            await asyncio.to_thread(_quiet_close, producer, self.timeout)
        if admin is not None:
            await asyncio.to_thread(_quiet_close, admin, None)

    # -- extras ----------------------------------------------------------------------------

    async def publish_raw(self, topic: str, raw: bytes, *, key: str | None = None) -> None:
        """Put ``raw`` bytes on ``topic`` as they are (tests use it for poison messages)."""
        _check_topic(topic)
        await asyncio.to_thread(self._send_sync, topic,
                                [(key.encode() if key else None, bytes(raw), [])])

    async def health(self) -> None:
        """Find a broker (within ``connect_timeout``) and list the topics;
        :class:`BackendUnavailable` with a hint when no broker answers."""
        await asyncio.to_thread(self._probe_sync)

    # -- internals (blocking; run in worker threads) ---------------------------------------

    def _open(self) -> None:
        if self._closed:
            raise BackendUnavailable("the kafka event bus is closed",
                                     hint="build a new KafkaEventBus")

    def _config(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap_servers.split(","),
                "client_id": self.client_id,
                "request_timeout_ms": max(int(self.timeout * 1000), 1000),
                "bootstrap_timeout_ms": max(int(self.connect_timeout * 1000), 10),
                "reconnect_backoff_max_ms": 1000}

    def _probe_sync(self) -> None:
        from kafka.admin import KafkaAdminClient

        try:
            admin = KafkaAdminClient(**self._config())
        except Exception as exc:  # no broker answered within connect_timeout
            raise BackendUnavailable(f"kafka at {self.bootstrap_servers}: no broker answered "
                                     f"within {self.connect_timeout:g}s ({type(exc).__name__})",
                                     hint=_HINT) from exc
        try:
            admin.list_topics()
        except Exception as exc:
            raise _translate(exc, "list topics") from exc
        finally:
            _quiet_close(admin, None)

    def _producer_sync(self) -> Any:
        with self._lock:
            if self._producer is None:
                self._open()
                from kafka import KafkaProducer

                config = self._config()
                try:
                    self._producer = KafkaProducer(
                        **config, acks="all", linger_ms=2, retries=5,
                        max_in_flight_requests_per_connection=5 if self.idempotent else 1,
                        enable_idempotence=self.idempotent,
                        max_block_ms=int(self.timeout * 1000),
                        delivery_timeout_ms=config["request_timeout_ms"] + 1000,
                        batch_size=256 * 1024)
                except (TypeError, ValueError):
                    raise
                except Exception as exc:
                    raise _translate(exc, "producer connect") from exc
            return self._producer

    def _ensure_topic(self, topic: str) -> None:
        if not self.create_topics or topic in self._topics:
            return
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        with self._lock:
            if topic in self._topics:
                return
            try:
                if self._admin is None:
                    from kafka.admin import KafkaAdminClient

                    self._admin = KafkaAdminClient(**self._config())
                self._admin.create_topics(
                    [NewTopic(topic, self.partitions, self.replication)],
                    timeout_ms=int(self.timeout * 1000))
            except TopicAlreadyExistsError:
                pass
            except Exception as exc:
                if "already exists" not in str(exc).lower():
                    admin, self._admin = self._admin, None
                    if admin is not None:
                        _quiet_close(admin, None)
                    raise _translate(exc, f"create topic {topic!r}") from exc
            self._topics.add(topic)

    def _send_sync(self, topic: str,
                   rows: Sequence[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
        self._ensure_topic(topic)
        producer = self._producer_sync()
        try:
            futures = [producer.send(topic, key=key, value=value, headers=headers)
                       for key, value, headers in rows]
            producer.flush(timeout=self.timeout)
            for future in futures:
                future.get(timeout=self.timeout)
        except Exception as exc:
            raise _translate(exc, f"publish to {topic!r}") from exc

    def _bump(self, key: tuple[str, str, int], offset: int) -> int:
        with self._lock:
            counts = self._attempts.setdefault(key, {})
            counts[offset] = counts.get(offset, 0) + 1
            return counts[offset]

    def _count(self, key: tuple[str, str, int], offset: int) -> int:
        with self._lock:
            return self._attempts.get(key, {}).get(offset, 0)

    def _forget(self, key: tuple[str, str, int], below: int) -> None:
        with self._lock:
            counts = self._attempts.get(key)
            if counts:
                for offset in [o for o in counts if o < below]:
                    del counts[offset]


def _record(event: Event) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of the record of ``event`` (binary content mode)."""
    headers, value = to_binary(event)
    return (event.key or event.id).encode(), value, headers


def _quiet_close(obj: Any, timeout: float | None) -> None:
    with contextlib.suppress(Exception):
        if timeout is None:
            obj.close()
        else:
            obj.close(timeout=timeout)


@dataclass(frozen=True, slots=True)
class _Message:
    """The value and headers of a consumed record."""

    value: bytes
    headers: list[tuple[str, bytes]]

    def decode(self) -> Event:
        """The event, in binary or structured content mode (:func:`decode_message`)."""
        return decode_message(self.value, self.headers)

    def poison(self, topic: str, reason: str) -> Event:
        """The wrapper that carries this record to the dead-letter topic."""
        return poison_event(self.value, topic=topic, reason=reason, wire_headers=self.headers)


@dataclass(slots=True)
class _Partition:
    """What one member knows of one assigned partition."""

    base: int | None = None                        # every offset below is done
    done: set[int] = field(default_factory=set)    # done offsets at or above base
    inflight: dict[int, float] = field(default_factory=dict)  # offset -> lease expiry
    rewind: int | None = None                      # seek here before the next poll
    dirty: bool = False                            # base moved since the last commit


_STOP: Final = object()


class KafkaSubscription:
    """One member of a consumer group; its consumer lives on its own thread."""

    def __init__(self, bus: KafkaEventBus, topic: str, group: str) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        #: the Kafka consumer group id: one group per (topic, group) pair, as the port has it
        self.group_id = f"{group}@{topic}"
        self._consumer: Any = None
        self._parts: dict[int, _Partition] = {}
        #: partitions taken away by the last rebalance, kept until the next assignment: a
        #: member that gets one back keeps its leases (see _assigned)
        self._revoked_parts: dict[int, _Partition] = {}
        self._state = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._fetching = False
        self._left = False
        self._last_fetch = time.monotonic()
        self._commit_queued = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"aios-kafka-{topic}-{group}")
        self._thread.start()

    # -- port ------------------------------------------------------------------------------

    async def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Up to ``max_messages`` deliveries; waits up to ``timeout`` s for the first one."""
        if self._closed:
            raise BackendUnavailable("subscription is closed", hint="subscribe again")
        if max_messages < 1:
            raise InvalidInput(f"max_messages={max_messages} must be at least 1")
        return await self._call(lambda: self._fetch_sync(max_messages, max(timeout, 0.0)))

    async def ack(self, delivery: Delivery) -> None:
        """Mark the delivery done; the contiguous acked prefix is committed right after
        (one commit for a burst of acks). A late or repeated ack is harmless."""
        partition, offset = self._token(delivery)
        with self._state:
            part = self._parts.get(partition)
            if part is None:
                # revoked by a rebalance still under way: remember the ack in case the
                # partition comes back to this member (then it is committed as usual)
                part = self._revoked_parts.get(partition)
            if part is None or part.base is None or offset < part.base:
                return
            part.inflight.pop(offset, None)
            self._mark_done(partition, part, offset)
            if (not part.dirty or self._commit_queued or self._closed
                    or partition not in self._parts):
                return
            self._commit_queued = True
        self._queue.put((self._commit_sync, None))

    async def nack(self, delivery: Delivery, *, reason: str = "") -> None:
        """Redeliver in place (``attempt + 1``) or, after ``max_attempts``, dead-letter."""
        partition, offset = self._token(delivery)
        if self._closed:
            return
        await self._call(lambda: self._nack_sync(partition, offset, delivery.event, reason))

    async def aclose(self) -> None:
        """Commit what was acked and leave the group; unacked messages go back to it."""
        if self._closed:
            return
        self._closed = True
        self.bus._subs.discard(self)
        with contextlib.suppress(MeshError):
            await self._call(self._close_sync)
        self._queue.put((_STOP, None))
        await asyncio.to_thread(self._thread.join, 30)

    # -- thread plumbing -------------------------------------------------------------------

    async def _call(self, fn: Callable[[], _T]) -> _T:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._queue.put((fn, future))
        return await asyncio.wrap_future(future)

    def _run(self) -> None:
        idle = min(0.1, self.bus.visibility_timeout / 4)
        while True:
            try:
                fn, future = self._queue.get(timeout=idle)
            except queue.Empty:
                self._keepalive()
                continue
            if fn is _STOP:
                return
            if future is None:
                with contextlib.suppress(Exception):
                    fn()
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    # -- on the subscription's thread ------------------------------------------------------

    def _create(self) -> None:
        from kafka import KafkaConsumer
        from kafka.coordinator.assignors.range import RangePartitionAssignor

        bus = self.bus
        try:
            self._consumer = KafkaConsumer(
                **bus._config(), group_id=self.group_id, enable_auto_commit=False,
                partition_assignment_strategy=[RangePartitionAssignor],
                auto_offset_reset=bus.start,
                session_timeout_ms=bus.session_timeout_ms,
                heartbeat_interval_ms=bus.heartbeat_interval_ms,
                max_poll_interval_ms=max(int(bus.visibility_timeout * 1000) * 4, 300000),
                fetch_max_wait_ms=100)
        except Exception as exc:
            raise _translate(exc, "consumer connect") from exc
        self._left = True  # the member joins the group on its first fetch

    def _join(self) -> None:
        from kafka import ConsumerRebalanceListener

        sub = self

        # kafka-python ships no types: its listener base class is Any to mypy
        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                sub._revoked([tp.partition for tp in revoked if tp.topic == sub.topic])

            def on_partitions_assigned(self, assigned: Any) -> None:
                sub._assigned(list(assigned))

        self._consumer.subscribe([self.topic], listener=_Listener())
        self._left = False

    def _assigned(self, assigned: list[Any]) -> None:
        consumer = self._consumer
        for tp in assigned:
            try:
                committed = consumer.committed(tp)
            except Exception:  # the position decides; base is then set by the first record
                committed = None
            with self._state:
                old = self._revoked_parts.pop(tp.partition, None)
                if (old is not None and old.base is not None
                        and (committed is None or committed <= old.base)):
                    # the same partition came back and nobody else moved its commit: keep
                    # what this member handed out. A rebalance revokes every partition
                    # before it reassigns them; forgetting the leases here would strand a
                    # message held by a member that stopped fetching (it never expires, so
                    # the member never leaves, and no one else reads the partition).
                    self._parts[tp.partition] = old
                else:
                    self._parts[tp.partition] = _Partition(base=committed)
        with self._state:
            self._revoked_parts.clear()
        if not self._fetching and assigned:
            consumer.pause(*assigned)

    def _revoked(self, partitions: list[int]) -> None:
        self._commit_sync(partitions)
        with self._state:
            for p in partitions:
                part = self._parts.pop(p, None)
                if part is not None:
                    self._revoked_parts[p] = part

    def _settle(self) -> None:
        """Finish a group (re)join in one call, however long it takes (up to the session
        timeout), instead of across polls.

        kafka-python 3.0 keeps a JoinGroup in flight across polls that time out, but when it
        completes between two polls the next poll sends a fresh JoinGroup and drops the
        assignment it got. With polls shorter than a join takes (ours are 100 ms between
        fetches, as little as a fetch's timeout during one) a loaded host rejoins forever:
        measured with the CPU oversubscribed, the leader re-sent JoinGroup for 26 s and the
        other member never got the partition.
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        need_rejoin = getattr(coordinator, "need_rejoin", None)
        ensure = getattr(coordinator, "ensure_active_group", None)
        if need_rejoin is None or ensure is None or not need_rejoin():
            return
        ensure(timeout_ms=self.bus.session_timeout_ms)

    def _keepalive(self) -> None:
        consumer = self._consumer
        if consumer is None or self._closed or self._left:
            return
        try:
            self._settle()
            assignment = consumer.assignment()
            if assignment:
                consumer.pause(*assignment)
            consumer.poll(timeout_ms=100)
        except Exception as exc:
            _log.debug("kafka.keepalive_failed", topic=self.topic, error=str(exc))
            return
        now = time.monotonic()
        with self._state:
            expired = any(exp <= now for part in self._parts.values()
                          for exp in part.inflight.values())
        coordinator = getattr(consumer, "_coordinator", None)
        stable = coordinator is None or not hasattr(coordinator, "stable") or (
            coordinator.stable() and not coordinator.need_rejoin())
        if expired and stable and now - self._last_fetch > self.bus.visibility_timeout:
            # (leaving only from a stable group: tansu 0.6 wedges a group whose leader
            # leaves in the middle of a rebalance)
            # the member holds expired messages and stopped fetching: give them to the group
            self._leave()

    def _leave(self) -> None:
        self._revoked(list(self._parts))
        with contextlib.suppress(Exception):
            self._consumer.unsubscribe()
        with self._state:
            self._revoked_parts.clear()  # given to the group: a later join starts afresh
        self._left = True
        _log.info("kafka.member_left_group", topic=self.topic, group=self.group,
                  reason="unacked messages past visibility_timeout and no fetch")

    def _fetch_sync(self, max_messages: int, timeout: float) -> list[Delivery]:
        self._last_fetch = time.monotonic()
        consumer = self._consumer
        if self._left:
            self._join()
        deadline = time.monotonic() + timeout
        out: list[Delivery] = []
        self._fetching = True
        try:
            try:
                self._settle()
            except Exception as exc:
                raise _translate(exc, f"join the group of {self.topic!r}") from exc
            self._expire()
            self._apply_rewinds()
            with contextlib.suppress(Exception):
                assignment = consumer.assignment()
                if assignment:
                    consumer.resume(*assignment)
            while True:
                remaining = max(0, int((deadline - time.monotonic()) * 1000))
                try:
                    records = consumer.poll(timeout_ms=remaining,
                                            max_records=max_messages - len(out))
                except Exception as exc:
                    raise _translate(exc, f"fetch from {self.topic!r}") from exc
                for tp, batch in records.items():
                    for record in batch:
                        delivery = self._accept(tp.partition, record)
                        if delivery is not None:
                            out.append(delivery)
                self._apply_rewinds()
                if out or time.monotonic() >= deadline:
                    break
        finally:
            self._fetching = False
            with contextlib.suppress(Exception):
                assignment = consumer.assignment()
                if assignment:
                    consumer.pause(*assignment)
            self._last_fetch = time.monotonic()
        self._commit_sync()
        return out

    def _accept(self, partition: int, record: Any) -> Delivery | None:
        offset: int = record.offset
        now = time.monotonic()
        key = (self.topic, self.group, partition)
        with self._state:
            part = self._parts.get(partition)
            if part is None:
                part = self._parts[partition] = _Partition()
            if part.base is None:
                part.base = offset
            if offset < part.base or offset in part.done:
                return None
            lease = part.inflight.get(offset)
            if lease is not None and lease > now:
                return None  # still with this member (a rewind re-read it)
        attempt = self.bus._bump(key, offset)
        message = _Message(record.value or b"", list(record.headers or ()))
        if attempt > self.bus.max_attempts:
            reason = (f"not acked within {self.bus.visibility_timeout:g}s "
                      f"on {attempt - 1} deliveries")
            self._dead_letter(partition, offset, message, reason, attempt - 1)
            return None
        try:
            event = message.decode()
        except InvalidInput as exc:
            self._dead_letter(partition, offset, message, str(exc), attempt, poison=True)
            return None
        with self._state:
            part.inflight[offset] = now + self.bus.visibility_timeout
        return Delivery(event=event, topic=self.topic, attempt=attempt,
                        token=(partition, offset))

    def _dead_letter(self, partition: int, offset: int, value: _Message | Event, reason: str,
                     attempts: int, *, poison: bool = False) -> None:
        if isinstance(value, Event):
            event = dead_letter_event(value, topic=self.topic, reason=reason, attempts=attempts)
        elif poison:
            event = value.poison(self.topic, reason)
        else:
            try:
                event = dead_letter_event(value.decode(), topic=self.topic, reason=reason,
                                          attempts=attempts)
            except InvalidInput:
                event = value.poison(self.topic, reason)
        self.bus._send_sync(dead_letter_topic(self.topic), [_record(event)])
        _log.warning("kafka.dead_lettered", topic=self.topic, group=self.group,
                     partition=partition, offset=offset, reason=reason)
        with self._state:
            part = self._parts.get(partition)
            if part is not None and part.base is not None:
                part.inflight.pop(offset, None)
                self._mark_done(partition, part, offset)

    def _mark_done(self, partition: int, part: _Partition, offset: int) -> None:
        """(with ``_state`` held) ``offset`` is done; move ``base`` over the done run."""
        assert part.base is not None
        if offset < part.base:
            return
        part.done.add(offset)
        start = part.base
        while part.base in part.done:
            part.done.discard(part.base)
            part.base += 1
        if part.base != start:
            part.dirty = True

    def _nack_sync(self, partition: int, offset: int, event: Event, reason: str) -> None:
        with self._state:
            part = self._parts.get(partition)
            if (part is None or part.base is None or offset < part.base
                    or offset in part.done or offset not in part.inflight):
                return  # acked, dead-lettered, or no longer this member's
        attempt = self.bus._count((self.topic, self.group, partition), offset)
        if attempt >= self.bus.max_attempts:
            self._dead_letter(partition, offset, event, reason or f"nacked on {attempt} "
                              "deliveries", attempt)
            self._commit_sync()
            return
        with self._state:
            part.inflight.pop(offset, None)
            part.rewind = offset if part.rewind is None else min(part.rewind, offset)

    def _expire(self) -> None:
        now = time.monotonic()
        with self._state:
            for part in self._parts.values():
                expired = [o for o, exp in part.inflight.items() if exp <= now]
                for o in expired:
                    del part.inflight[o]
                if expired:
                    low = min(expired)
                    part.rewind = low if part.rewind is None else min(part.rewind, low)

    def _apply_rewinds(self) -> None:
        from kafka import TopicPartition

        with self._state:
            rewinds = [(p, part.rewind) for p, part in self._parts.items()
                       if part.rewind is not None]
            for p, _ in rewinds:
                self._parts[p].rewind = None
        for p, offset in rewinds:
            with contextlib.suppress(Exception):
                self._consumer.seek(TopicPartition(self.topic, p), offset)

    def _commit_sync(self, only: list[int] | None = None) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        with self._state:
            self._commit_queued = False
            todo = {p: part.base for p, part in self._parts.items()
                    if part.dirty and part.base is not None and (only is None or p in only)}
            for p in todo:
                self._parts[p].dirty = False
        if not todo or self._consumer is None:
            return
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(base, "", -1)
                   for p, base in todo.items()}
        try:
            self._consumer.commit(offsets)
        except Exception as exc:
            # Try again with the next commit (a revocation commits too): left clean, a
            # failed commit (e.g. mid-rebalance) would stay lost until the next ack moved
            # base, and whoever takes the partition over would be handed the acked
            # messages again.
            with self._state:
                for p in todo:
                    part = self._parts.get(p)
                    if part is not None:
                        part.dirty = True
            _log.warning("kafka.commit_failed", topic=self.topic, group=self.group,
                         error=f"{type(exc).__name__}: {exc}")
            return
        for p, base in todo.items():
            self.bus._forget((self.topic, self.group, p), base)

    def _close_sync(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        self._consumer = consumer
        try:
            self._commit_sync()
        finally:
            self._consumer = None
            with self._state:
                self._parts.clear()
                self._revoked_parts.clear()
            with contextlib.suppress(Exception):
                consumer.close(autocommit=False, timeout_ms=int(self.bus.timeout * 1000))

    def _token(self, delivery: Delivery) -> tuple[int, int]:
        token = delivery.token
        if (delivery.topic != self.topic or not isinstance(token, tuple) or len(token) != 2
                or not all(isinstance(x, int) for x in token)):
            raise InvalidInput("this delivery does not belong to this subscription",
                               hint="ack/nack a delivery on the subscription that fetched it")
        return token[0], token[1]
