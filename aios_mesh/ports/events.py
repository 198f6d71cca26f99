"""EventBus port: a versioned event envelope, publish, subscribe with groups, ack/nack."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import orjson

from aios_mesh.errors import InvalidInput
from aios_mesh.ports.base import Feature

__all__ = ["ENVELOPE_VERSION", "Delivery", "Event", "EventBus", "Subscription"]

#: Schema version of the envelope itself; consumers dead-letter versions they do not know.
ENVELOPE_VERSION = "1"
_REQUIRED = ("id", "source", "type", "time", "tenant", "schema_version", "idempotency_key")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Event:
    """CloudEvents-style envelope. ``key`` orders events (per-key order is kept);
    ``idempotency_key`` lets consumers drop redeliveries."""

    type: str
    source: str
    tenant: str
    data: dict[str, Any] = field(default_factory=dict)
    subject: str | None = None
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    id: str = field(default_factory=_new_id)
    time: str = field(default_factory=_now)
    schema_version: str = ENVELOPE_VERSION
    idempotency_key: str = ""

    def __post_init__(self) -> None:
        if not self.idempotency_key:
            object.__setattr__(self, "idempotency_key", self.id)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self)  # orjson serialises dataclasses natively (~15x asdict)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Event:
        """Parse an envelope; a malformed one raises :class:`InvalidInput` (poison message)."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput("event is not valid JSON",
                               hint="producers must publish aios-mesh envelopes") from exc
        if not isinstance(doc, dict):
            raise InvalidInput("event envelope must be a JSON object")
        missing = [k for k in _REQUIRED if not doc.get(k)]
        if missing:
            raise InvalidInput(f"event envelope lacks {', '.join(missing)}")
        if doc["schema_version"] != ENVELOPE_VERSION:
            raise InvalidInput(f"unknown envelope schema_version {doc['schema_version']!r}",
                               hint=f"this consumer reads version {ENVELOPE_VERSION}")
        known = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in doc.items() if k in known})
        except TypeError as exc:
            raise InvalidInput(f"malformed event envelope: {exc}") from exc


@dataclass(slots=True)
class Delivery:
    """One received event; ``attempt`` counts deliveries of the same message (1-based)."""

    event: Event
    topic: str
    attempt: int = 1
    token: Any = None  # adapter-private handle used by ack/nack


@runtime_checkable
class Subscription(Protocol):
    async def fetch(self, max_messages: int = 100, timeout: float = 1.0) -> list[Delivery]: ...

    async def ack(self, delivery: Delivery) -> None: ...

    async def nack(self, delivery: Delivery, *, reason: str = "") -> None:
        """Give the message back for redelivery; after the adapter's bounded retries it goes to
        the dead-letter topic ``<topic>.dlq`` with the reason."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EventBus(Protocol):
    features: frozenset[Feature]

    async def publish(self, topic: str, events: Sequence[Event]) -> None:
        """Publish in order; returns once the bus has durably accepted them."""
        ...

    async def subscribe(self, topic: str, *, group: str) -> Subscription: ...

    async def aclose(self) -> None: ...
