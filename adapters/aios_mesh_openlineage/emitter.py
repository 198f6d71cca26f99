"""The Lineage port on openlineage-python's transports.

* ``openlineage+file:///lineage`` — one JSON event per line in ``<folder>/events.jsonl``,
  exactly as ``FileTransport`` in append mode writes it (nulls removed, keys sorted), from one
  open handle (see :class:`_JsonLinesFile`);
* ``openlineage+http://host:5000[/prefix]`` — ``HttpTransport``:
  ``POST <prefix>/api/v1/lineage``;
* ``openlineage+kafka://host:9092?topic=...`` — one message per event on ``topic``
  (kafka-python).

Options (query string): file — ``file=events.jsonl``; http — ``endpoint=api/v1/lineage``,
``timeout=5`` (s), ``retries=2``, ``tls=false``, ``compression=gzip``, an API key as the URL's
password (``openlineage+http://:KEY@host:5000``); kafka — ``topic=openlineage.events``,
``timeout=10`` (s), ``client_id=aios-mesh``.

Why the file transport runs in *append* mode: without it, ``FileTransport`` writes one file per
event named ``<path>-<wall-clock microseconds>.json``; two events in the same microsecond
overwrite each other and a folder of thousands of tiny files is awkward to tail or ship. Append
mode is the same transport writing JSON Lines into one file, which every log shipper reads.

Why Kafka goes through kafka-python rather than ``KafkaTransport``: openlineage-python's
``KafkaTransport`` needs ``confluent-kafka`` (librdkafka), which is not part of the
``aios-mesh[openlineage]`` extra; the mesh already speaks Kafka through kafka-python
(``aios-mesh[kafka]``). The message key follows ``KafkaTransport``'s rule
(``run:<namespace>/<job>``, taken from the root or parent job when present) so ordering per
job chain is the same.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Self

import orjson

from aios_mesh.backends import BackendURL
from aios_mesh.errors import BackendUnavailable, ConfigError, InvalidInput
from aios_mesh.ports.base import Feature
from aios_mesh.ports.health import http_probe, tcp_probe

__all__ = ["OpenLineageEmitter"]

_SCHEMES = ("openlineage+file", "openlineage+http", "openlineage+kafka")
_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "openlineage+file": ("file",),
    "openlineage+http": ("endpoint", "timeout", "retries", "tls", "compression"),
    "openlineage+kafka": ("topic", "timeout", "client_id"),
}



def _document(event: Mapping[str, Any]) -> dict[str, Any]:
    """A private JSON copy of ``event`` (the caller may reuse its dict); orjson, because the
    relay copies every event of every call (the stdlib round trip cost ~40 µs an event)."""
    try:
        document = orjson.loads(orjson.dumps(event))
    except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise InvalidInput(f"lineage event is not a JSON document: {exc}",
                           hint="build events with aios_mesh.lineage.run_events_for") from exc
    if not isinstance(document, dict):
        raise InvalidInput("lineage event must be a JSON object",
                           hint="build events with aios_mesh.lineage.run_events_for")
    return document

def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


class _JsonLinesFile:
    """What ``FileTransport(append=True)`` writes — each event with its nulls removed, keys
    sorted, one JSON line — from one open handle and one ``write`` per event. The transport
    re-opens the file and walks every event through its attrs-aware serialiser, ~0.1 ms an
    event; the signal relay sends two events per call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None

    def emit(self, document: Mapping[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("ab", buffering=0)
        self._file.write(orjson.dumps(_without_nulls(document), option=orjson.OPT_SORT_KEYS)
                         + b"\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class OpenLineageEmitter:
    """Send OpenLineage RunEvent documents through a file, HTTP or Kafka transport.

    Build it with :meth:`from_url`. ``emit`` serialises calls (one event at a time per
    emitter) and runs the blocking transport in a worker thread; every failure is raised as
    :class:`~aios_mesh.errors.BackendUnavailable` so the mesh can retry from its outbox.
    """

    features: frozenset[Feature] = frozenset()
    #: the JSON Lines file of a file emitter (``None`` for http and kafka)
    path: Path | None = None

    def __init__(self, kind: str, *, target: str, factory: Callable[[], Any],
                 probe: Callable[[], Awaitable[None]] | None = None) -> None:
        self.kind = kind
        self._probe = probe
        self.target = target  # where events go, for messages (never holds a secret)
        self._factory = factory
        self._transport: Any = None
        self._lock = threading.Lock()
        self._closed = False

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """Build the emitter for ``url`` (no transport is created until the first emit)."""
        if url.scheme not in _SCHEMES:
            raise ConfigError(f"{url.redacted()} is not an OpenLineage URL",
                              hint=f"use one of: {', '.join(s + '://' for s in _SCHEMES)}")
        url = url.with_options(options)
        url.check_options(_OPTIONS[url.scheme], what=url.scheme)
        if url.scheme == "openlineage+file":
            return cls._file(url, base_dir)
        if url.scheme == "openlineage+http":
            return cls._http(url)
        return cls._kafka(url)

    @classmethod
    def _file(cls, url: BackendURL, base_dir: Path) -> Self:
        folder = url.resolve_path(base_dir)
        name = url.option("file", "events.jsonl") or "events.jsonl"
        if "/" in name or name in {".", ".."}:
            raise ConfigError(f"file={name!r} in {url.redacted()} must be a plain file name",
                              hint="write e.g. ?file=events.jsonl")
        path = folder / name

        def factory() -> Any:
            folder.mkdir(parents=True, exist_ok=True)
            return _JsonLinesFile(path)

        emitter = cls("file", target=str(path), factory=factory)
        emitter.path = path
        return emitter

    @classmethod
    def _http(cls, url: BackendURL) -> Self:
        address = url.address
        tls = url.flag("tls")
        base = f"{'https' if tls else 'http'}://{address}{url.path.rstrip('/')}/"
        endpoint = (url.option("endpoint", "api/v1/lineage") or "api/v1/lineage").lstrip("/")
        timeout = url.seconds_option("timeout", 5.0)
        retries = url.int_option("retries", 2, min=0)
        compression = url.choice_option("compression", ("none", "gzip"), "none") == "gzip"
        api_key = url.password

        def factory() -> Any:
            from openlineage.client.transport.http import (
                ApiKeyTokenProvider,
                HttpCompression,
                HttpConfig,
                HttpTransport,
                TokenProvider,
            )

            auth = ApiKeyTokenProvider({"apiKey": api_key}) if api_key else TokenProvider({})
            config = HttpConfig(
                url=base, endpoint=endpoint, timeout=timeout, auth=auth,
                compression=HttpCompression.GZIP if compression else None,
                retry={"total": retries, "read": retries, "connect": retries,
                       "backoff_factor": 0.2, "status_forcelist": [500, 502, 503, 504],
                       "allowed_methods": ["HEAD", "POST"]},
            )
            return HttpTransport(config)

        async def probe() -> None:
            # any HTTP answer proves the server is up; a lineage POST would be recorded
            await http_probe(base, timeout=timeout, what="OpenLineage endpoint",
                             hint=_HINTS["http"], healthy=None)

        return cls("http", target=f"{base}{endpoint}", factory=factory, probe=probe)

    @classmethod
    def _kafka(cls, url: BackendURL) -> Self:
        address = url.address
        topic = url.option("topic", "openlineage.events") or "openlineage.events"
        timeout_ms = int(url.seconds_option("timeout", 10.0) * 1000)
        client_id = url.option("client_id", "aios-mesh") or "aios-mesh"

        def factory() -> Any:
            return _KafkaSender(address, topic, timeout_ms=timeout_ms, client_id=client_id)

        host, _, port = address.rpartition(":")

        async def probe() -> None:
            await tcp_probe(host or address, int(port or 9092), timeout=timeout_ms / 1000,
                            what="OpenLineage Kafka broker", hint=_HINTS["kafka"])

        return cls("kafka", target=f"kafka://{address}/{topic}", factory=factory, probe=probe)

    # ----------------------------------------------------------------- the port
    async def emit(self, event: Mapping[str, Any]) -> None:
        """Send one RunEvent document; raise ``BackendUnavailable`` if it did not arrive."""
        if self._closed:
            raise BackendUnavailable(f"the {self.kind} lineage emitter is closed",
                                     hint="build a new one with load_adapter(...)")
        document = _document(event)
        await asyncio.to_thread(self._emit_sync, document)

    async def emit_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Send several RunEvents in order with one thread hop (the signal relay's path)."""
        documents = [_document(event) for event in events]
        if self._closed:
            raise BackendUnavailable(f"the {self.kind} lineage emitter is closed",
                                     hint="build a new one with load_adapter(...)")

        def send_all() -> None:
            for document in documents:
                self._emit_sync(document)

        await asyncio.to_thread(send_all)

    def _emit_sync(self, document: dict[str, Any]) -> None:
        with self._lock:
            try:
                if self._transport is None:
                    self._transport = self._factory()
                # openlineage's transports serialise with Serde.to_json, which takes a plain
                # dict as it is (no attrs round-trip), so custom facets pass through intact.
                self._transport.emit(document)
            except Exception as exc:
                raise BackendUnavailable(
                    f"could not emit the lineage event to {self.target}: "
                    f"{type(exc).__name__}: {exc}",
                    hint=_HINTS[self.kind], transport=self.kind,
                ) from exc

    async def health(self) -> None:
        """Reach the HTTP endpoint or the Kafka broker (a file emitter has nothing to
        reach); :class:`BackendUnavailable` with a hint when it does not answer."""
        if self._probe is not None:
            await self._probe()

    async def aclose(self) -> None:
        """Flush and close the transport; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._close_sync)

    def _close_sync(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
            if transport is not None and hasattr(transport, "close"):
                try:
                    transport.close()
                except Exception:
                    pass  # closing is best effort

    def __repr__(self) -> str:
        return f"OpenLineageEmitter({self.kind} → {self.target})"


_HINTS: Mapping[str, str] = {
    "file": "check that the lineage folder is writable (openlineage+file:///FOLDER)",
    "http": "check that the OpenLineage endpoint (e.g. Marquez) answers POST /api/v1/lineage",
    "kafka": "check that the Kafka broker answers and the topic exists or can be auto-created",
}


def _kafka_key(event: Mapping[str, Any]) -> str:
    """``run:<namespace>/<name>`` of the root, else the parent, else the event's own job."""
    job = event.get("job") or {}
    parent = ((event.get("run") or {}).get("facets") or {}).get("parent") or {}
    chosen = (parent.get("root") or {}).get("job") or parent.get("job") or job
    return f"run:{chosen.get('namespace')}/{chosen.get('name')}"


class _KafkaSender:
    """A tiny transport with ``emit``/``close`` over kafka-python's producer."""

    def __init__(self, address: str, topic: str, *, timeout_ms: int, client_id: str) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.timeout_s = timeout_ms / 1000
        config: dict[str, Any] = {"max_block_ms": timeout_ms, "request_timeout_ms": timeout_ms}
        if "bootstrap_timeout_ms" in KafkaProducer.DEFAULT_CONFIG:  # kafka-python >= 3
            config["bootstrap_timeout_ms"] = timeout_ms
        self.producer = KafkaProducer(bootstrap_servers=[address], client_id=client_id,
                                      acks="all", **config)

    def emit(self, event: Mapping[str, Any]) -> None:
        value = json.dumps(event, sort_keys=True).encode()
        future = self.producer.send(self.topic, value=value, key=_kafka_key(event).encode())
        future.get(timeout=self.timeout_s)  # wait for the broker's ack, like flush=True

    def close(self) -> None:
        self.producer.close(timeout=self.timeout_s)
