"""The event codec and dead-letter policy every EventBus adapter shares.

One wire format and one dead-letter convention, so events move between buses (sqlite,
Kafka, NATS, ...) and a dead-lettered message reads the same whichever bus parked it:

* :func:`encode_event` / :func:`decode_event` — the CloudEvents JSON event format
  (structured content mode, ``application/cloudevents+json``); decoding also reads the
  envelope written before CloudEvents, and refuses an ill-typed one as *poison*.
* :func:`to_binary` / :func:`from_binary` — binary content mode: each attribute a message
  header (``ce_`` + name on Kafka, ``content-type`` for ``datacontenttype``), the data the
  message body; :func:`decode_message` picks the mode a received message is in.
* :func:`dead_letter_topic` — ``<topic>.dlq``.
* :func:`dead_letter_event` — the event unchanged plus :data:`DEAD_LETTER_REASON`,
  :data:`ORIGINAL_TOPIC` and :data:`DEAD_LETTER_ATTEMPTS` headers.
* :func:`poison_event` — a valid envelope (type :data:`POISON_EVENT_TYPE`) carrying the bytes
  of a message that could not be parsed.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable
from typing import Any, Final

import orjson

from aios_mesh.errors import InvalidInput
from aios_mesh.ports.events import Event, is_json_content_type

__all__ = [
    "CONTENT_TYPE_HEADER",
    "DEAD_LETTER_ATTEMPTS",
    "DEAD_LETTER_REASON",
    "DEAD_LETTER_SUFFIX",
    "KAFKA_PREFIX",
    "ORIGINAL_TOPIC",
    "POISON_EVENT_TYPE",
    "dead_letter_event",
    "dead_letter_topic",
    "decode_event",
    "decode_message",
    "encode_event",
    "from_binary",
    "poison_event",
    "to_binary",
]

#: Suffix of the dead-letter topic of ``topic``.
DEAD_LETTER_SUFFIX: Final = ".dlq"
#: Header (extension attribute) on a dead-lettered event: why it was dead-lettered.
DEAD_LETTER_REASON: Final = "deadletterreason"
#: Header (extension attribute) on a dead-lettered event: the topic it was published to.
ORIGINAL_TOPIC: Final = "deadlettertopic"
#: Header (extension attribute) on a dead-lettered event: how many times it was delivered.
DEAD_LETTER_ATTEMPTS: Final = "deadletterattempts"
#: ``Event.type`` of the wrapper that carries a message that could not be parsed.
POISON_EVENT_TYPE: Final = "aios.mesh.poison"
#: Prefix of the attribute headers in Kafka's binary content mode.
KAFKA_PREFIX: Final = "ce_"
#: The header that carries ``datacontenttype`` in binary mode (the data's media type).
CONTENT_TYPE_HEADER: Final = "content-type"


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic of ``topic`` (``<topic>.dlq``)."""
    return f"{topic}{DEAD_LETTER_SUFFIX}"


def encode_event(event: Event) -> bytes:
    """The event in the CloudEvents JSON format (:meth:`Event.to_bytes`)."""
    return event.to_bytes()


def decode_event(raw: bytes) -> Event:
    """Parse the CloudEvents JSON format, or the envelope written before CloudEvents
    (:meth:`Event.from_bytes`). Raises :class:`InvalidInput` for a *poison* message."""
    return Event.from_bytes(raw)


def to_binary(event: Event, *, prefix: str = KAFKA_PREFIX) -> tuple[list[tuple[str, bytes]],
                                                                    bytes]:
    """The event in binary content mode: ``(headers, body)``.

    Every attribute is the header ``prefix + name`` (UTF-8 value), ``datacontenttype`` is the
    ``content-type`` header, and the body is ``data`` as JSON.
    """
    headers = [(CONTENT_TYPE_HEADER if name == "datacontenttype" else prefix + name,
                value.encode()) for name, value in event.attributes().items()]
    return headers, orjson.dumps(event.data)


def from_binary(headers: Iterable[tuple[str, bytes | str]], body: bytes, *,
                prefix: str = KAFKA_PREFIX) -> Event:
    """Parse a binary content mode message (the inverse of :func:`to_binary`; header names
    are matched case-insensitively, other headers are ignored). An empty body is no data.

    Raises:
        InvalidInput: a header that is not UTF-8, a body that is not a JSON object, or what
            :meth:`Event.from_attributes` refuses (a *poison* message).
    """
    attrs: dict[str, Any] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered.startswith(prefix):
            attr = lowered[len(prefix):]
        elif lowered == CONTENT_TYPE_HEADER:
            attr = "datacontenttype"
        else:
            continue
        try:
            attrs[attr] = value.decode() if isinstance(value, bytes) else value
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"event header {name!r} is not UTF-8",
                               hint="CloudEvents attribute values are text") from exc
    data: Any = None
    if body:
        content_type = attrs.get("datacontenttype")
        if isinstance(content_type, str) and not is_json_content_type(content_type):
            raise InvalidInput(f"datacontenttype {content_type!r} is not JSON",
                               hint="event data must be a JSON object "
                                    "(content-type application/json)")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput("event data is not valid JSON",
                               hint="event data must be a JSON object") from exc
    return Event.from_attributes(attrs, data)


def decode_message(body: bytes, headers: Iterable[tuple[str, bytes | str]] | None = None, *,
                   prefix: str = KAFKA_PREFIX) -> Event:
    """A received message in whichever content mode it is in: binary when it carries the
    ``<prefix>specversion`` header, else structured (:func:`decode_event`)."""
    pairs = list(headers or ())
    marker = f"{prefix}specversion"
    if any(name.lower() == marker for name, _ in pairs):
        return from_binary(pairs, body, prefix=prefix)
    return decode_event(body)


def dead_letter_event(event: Event, *, topic: str, reason: str, attempts: int) -> Event:
    """``event`` unchanged (same id and idempotency key) plus the dead-letter headers."""
    headers = {**event.headers, DEAD_LETTER_REASON: reason or "unspecified",
               ORIGINAL_TOPIC: topic, DEAD_LETTER_ATTEMPTS: str(attempts)}
    return dataclasses.replace(event, headers=headers)


def poison_event(raw: bytes, *, topic: str, reason: str, source: str = "aios-mesh/events",
                 wire_headers: Iterable[tuple[str, bytes | str]] | None = None) -> Event:
    """A valid envelope that carries a message which could not be parsed.

    ``data["raw"]`` holds the payload as text (undecodable bytes replaced) and
    ``data["raw_b64"]`` the exact bytes; ``data["wire_headers"]`` the message's headers
    when it had any (a binary-mode message keeps its attributes there); the headers say why
    and where it came from.
    """
    data: dict[str, Any] = {"raw": raw.decode("utf-8", "replace"),
                            "raw_b64": base64.b64encode(raw).decode("ascii")}
    pairs = list(wire_headers or ())
    if pairs:
        data["wire_headers"] = {
            name: value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            for name, value in pairs}
    return Event(
        type=POISON_EVENT_TYPE, source=source, tenant="unknown", data=data,
        headers={DEAD_LETTER_REASON: reason or "unparseable message", ORIGINAL_TOPIC: topic,
                 DEAD_LETTER_ATTEMPTS: "0"},
    )
