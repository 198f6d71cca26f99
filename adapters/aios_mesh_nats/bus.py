"""The EventBus port on NATS JetStream through nats-py.

URL: ``nats://host:4222?stream=AIOS_MESH&prefix=aios&max_attempts=5`` — options (query string
or keyword, keyword wins):

* ``stream`` (``AIOS_MESH``): the JetStream stream of this mesh, created if missing, with the
  subjects ``<prefix>.>``; topic ``invoices.extracted`` is subject ``aios.invoices.extracted``,
* ``prefix`` (``aios``), ``max_attempts`` (5), ``visibility_timeout`` (s, 30: the consumer's
  ``ack_wait``), ``retry_delay`` (s, 0: delay of a ``nack``), ``timeout`` (s, 5),
* ``connect_timeout`` (s, 2): how long the first connection may take before the call fails
  with ``BackendUnavailable`` (nats-py would otherwise retry a refused connection),
* ``duplicate_window`` (s, 120): JetStream's de-duplication window for ``Nats-Msg-Id``,
* ``start`` (``earliest`` | ``latest``), ``storage`` (``file`` | ``memory``).

Publish: the CloudEvents NATS binding's *structured content mode*: the payload is the event
in the CloudEvents JSON format, with the header ``content-type:
application/cloudevents+json``. Every event carries ``Nats-Msg-Id = Event.idempotency_key``,
so a publish repeated inside the duplicate window (an outbox relay retrying after a lost ack)
is stored once. A consumer reads the JSON event format and the envelope written before
CloudEvents.
Publishes are pipelined (``publish_async``) and ``publish`` returns once every PubAck arrived.

Consume: one durable pull consumer per ``(topic, group)`` (explicit ack, ``ack_wait`` =
``visibility_timeout``, filtered on the topic's subject); members of a group pull from the
same durable. ``nack`` naks (redelivered first, ``attempt`` = JetStream's delivery count);
after ``max_attempts`` deliveries the message is published to ``<topic>.dlq`` with the
embedded bus's headers and terminated (``+TERM``). Poison messages are dead-lettered and
terminated at once. Order per key holds for one member; JetStream does not partition by key,
so members of one group may work on one key at the same time.

nats-py is asyncio-native: the connection is created lazily, one per running event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Self

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
    DEAD_LETTER_REASON,
    dead_letter_event,
    dead_letter_topic,
    decode_event,
    encode_event,
    poison_event,
)
from aios_mesh.ports.events import CE_CONTENT_TYPE, Delivery, Event

__all__ = ["NatsEventBus", "NatsSubscription"]

_log = structlog.get_logger(__name__)

_KNOWN: Final = frozenset({"stream", "prefix", "max_attempts", "visibility_timeout",
                           "retry_delay", "timeout", "duplicate_window", "start", "storage",
                           "connect_timeout"})
_TOPIC: Final = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_HINT: Final = "check nats-server runs with JetStream (-js) and is reachable (nats://host:port)"


def _translate(exc: BaseException, what: str) -> MeshError:
    if isinstance(exc, MeshError):
        return exc
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) or "Timeout" in name:
        return BackendTimeout(f"nats {what} timed out: {name}: {exc}",
                              hint="the server is slow or down; retry, or raise timeout=")
    return BackendUnavailable(f"nats {what} failed: {name}: {exc}", hint=_HINT)


def _headers(event: Event, *, msg_id: str | None = None) -> dict[str, str]:
    """NATS headers of ``event`` in structured mode: the format, and JetStream's dedupe id."""
    return {"content-type": CE_CONTENT_TYPE, "Nats-Msg-Id": msg_id or event.idempotency_key}


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        raise InvalidInput(f"topic {topic!r} is not a valid NATS subject part",
                           hint="use dot-separated tokens of letters, digits, '-' and '_'")


@dataclass(slots=True)
class _Conn:
    nc: Any
    js: Any
    streams: set[str] = field(default_factory=set)


class NatsEventBus:
    """EventBus on NATS JetStream (see the module docstring).

    Args:
        servers: ``"nats://host:4222"`` (or several, comma-separated).
        stream: the JetStream stream of this mesh.
        prefix: subject prefix; the stream holds ``<prefix>.>``.
        max_attempts: deliveries of one message before it goes to ``<topic>.dlq``.
        visibility_timeout: the consumers' ``ack_wait`` in seconds.
        retry_delay: seconds a nacked message waits before redelivery.
        timeout: seconds to wait for the server (PubAcks, API calls).
        connect_timeout: seconds the first connection may take.
        duplicate_window: seconds JetStream remembers ``Nats-Msg-Id`` values.
        start: where a new group starts: ``"earliest"`` or ``"latest"``.
        storage: ``"file"`` (survives a server restart) or ``"memory"``.
    """

    features: ClassVar[frozenset[Feature]] = frozenset(
        {Feature.CONSUMER_GROUPS, Feature.DEAD_LETTER, Feature.DURABLE})

    def __init__(self, servers: str, *, stream: str = "AIOS_MESH", prefix: str = "aios",
                 max_attempts: int = 5, visibility_timeout: float = 30.0,
                 retry_delay: float = 0.0, timeout: float = 5.0,
                 duplicate_window: float = 120.0, start: str = "earliest",
                 storage: str = "file", connect_timeout: float = 2.0) -> None:
        if max_attempts < 1:
            raise ConfigError(f"max_attempts={max_attempts} must be at least 1",
                              hint="write max_attempts=5")
        if start not in ("earliest", "latest"):
            raise ConfigError(f"start={start!r} is neither 'earliest' nor 'latest'",
                              hint="write start=earliest")
        if storage not in ("file", "memory"):
            raise ConfigError(f"storage={storage!r} is neither 'file' nor 'memory'",
                              hint="write storage=file")
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", stream):
            raise ConfigError(f"stream={stream!r} is not a valid JetStream stream name",
                              hint="use letters, digits, '-' and '_'")
        self.servers = [s if "://" in s else f"nats://{s}" for s in servers.split(",") if s]
        self.stream = stream
        self.prefix = prefix
        self._deliveries: dict[tuple[str, int], int] = {}
        self.max_attempts = max_attempts
        self.visibility_timeout = visibility_timeout
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.duplicate_window = duplicate_window
        self.start = start
        self.storage = storage
        self._conns: dict[asyncio.AbstractEventLoop, _Conn] = {}
        self._subs: set[NatsSubscription] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """Build from ``nats://host:port?stream=..&max_attempts=..`` (see the module
        docstring for every option)."""
        url = url.with_options(options)
        url.check_options(_KNOWN, what="nats")
        auth = ""
        if url.username:
            auth = f"{url.username}:{url.password or ''}@"
        server = f"nats://{auth}{url.address}"
        return cls(
            server,
            stream=url.option("stream", "AIOS_MESH") or "AIOS_MESH",
            prefix=url.option("prefix", "aios") or "aios",
            max_attempts=url.int_option("max_attempts", 5, min=1),
            visibility_timeout=url.seconds_option("visibility_timeout", 30.0, min=0.05),
            retry_delay=url.seconds_option("retry_delay", 0.0),
            timeout=url.seconds_option("timeout", 5.0, min=0.05),
            connect_timeout=url.seconds_option("connect_timeout", 2.0, min=0.05),
            duplicate_window=url.seconds_option("duplicate_window", 120.0),
            start=url.choice_option("start", ("earliest", "latest"), "earliest"),
            storage=url.choice_option("storage", ("file", "memory"), "file"),
        )

    def subject(self, topic: str) -> str:
        """The NATS subject of ``topic``."""
        return f"{self.prefix}.{topic}"

    # -- port ------------------------------------------------------------------------------

    async def publish(self, topic: str, events: Sequence[Event]) -> None:
        """Publish ``events`` in order (pipelined); returns once JetStream stored all of them.
        Each carries ``Nats-Msg-Id = idempotency_key`` (stored once per duplicate window)."""
        _check_topic(topic)
        if not all(isinstance(e, Event) for e in events):
            raise InvalidInput("publish takes Event objects", hint="wrap payloads in Event(...)")
        if not events:
            return
        await self._publish(self.subject(topic),
                            [(encode_event(e), _headers(e)) for e in events])

    async def subscribe(self, topic: str, *, group: str) -> NatsSubscription:
        """Bind to the durable pull consumer of ``(topic, group)`` (created if missing)."""
        _check_topic(topic)
        if not isinstance(group, str) or not group:
            raise InvalidInput("a consumer group needs a non-empty name",
                               hint="subscribe(topic, group='billing')")
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        conn = await self._conn()
        durable = _durable_name(topic, group)
        config = ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.visibility_timeout, max_deliver=self.max_attempts + 1,
            deliver_policy=DeliverPolicy.NEW if self.start == "latest" else DeliverPolicy.ALL,
            filter_subject=self.subject(topic), max_ack_pending=20000)
        try:
            psub = await conn.js.pull_subscribe(self.subject(topic), durable=durable,
                                                stream=self.stream, config=config)
        except Exception as exc:
            raise _translate(exc, f"subscribe to {topic!r}") from exc
        sub = NatsSubscription(self, topic, group, psub)
        self._subs.add(sub)
        return sub

    async def aclose(self) -> None:
        """Close the subscriptions (unacked messages go back) and this loop's connection."""
        self._closed = True
        for sub in list(self._subs):
            with contextlib.suppress(MeshError):
                await sub.aclose()
        conns, self._conns = self._conns, {}
        loop = asyncio.get_running_loop()
        for owner, conn in conns.items():
            if owner is loop and not conn.nc.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.nc.flush(), self.timeout)
                with contextlib.suppress(Exception):
                    await conn.nc.close()  # not drain(): it may time out on 2.9 servers

    async def health(self) -> None:
        """Connect (within ``connect_timeout``) and ask JetStream for this account's info;
        :class:`BackendUnavailable` with a hint when the server or JetStream does not answer."""
        conn = await self._conn()
        try:
            await asyncio.wait_for(conn.js.account_info(), self.timeout)
        except Exception as exc:
            raise BackendUnavailable(f"nats at {','.join(self.servers)} answers but JetStream "
                                     f"does not ({type(exc).__name__})",
                                     hint="start nats-server with JetStream: nats-server -js"
                                     ) from exc

    # -- extras ----------------------------------------------------------------------------

    async def publish_raw(self, topic: str, raw: bytes, *, key: str | None = None) -> None:
        """Put ``raw`` bytes on ``topic`` as they are (tests use it for poison messages)."""
        _check_topic(topic)
        await self._publish(self.subject(topic), [(bytes(raw), None)])

    # -- internals -------------------------------------------------------------------------

    async def _conn(self) -> _Conn:
        if self._closed:
            raise BackendUnavailable("the nats event bus is closed",
                                     hint="build a new NatsEventBus")
        loop = asyncio.get_running_loop()
        conn = self._conns.get(loop)
        if conn is not None and not conn.nc.is_closed:
            return conn
        import nats

        async def _quiet(exc: Exception) -> None:
            _log.debug("nats.connection_error", error=f"{type(exc).__name__}: {exc}")

        try:
            # the first connect must fail fast (the relay retries); once connected, the
            # client reconnects for ever and replays its subscriptions
            nc = await asyncio.wait_for(nats.connect(
                servers=self.servers, connect_timeout=self.connect_timeout, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnect_time_wait=0.25, error_cb=_quiet,
                name="aios-mesh"), self.connect_timeout)
        except Exception as exc:  # down or unreachable: retryable, never a timeout error
            raise BackendUnavailable(f"nats connect to {','.join(self.servers)} failed: "
                                     f"{type(exc).__name__}: {exc}", hint=_HINT) from exc
        conn = _Conn(nc, nc.jetstream(timeout=self.timeout))
        await self._ensure_stream(conn)
        self._conns[loop] = conn
        return conn

    async def _ensure_stream(self, conn: _Conn) -> None:
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        try:
            try:
                await conn.js.stream_info(self.stream)
            except NotFoundError:
                await conn.js.add_stream(StreamConfig(
                    name=self.stream, subjects=[f"{self.prefix}.>"],
                    storage=StorageType.FILE if self.storage == "file" else StorageType.MEMORY,
                    duplicate_window=self.duplicate_window))
        except Exception as exc:
            with contextlib.suppress(Exception):
                await conn.nc.close()
            raise _translate(exc, f"stream {self.stream!r}") from exc
        conn.streams.add(self.stream)

    async def _publish(self, subject: str,
                       rows: Sequence[tuple[bytes, dict[str, str] | None]]) -> None:
        conn = await self._conn()
        try:
            if len(rows) == 1:
                payload, headers = rows[0]
                await conn.js.publish(subject, payload, stream=self.stream, headers=headers)
                return
            futures = [await conn.js.publish_async(subject, payload, stream=self.stream,
                                                   headers=headers)
                       for payload, headers in rows]
            await asyncio.wait_for(asyncio.gather(*futures), self.timeout)
        except Exception as exc:
            raise _translate(exc, f"publish to {subject!r}") from exc


def _durable_name(topic: str, group: str) -> str:
    digest = hashlib.sha1(f"{topic}\0{group}".encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9_\-]+", "_", f"{group}__{topic}")[:64]
    return f"{readable}_{digest}"


class NatsSubscription:
    """One member of a group: a pull subscription bound to the group's durable consumer."""

    def __init__(self, bus: NatsEventBus, topic: str, group: str, psub: Any) -> None:
        self.bus = bus
        self.topic = topic
        self.group = group
        self._psub = psub
        self._outstanding: dict[int, Any] = {}  # stream seq -> msg handed out, not settled
        self._closed = False

    async def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Up to ``max_messages`` deliveries; waits up to ``timeout`` s for the first one."""
        if self._closed:
            raise BackendUnavailable("subscription is closed", hint="subscribe again")
        if max_messages < 1:
            raise InvalidInput(f"max_messages={max_messages} must be at least 1")
        import nats.errors

        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        out: list[Delivery] = []
        while not out:
            remaining = deadline - loop.time()
            try:
                msgs = await self._psub.fetch(batch=max_messages, timeout=max(remaining, 0.05))
            except (nats.errors.TimeoutError, TimeoutError):
                msgs = []
            except Exception as exc:
                raise _translate(exc, f"fetch from {self.topic!r}") from exc
            for msg in msgs:
                delivery = await self._accept(msg)
                if delivery is not None:
                    out.append(delivery)
            if loop.time() >= deadline:
                break
        return out

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge (a late or repeated ack is harmless)."""
        msg = self._msg(delivery)
        self._outstanding.pop(msg.metadata.sequence.stream, None)
        self.bus._deliveries.pop((self.topic, int(msg.metadata.sequence.stream)), None)
        with contextlib.suppress(Exception):
            await msg.ack()

    async def nack(self, delivery: Delivery, *, reason: str = "") -> None:
        """Nak for redelivery or, after ``max_attempts`` deliveries, dead-letter and term."""
        msg = self._msg(delivery)
        if self._outstanding.pop(msg.metadata.sequence.stream, None) is None:
            return  # acked or settled already
        attempt = int(msg.metadata.num_delivered)
        if attempt >= self.bus.max_attempts:
            event = dead_letter_event(delivery.event, topic=self.topic,
                                      reason=reason or f"nacked on {attempt} deliveries",
                                      attempts=attempt)
            await self._dead_letter(msg, event)
            return
        payload = b"-NAK"
        if self.bus.retry_delay:
            payload += b' {"delay": %d}' % int(self.bus.retry_delay * 1e9)
        # a request, not msg.nak()'s publish: the server answers once it has processed the
        # nak, so the next pull cannot overtake it and hand out a later message first (the
        # nak'd one is redelivered before those, as the contract wants)
        try:
            await msg._client.request(msg.reply, payload, timeout=self.bus.timeout)
        except Exception as exc:
            raise _translate(exc, "nak") from exc

    async def aclose(self) -> None:
        """Give unacked messages back to the group at once (nak), then unsubscribe."""
        if self._closed:
            return
        self._closed = True
        self.bus._subs.discard(self)
        pending = [self._outstanding[s] for s in sorted(self._outstanding)]
        self._outstanding.clear()
        for msg in pending:
            with contextlib.suppress(Exception):
                await msg.nak()
        with contextlib.suppress(Exception):
            await self._psub.unsubscribe()

    # -- internals -------------------------------------------------------------------------

    async def _accept(self, msg: Any) -> Delivery | None:
        md = msg.metadata
        # JetStream's delivery count, but never below what this process has seen itself:
        # a redelivery raced against a still-open pull of the crashed member can report 1.
        key = (self.topic, int(md.sequence.stream))
        seen = self.bus._deliveries.get(key, 0) + 1
        self.bus._deliveries[key] = seen
        if len(self.bus._deliveries) > 100_000:
            self.bus._deliveries.clear()
        attempt = max(int(md.num_delivered), seen)
        raw: bytes = msg.data or b""
        if attempt > self.bus.max_attempts:
            reason = (f"not acked within {self.bus.visibility_timeout:g}s "
                      f"on {attempt - 1} deliveries")
            try:
                event = dead_letter_event(decode_event(raw), topic=self.topic, reason=reason,
                                          attempts=attempt - 1)
            except InvalidInput:
                event = poison_event(raw, topic=self.topic, reason=reason)
            await self._dead_letter(msg, event)
            return None
        try:
            event = decode_event(raw)
        except InvalidInput as exc:
            await self._dead_letter(msg, poison_event(raw, topic=self.topic, reason=str(exc)))
            return None
        self._outstanding[md.sequence.stream] = msg
        return Delivery(event=event, topic=self.topic, attempt=attempt, token=msg)

    async def _dead_letter(self, msg: Any, event: Event) -> None:
        dlq = dead_letter_topic(self.topic)
        msg_id = f"{event.idempotency_key}:dlq:{self.group}:{msg.metadata.sequence.stream}"
        await self.bus._publish(self.bus.subject(dlq), [(encode_event(event),
                                                         _headers(event, msg_id=msg_id))])
        _log.warning("nats.dead_lettered", topic=self.topic, group=self.group,
                     seq=msg.metadata.sequence.stream,
                     reason=event.headers.get(DEAD_LETTER_REASON))
        try:
            await msg.term()
        except Exception as exc:
            raise _translate(exc, "term") from exc

    def _msg(self, delivery: Delivery) -> Any:
        msg = delivery.token
        if delivery.topic != self.topic or msg is None or not hasattr(msg, "metadata"):
            raise InvalidInput("this delivery does not belong to this subscription",
                               hint="ack/nack a delivery on the subscription that fetched it")
        return msg
