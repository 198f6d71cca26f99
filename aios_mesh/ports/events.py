"""EventBus port: the event envelope (a CloudEvent), publish, subscribe with groups, ack/nack.

The envelope is a CloudEvents 1.0 event. :meth:`Event.attributes` gives its context
attributes and :meth:`Event.from_attributes` builds one from them (with the defaults for
foreign producers); :meth:`Event.to_bytes` / :meth:`Event.from_bytes` are the JSON event
format (structured content mode). Protocol bindings (Kafka's binary mode, dead letters) live
in :mod:`aios_mesh.ports.event_codec`.
"""

from __future__ import annotations

import hashlib
import re
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

import orjson

from aios_mesh.errors import InvalidInput
from aios_mesh.ports.base import Feature

__all__ = [
    "CE_CONTENT_TYPE",
    "DATA_CONTENT_TYPE",
    "IDEMPOTENCY_KEY_ATTRIBUTE",
    "PARTITION_KEY_ATTRIBUTE",
    "RESERVED_ATTRIBUTES",
    "SPEC_VERSION",
    "TENANT_ATTRIBUTE",
    "Delivery",
    "Event",
    "EventBus",
    "Subscription",
    "is_attribute_name",
    "is_json_content_type",
]

#: The CloudEvents version of the envelope; consumers dead-letter other versions.
SPEC_VERSION: Final = "1.0"
#: ``datacontenttype`` of every event the mesh writes: ``data`` is a JSON object.
DATA_CONTENT_TYPE: Final = "application/json"
#: Media type of the JSON event format (structured content mode).
CE_CONTENT_TYPE: Final = "application/cloudevents+json"
#: Extension attribute that carries ``Event.tenant``.
TENANT_ATTRIBUTE: Final = "tenant"
#: Extension attribute that carries ``Event.idempotency_key``.
IDEMPOTENCY_KEY_ATTRIBUTE: Final = "idempotencykey"
#: Extension attribute that carries ``Event.key`` (the CloudEvents Partitioning extension).
PARTITION_KEY_ATTRIBUTE: Final = "partitionkey"
#: Attribute names with a field of their own; no header may use them.
RESERVED_ATTRIBUTES: Final = frozenset({
    "specversion", "id", "source", "type", "time", "datacontenttype", "subject", "data",
    TENANT_ATTRIBUTE, IDEMPOTENCY_KEY_ATTRIBUTE, PARTITION_KEY_ATTRIBUTE})

# CloudEvents 1.0, "Attribute Naming Convention": lower-case ASCII letters and digits only.
_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]+")
# the JSON event format's test for JSON data: application/json, text/json, */*+json
_JSON_CONTENT_TYPE = re.compile(r"(application|text)/([a-zA-Z0-9.\-]+\+)?json(\s*;.*)?",
                                re.IGNORECASE)
_REQUIRED: Final = ("id", "source", "type", TENANT_ATTRIBUTE)
_REQUIRED_HINT: Final = ("a CloudEvent needs specversion '1.0', id, source, type and the "
                         "extension attribute 'tenant'")
# the envelope before CloudEvents (schema_version "1"): outbox rows and logs still hold it
_LEGACY_VERSION: Final = "1"
_LEGACY_HEADERS: Final = {"x-dead-letter-reason": "deadletterreason",
                          "x-original-topic": "deadlettertopic",
                          "x-attempts": "deadletterattempts"}


def __getattr__(name: str) -> str:
    # ENVELOPE_VERSION was the version of the envelope before it became a CloudEvent
    if name == "ENVELOPE_VERSION":
        warnings.warn("aios_mesh.ports.events.ENVELOPE_VERSION is deprecated; use "
                      "SPEC_VERSION (the CloudEvents specversion)", DeprecationWarning,
                      stacklevel=2)
        return SPEC_VERSION
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _new_id() -> str:
    return uuid.uuid4().hex


def is_attribute_name(name: object) -> bool:
    """Whether ``name`` is a valid CloudEvents attribute name (``[a-z0-9]+``)."""
    return isinstance(name, str) and _ATTRIBUTE_NAME.fullmatch(name) is not None


def is_json_content_type(content_type: str) -> bool:
    """Whether ``datacontenttype`` says the data is JSON (as the JSON event format decides)."""
    return _JSON_CONTENT_TYPE.fullmatch(content_type.strip()) is not None


@dataclass(frozen=True, slots=True)
class Event:
    """A CloudEvents 1.0 event. ``key`` orders events (per-key order is kept);
    ``idempotency_key`` lets consumers drop redeliveries.

    Attribute mapping: ``id``, ``source``, ``type``, ``time``, ``subject`` are the CloudEvents
    attributes of the same name; ``tenant`` travels as the extension ``tenant``, ``key`` as
    ``partitionkey``, ``idempotency_key`` as ``idempotencykey``; each header is an extension
    attribute of its own, so header names are attribute names (``[a-z0-9]+``, e.g.
    ``traceparent``). ``data`` is a JSON object (``datacontenttype: application/json``).
    An empty ``subject`` or ``key`` means none.

    Raises:
        InvalidInput: a header name that is not an attribute name, or names an attribute
            the event has a field for.
    """

    type: str
    source: str
    tenant: str
    data: dict[str, Any] = field(default_factory=dict)
    subject: str | None = None
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    id: str = field(default_factory=_new_id)
    time: str = field(default_factory=_now)
    idempotency_key: str = ""

    #: the CloudEvents version of every event (not a field: there is one)
    specversion: ClassVar[str] = SPEC_VERSION

    def __post_init__(self) -> None:
        if not self.idempotency_key:
            object.__setattr__(self, "idempotency_key", self.id)
        if self.subject == "":
            object.__setattr__(self, "subject", None)
        if self.key == "":
            object.__setattr__(self, "key", None)
        for name in self.headers:
            if not is_attribute_name(name) or name in RESERVED_ATTRIBUTES:
                raise InvalidInput(
                    f"header name {name!r} cannot be a CloudEvents extension attribute",
                    hint="header names are lower-case letters and digits (e.g. 'traceparent') "
                         f"and none of {', '.join(sorted(RESERVED_ATTRIBUTES))}")

    @property
    def schema_version(self) -> str:
        """Deprecated: the envelope is a CloudEvent; read :attr:`specversion`."""
        warnings.warn("Event.schema_version is deprecated; the envelope is a CloudEvent, "
                      "use Event.specversion", DeprecationWarning, stacklevel=2)
        return SPEC_VERSION

    def attributes(self) -> dict[str, str]:
        """The CloudEvents context attributes (every value a string), without ``data``."""
        attrs = {"specversion": SPEC_VERSION, "id": self.id, "source": self.source,
                 "type": self.type, "time": self.time, "datacontenttype": DATA_CONTENT_TYPE,
                 TENANT_ATTRIBUTE: self.tenant, IDEMPOTENCY_KEY_ATTRIBUTE: self.idempotency_key}
        if self.subject is not None:
            attrs["subject"] = self.subject
        if self.key is not None:
            attrs[PARTITION_KEY_ATTRIBUTE] = self.key
        attrs.update(self.headers)
        return attrs

    def to_bytes(self) -> bytes:
        """The event in the CloudEvents JSON format (``application/cloudevents+json``)."""
        return orjson.dumps({**self.attributes(), "data": self.data})

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, Any], data: Any = None) -> Event:
        """Build an event from CloudEvents context attributes and its data, filling the
        defaults for foreign producers: ``time`` = now, ``idempotencykey`` = ``id``,
        ``data`` = ``{}``; attributes without a field of their own become headers.

        Raises:
            InvalidInput: another ``specversion``, a missing or empty ``id``, ``source``,
                ``type`` or ``tenant``, an ill-typed attribute, or ``data`` that is not a
                JSON object (a *poison* message).
        """
        version = attributes.get("specversion")
        if version != SPEC_VERSION:
            raise InvalidInput(f"unknown CloudEvents specversion {version!r}",
                               hint=f"this consumer reads specversion {SPEC_VERSION}")
        content_type = attributes.get("datacontenttype")
        if content_type is not None and not (isinstance(content_type, str)
                                             and is_json_content_type(content_type)):
            raise InvalidInput(f"datacontenttype {content_type!r} is not JSON",
                               hint="event data must be a JSON object "
                                    f"(datacontenttype {DATA_CONTENT_TYPE})")
        missing = [name for name in _REQUIRED if attributes.get(name) in (None, "")]
        if missing:
            raise InvalidInput(f"event envelope lacks {', '.join(missing)}", hint=_REQUIRED_HINT)
        bad: list[str] = []
        fields: dict[str, Any] = {}
        headers: dict[str, str] = {}
        for name, value in attributes.items():
            if name in ("specversion", "datacontenttype") or value is None:
                continue  # a null attribute is an absent one (JSON event format, 3.1)
            if name in RESERVED_ATTRIBUTES:
                if isinstance(value, str):
                    fields[name] = value
                else:
                    bad.append(name)
            elif not is_attribute_name(name):
                bad.append(repr(name))
            elif isinstance(value, bool):
                headers[name] = "true" if value else "false"  # canonical Boolean string
            elif isinstance(value, str | int):
                headers[name] = str(value)
            else:
                bad.append(name)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            bad.append("data")
        if bad:
            raise InvalidInput(f"event envelope has ill-typed fields: {', '.join(bad)}",
                               hint="attributes are strings, integers or booleans; data is "
                                    "a JSON object")
        return cls(type=fields["type"], source=fields["source"],
                   tenant=fields[TENANT_ATTRIBUTE], data=data, subject=fields.get("subject"),
                   key=fields.get(PARTITION_KEY_ATTRIBUTE), headers=headers, id=fields["id"],
                   time=fields.get("time") or _now(),
                   idempotency_key=fields.get(IDEMPOTENCY_KEY_ATTRIBUTE, ""))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Event:
        """Parse the JSON event format (structured content mode), or the envelope written
        before CloudEvents (no ``specversion``; outbox rows and logs still hold it).

        Raises:
            InvalidInput: a malformed or ill-typed envelope (a *poison* message).
        """
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput("event is not valid JSON", hint=_REQUIRED_HINT) from exc
        if not isinstance(doc, dict):
            raise InvalidInput("event envelope must be a JSON object", hint=_REQUIRED_HINT)
        if "specversion" not in doc:
            return cls.from_attributes(_legacy_attributes(doc, raw), doc.get("data"))
        if "data_base64" in doc:
            raise InvalidInput("binary event data (data_base64) is not supported",
                               hint="send data as a JSON object "
                                    f"(datacontenttype {DATA_CONTENT_TYPE})")
        data = doc.pop("data", None)
        return cls.from_attributes(doc, data)


def _legacy_attributes(doc: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """The attributes of an envelope written before CloudEvents (``schema_version`` "1").

    Defaults for what it lacks: ``id`` = a hash of the message (a redelivery gets the same
    one), ``time`` = now, ``idempotency_key`` = ``id``; header names are folded to attribute
    names (lower case, other characters dropped; the old dead-letter names mapped).
    """
    version = doc.get("schema_version", _LEGACY_VERSION)
    if version != _LEGACY_VERSION:
        raise InvalidInput(f"unknown envelope schema_version {version!r}",
                           hint=f"this consumer reads CloudEvents specversion {SPEC_VERSION} "
                                f"(and the older schema_version {_LEGACY_VERSION})")
    headers = doc.get("headers") or {}
    if not isinstance(headers, dict):
        raise InvalidInput("event envelope has ill-typed fields: headers",
                           hint="headers are a JSON object of strings")
    attrs: dict[str, Any] = {}
    for name, value in headers.items():
        if not isinstance(value, str):
            raise InvalidInput("event envelope has ill-typed fields: headers",
                               hint="headers are a JSON object of strings")
        folded = _LEGACY_HEADERS.get(name) or re.sub(r"[^a-z0-9]", "", str(name).lower())
        if folded and folded not in RESERVED_ATTRIBUTES:
            attrs[folded] = value
    attrs.update({"specversion": SPEC_VERSION, "type": doc.get("type"),
                  "source": doc.get("source"), TENANT_ATTRIBUTE: doc.get("tenant"),
                  "subject": doc.get("subject"), PARTITION_KEY_ATTRIBUTE: doc.get("key"),
                  "id": doc.get("id") or hashlib.sha256(raw).hexdigest()[:32],
                  "time": doc.get("time"),
                  IDEMPOTENCY_KEY_ATTRIBUTE: doc.get("idempotency_key")})
    return attrs


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
