"""The event codec and dead-letter policy every EventBus adapter shares.

One wire format and one dead-letter convention, so events move between buses (sqlite,
Kafka, NATS, ...) and a dead-lettered message reads the same whichever bus parked it:

* :func:`encode_event` / :func:`decode_event` — the envelope
  (:class:`~aios_mesh.ports.events.Event`) as JSON bytes; decoding also checks field
  types, so an ill-typed envelope is *poison*.
* :func:`dead_letter_topic` — ``<topic>.dlq``.
* :func:`dead_letter_event` — the event unchanged plus :data:`DEAD_LETTER_REASON`,
  :data:`ORIGINAL_TOPIC` and :data:`DEAD_LETTER_ATTEMPTS` headers.
* :func:`poison_event` — a valid envelope (type :data:`POISON_EVENT_TYPE`) carrying the bytes
  of a message that could not be parsed.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any, Final

from aios_mesh.errors import InvalidInput
from aios_mesh.ports.events import Event

__all__ = [
    "DEAD_LETTER_ATTEMPTS",
    "DEAD_LETTER_REASON",
    "DEAD_LETTER_SUFFIX",
    "ORIGINAL_TOPIC",
    "POISON_EVENT_TYPE",
    "dead_letter_event",
    "dead_letter_topic",
    "decode_event",
    "encode_event",
    "poison_event",
]

#: Suffix of the dead-letter topic of ``topic``.
DEAD_LETTER_SUFFIX: Final = ".dlq"
#: Header on a dead-lettered event: why it was dead-lettered.
DEAD_LETTER_REASON: Final = "x-dead-letter-reason"
#: Header on a dead-lettered event: the topic it was published to.
ORIGINAL_TOPIC: Final = "x-original-topic"
#: Header on a dead-lettered event: how many times it was delivered.
DEAD_LETTER_ATTEMPTS: Final = "x-attempts"
#: ``Event.type`` of the wrapper that carries a message that could not be parsed.
POISON_EVENT_TYPE: Final = "aios.mesh.poison"

_STRING_FIELDS: Final = ("type", "source", "tenant", "id", "time", "schema_version",
                         "idempotency_key")


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic of ``topic`` (``<topic>.dlq``)."""
    return f"{topic}{DEAD_LETTER_SUFFIX}"


def encode_event(event: Event) -> bytes:
    """The envelope as JSON bytes (:meth:`Event.to_bytes`)."""
    return event.to_bytes()


def decode_event(raw: bytes) -> Event:
    """Parse an envelope like :meth:`Event.from_bytes` and also check field types, so a
    message with e.g. ``"data": 5`` is poison too. Raises :class:`InvalidInput`."""
    event = Event.from_bytes(raw)
    bad = [name for name in _STRING_FIELDS if not isinstance(getattr(event, name), str)]
    bad += [name for name in ("subject", "key")
            if not isinstance(getattr(event, name), str | None)]
    data: Any = event.data
    if not isinstance(data, dict):
        bad.append("data")
    headers: Any = event.headers
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        bad.append("headers")
    if bad:
        raise InvalidInput(f"event envelope has ill-typed fields: {', '.join(bad)}",
                           hint="producers must publish aios-mesh envelopes (Event.to_bytes)")
    return event


def dead_letter_event(event: Event, *, topic: str, reason: str, attempts: int) -> Event:
    """``event`` unchanged (same id and idempotency key) plus the dead-letter headers."""
    headers = {**event.headers, DEAD_LETTER_REASON: reason or "unspecified",
               ORIGINAL_TOPIC: topic, DEAD_LETTER_ATTEMPTS: str(attempts)}
    return dataclasses.replace(event, headers=headers)


def poison_event(raw: bytes, *, topic: str, reason: str, source: str = "aios-mesh/events",
                 ) -> Event:
    """A valid envelope that carries a message which could not be parsed.

    ``data["raw"]`` holds the payload as text (undecodable bytes replaced) and
    ``data["raw_b64"]`` the exact bytes; the headers say why and where it came from.
    """
    return Event(
        type=POISON_EVENT_TYPE, source=source, tenant="unknown",
        data={"raw": raw.decode("utf-8", "replace"),
              "raw_b64": base64.b64encode(raw).decode("ascii")},
        headers={DEAD_LETTER_REASON: reason or "unparseable message", ORIGINAL_TOPIC: topic,
                 DEAD_LETTER_ATTEMPTS: "0"},
    )
