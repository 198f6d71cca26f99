"""Where anchors are kept, apart from the audit log (:class:`~aios_mesh.ports.anchor.AnchorStore`).

``[anchors] store`` names one by URL:

* ``file:///anchors.jsonl`` (under the state folder) or ``file:////mnt/other/anchors.jsonl``
  (absolute: put it on another disk or host mount than the log): :class:`FileAnchorStore`,
  one anchor per line, appended under ``flock`` and ``fsync``-ed;
* ``postgresql://user@host/db`` or ``sqlite:///folder``: :class:`SqlAnchorStore`, the table
  ``audit_anchors`` on the shared-state seam (:mod:`aios_mesh.state`); a PostgreSQL database
  other than the audit log's, with its own credentials, is the point;
* ``bus://aios.mesh.anchors``: :class:`BusAnchorStore`, a topic of the mesh's event bus
  (Kafka, NATS JetStream, the embedded bus); the topic must retain its messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from aios_mesh.anchoring.config import AnchorConfig
from aios_mesh.backends import parse_url
from aios_mesh.errors import ConfigError, IntegrityError
from aios_mesh.ports.anchor import Anchor
from aios_mesh.ports.events import Event, EventBus
from aios_mesh.state import Database, Migration, open_state

__all__ = ["ANCHOR_EVENT_TYPE", "BusAnchorStore", "FileAnchorStore", "SqlAnchorStore",
           "open_anchor_store", "store_for"]

ANCHOR_EVENT_TYPE: Final = "aios.mesh.audit.anchor"
_SQL: Final = {
    "sqlite": (Migration(1, ("CREATE TABLE audit_anchors (id INTEGER PRIMARY KEY "
                             "AUTOINCREMENT, body TEXT NOT NULL)",)),),
    "postgresql": (Migration(1, ("CREATE TABLE audit_anchors (id bigserial PRIMARY KEY, "
                                 "body text NOT NULL, written_at timestamptz NOT NULL "
                                 "DEFAULT clock_timestamp())",)),),
}


class FileAnchorStore:
    """Anchors as JSON Lines in one file (created with its folder on the first put)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _put(self, anchor: Anchor) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, anchor.to_json() + b"\n")
            os.fsync(fd)  # an anchor is rare and must survive the machine
        except OSError as exc:
            raise IntegrityError(f"cannot write the anchor file {self.path}: {exc}",
                                 hint="check the path, its permissions and the disk") from exc
        finally:
            os.close(fd)

    def _list(self) -> list[Anchor]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise IntegrityError(f"cannot read the anchor file {self.path}: {exc}",
                                 hint="check the path and its permissions") from exc
        return [Anchor.from_json(line) for line in data.splitlines() if line.strip()]

    async def put(self, anchor: Anchor) -> None:
        """Append ``anchor`` and force it to the disk."""
        await asyncio.to_thread(self._put, anchor)

    async def list(self) -> list[Anchor]:
        """Every anchor in the file, oldest first."""
        return await asyncio.to_thread(self._list)

    async def aclose(self) -> None:
        """Nothing is held open."""


class SqlAnchorStore:
    """Anchors in the table ``audit_anchors`` of a shared state (sqlite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def open(cls, url: str, *, folder: Path) -> SqlAnchorStore:
        """The store on the shared state ``url`` names (see :func:`aios_mesh.state.open_state`)."""
        return cls(Database(open_state(url, folder=folder), "audit_anchors", _SQL,
                            what="the anchor store"))

    async def put(self, anchor: Anchor) -> None:
        """Insert ``anchor`` (committed on return)."""
        await asyncio.to_thread(self.db.execute, "INSERT INTO audit_anchors (body) VALUES (?)",
                                (anchor.to_json().decode(),))

    async def list(self) -> list[Anchor]:
        """Every anchor, in insertion order."""
        rows = await asyncio.to_thread(self.db.execute,
                                       "SELECT body FROM audit_anchors ORDER BY id")
        return [Anchor.from_json(body) for (body,) in rows]

    async def aclose(self) -> None:
        """Release the connection."""
        await asyncio.to_thread(self.db.close)
        await asyncio.to_thread(self.db.state.close)


class BusAnchorStore:
    """Anchors as events on one topic of the event bus. Reading joins a consumer group of its
    own (one per store object, from the topic's start), so the topic must keep its messages
    (Kafka retention, a JetStream stream with limits retention, the embedded bus)."""

    def __init__(self, bus: EventBus, topic: str, *, owned: bool = False,
                 wait_s: float = 0.2) -> None:
        self.bus = bus
        self.topic = topic
        self.owned = owned
        self.wait_s = wait_s
        self._group = f"aios-mesh-anchors-{uuid.uuid4().hex[:12]}"
        self._sub: Any = None
        self._seen: list[Anchor] = []

    async def put(self, anchor: Anchor) -> None:
        """Publish ``anchor`` (durably accepted by the bus on return)."""
        await self.bus.publish(self.topic, [Event(
            type=ANCHOR_EVENT_TYPE, source="aios-mesh", tenant="aios-mesh", subject="audit",
            key="audit", data=anchor.to_dict(),
            idempotency_key=f"anchor-{anchor.seq}-{anchor.head[:16]}-{anchor.at}")])

    async def list(self) -> list[Anchor]:
        """Every anchor on the topic, in the order the bus delivers them."""
        if self._sub is None:
            self._sub = await self.bus.subscribe(self.topic, group=self._group)
        while True:
            got = await self._sub.fetch(max_messages=100, timeout=self.wait_s)
            if not got:
                return list(self._seen)
            for delivery in got:
                if delivery.event.type == ANCHOR_EVENT_TYPE:
                    self._seen.append(Anchor.from_dict(delivery.event.data))
                await self._sub.ack(delivery)

    async def aclose(self) -> None:
        """Leave the consumer group (and close the bus if this store made it)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.aclose()
            self._sub = None
        if self.owned:
            await self.bus.aclose()


def open_anchor_store(url: str, *, base_dir: Path,
                      bus: Callable[[], tuple[EventBus, bool]] | None = None
                      ) -> FileAnchorStore | SqlAnchorStore | BusAnchorStore:
    """The anchor store ``url`` names (see the module docstring); ``bus`` builds the event
    bus for ``bus://TOPIC`` (returns it and whether the store owns it)."""
    parsed = parse_url(url)
    scheme = parsed.scheme
    if scheme == "file":
        return FileAnchorStore(parsed.resolve_path(base_dir))
    if scheme in ("sqlite", "postgresql", "postgres"):
        return SqlAnchorStore.open(url, folder=base_dir)
    if scheme == "bus":
        topic = (parsed.host or "") + parsed.path.rstrip("/")
        if not topic:
            raise ConfigError(f"{parsed.redacted()} names no topic",
                              hint="write bus://aios.mesh.anchors")
        if bus is None:
            raise ConfigError("a bus:// anchor store needs the mesh's event bus",
                              hint="use it from a mesh config ([backends] events)")
        adapter, owned = bus()
        return BusAnchorStore(adapter, topic, owned=owned)
    raise ConfigError(f"no anchor store for scheme {scheme!r}",
                      hint="write file:///anchors.jsonl, postgresql://user@host/db, "
                           "sqlite:///folder or bus://aios.mesh.anchors")


def store_for(config: AnchorConfig, state_dir: Path,
              bus: Callable[[], tuple[EventBus, bool]] | None = None
              ) -> FileAnchorStore | SqlAnchorStore | BusAnchorStore:
    """The store ``[anchors] store`` names (``file:///`` paths under ``state_dir``)."""
    return open_anchor_store(config.store, base_dir=state_dir, bus=bus)
