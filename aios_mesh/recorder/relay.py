"""The record relay: OpenLineage run events and ``aios.mesh.decision`` domain events, shipped
from the audit log itself (the Recorder's lossless, deferred processors).

The audit log is already a durable, ordered, append-only record of every call, written before
the caller gets its answer — so it doubles as the outbox for per-call signals (the
transactional-outbox pattern, with the log as the outbox table). :class:`RecordRelay` follows
it from a persisted cursor, emits each record's lineage events and domain event, and moves the
cursor only after both sinks accepted them: an outage of the bus or the lineage backend loses
nothing, and a restart resumes where it stopped (at least once; consumers dedupe on the
event's ``idempotency_key`` = record id, lineage on ``runId`` + ``eventType``).

The cursor names a position *and the hash of the record there*. When the log no longer holds
that record (its tail was cut, or it was restored from an older copy), following the number
alone would skip every record written since — silently. The relay notices instead: it logs an
error, publishes an alarm event on :data:`ALARM_TOPIC`, and re-ships everything after the
newest earlier position that still matches the log (idempotency keys make that safe).
When an operator restored the log on purpose and recorded a signed re-baseline
(``aios-mesh audit rebaseline``, see :mod:`aios_mesh.anchoring`) after the relay last moved,
and the log holds the re-baselined head, the relay follows it quietly (an info line, no
alarm) and re-ships the same way.

The relay is a *shipper*: :meth:`RecordRelay.ship` does one pass. The background runner that
drives it (and the application outbox) lives in :mod:`aios_mesh.relay`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from aios_mesh.errors import MeshError
from aios_mesh.lineage import run_events_for
from aios_mesh.ports.anchor import Anchor
from aios_mesh.ports.audit import AuditEntry, AuditLog
from aios_mesh.ports.events import Event, EventBus
from aios_mesh.ports.lineage import Lineage

__all__ = ["ALARM_TOPIC", "DECISION_EVENT_TYPE", "DECISION_TOPIC", "LOG_REWOUND_EVENT_TYPE",
           "Factory", "RecordRelay", "RelayStats", "ShipResult", "decision_event"]

T = TypeVar("T")
#: Builds an adapter; returns it and whether the relay owns it (and so closes it).
Factory = Callable[[], tuple[T, bool]]

DECISION_TOPIC = "aios.mesh.decisions"
DECISION_EVENT_TYPE = "aios.mesh.decision.recorded"
#: Where the relay raises alarms an operator must see (e.g. a rewound audit log).
ALARM_TOPIC = "aios.mesh.alarms"
LOG_REWOUND_EVENT_TYPE = "aios.mesh.relay.log-rewound"

_log = logging.getLogger("aios_mesh.recorder.relay")
#: Earlier cursor positions kept to find where a rewound log still matches.
_HISTORY = 64
#: Earlier positions kept from each shipped batch.
_PER_BATCH = 8


@dataclass(slots=True)
class RelayStats:
    """What a relay shipped (cumulative for this relay)."""

    records: int = 0
    lineage_events: int = 0
    decision_events: int = 0
    failures: int = 0
    cursor: int = 0
    rewinds: int = 0
    rebaselines: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ShipResult:
    """One pass of a shipper: how many items went out and whether nothing is left."""

    shipped: int
    caught_up: bool


@dataclass(slots=True)
class _Cursor:
    seq: int = 0
    hash: str = ""
    history: list[tuple[int, str]] | None = None  # newest first


def decision_event(record: dict[str, Any]) -> Event:
    """The domain event for one decision record (keyed per tenant and capability, so a
    consumer sees one capability's decisions for a tenant in order)."""
    cap = record["capability"]["name"]
    return Event(type=DECISION_EVENT_TYPE, source="aios-mesh", tenant=record["tenant"],
                 subject=cap, key=f"{record['tenant']}/{cap}", data=record,
                 idempotency_key=record["record_id"],
                 headers={"outcome": str(record["outcome"])})


class RecordRelay:
    """Follows the audit log and ships derived signals; one :meth:`ship` is one pass.

    Args:
        audit, lineage, bus: factories of the adapters (built on first use, on the thread
            and event loop that ships: sqlite handles and async clients are bound there).
        cursor_path: where the position (seq and hash) is kept between runs.
        batch: records read and shipped per step.
        verify_every_s: how often an idle relay checks that the log still holds the record
            its cursor names (a busy one checks every batch for free).
        rebaselines: reads the signed re-baselines of the anchor store (None: no anchors;
            every rewind raises the alarm).
    """

    name = "records"

    def __init__(self, *, audit: Factory[AuditLog], lineage: Factory[Lineage] | None,
                 bus: Factory[EventBus] | None, cursor_path: Path, batch: int = 500,
                 verify_every_s: float = 30.0,
                 rebaselines: Callable[[], Awaitable[list[Anchor]]] | None = None) -> None:
        self._rebaselines = rebaselines
        self._factories: dict[str, Factory[Any] | None] = {
            "audit": audit, "lineage": lineage, "bus": bus}
        self._adapters: dict[str, tuple[Any, bool]] = {}
        self.cursor_path = cursor_path
        self.batch = batch
        self.verify_every_s = verify_every_s
        self._cursor = self._read_cursor()
        self._verified_at: float | None = None  # never: check on the first pass
        self.stats = RelayStats(cursor=self._cursor.seq)

    # -- adapters ----------------------------------------------------------------------------
    def _adapter(self, name: str) -> Any:
        found = self._adapters.get(name)
        if found is None:
            factory = self._factories[name]
            assert factory is not None
            found = self._adapters[name] = factory()
        return found[0]

    async def aclose(self) -> None:
        """Close the adapters this relay built."""
        for adapter, owned in self._adapters.values():
            if owned:
                with contextlib.suppress(Exception):
                    await adapter.aclose()
        self._adapters.clear()

    # -- the cursor --------------------------------------------------------------------------
    def _read_cursor(self) -> _Cursor:
        try:
            text = self.cursor_path.read_text().strip()
        except FileNotFoundError:
            return _Cursor(history=[])
        try:
            if text.isdigit() or not text:  # the format before hashes: a bare number
                return _Cursor(int(text or 0), "", [])
            doc = orjson.loads(text)
            return _Cursor(int(doc["seq"]), str(doc["hash"]),
                           [(int(s), str(h)) for s, h in doc.get("history", [])])
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            _log.error("unreadable relay cursor %s; replaying the log from the start (consumers "
                       "drop the repeats by idempotency key)", self.cursor_path)
            return _Cursor(history=[])

    def _move_cursor(self, batch: list[AuditEntry]) -> None:
        # Besides the new position, keep a few earlier ones from this batch (evenly spaced,
        # newest first): after a rewind, the newest that still matches is where to resume.
        entry = batch[-1]
        step = max(1, len(batch) // _PER_BATCH)
        marks = [(e.seq, e.hash) for e in reversed(batch[:-1:step])]
        if self._cursor.seq:
            marks.append((self._cursor.seq, self._cursor.hash))
        history = sorted({*marks, *(self._cursor.history or [])}, reverse=True)[:_HISTORY]
        self._cursor = _Cursor(entry.seq, entry.hash, history)
        self.stats.cursor = entry.seq
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cursor_path.parent, prefix=".cursor-")
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps({"seq": entry.seq, "hash": entry.hash, "history": history}))
        os.replace(tmp, self.cursor_path)

    async def _holds(self, audit: AuditLog, seq: int, digest: str) -> bool:
        found = await audit.read(since=seq - 1, limit=1)
        return bool(found) and found[0].seq == seq and (not digest or found[0].hash == digest)

    async def _check_position(self, audit: AuditLog, first: AuditEntry | None) -> None:
        """Make sure the cursor names a record the log still holds; rewind if not."""
        cur = self._cursor
        if cur.seq == 0:
            return
        if first is not None:  # the next record must chain onto the cursor
            if not cur.hash or first.prev_hash == cur.hash:
                return
        elif await self._holds(audit, cur.seq, cur.hash):
            return
        await self._rewind(audit)

    async def _rewind(self, audit: AuditLog) -> None:
        lost = self._cursor
        resume = _Cursor(history=[])
        for seq, digest in lost.history or []:
            if await self._holds(audit, seq, digest):
                kept = [(s, h) for s, h in lost.history or [] if s < seq]
                resume = _Cursor(seq, digest, kept)
                break
        self.stats.rewinds += 1
        rebaseline = await self._rebaseline(audit)
        if rebaseline is not None:
            self.stats.rebaselines += 1
            _log.info("the audit log was re-baselined at seq %s (%s); following it: re-shipping "
                      "every record after %s", rebaseline.seq, rebaseline.at, resume.seq)
        else:
            _log.error("the audit log no longer holds record %s that the relay shipped last "
                       "(its tail was cut or it was restored from an older copy); re-shipping "
                       "every record after %s", lost.seq, resume.seq)
        self._cursor = resume
        self.stats.cursor = resume.seq
        if rebaseline is None and self._factories["bus"] is not None:
            bus: EventBus = self._adapter("bus")
            alarm = Event(type=LOG_REWOUND_EVENT_TYPE, source="aios-mesh", tenant="aios-mesh",
                          subject="audit", key="audit",
                          data={"cursor_seq": lost.seq, "cursor_hash": lost.hash,
                                "resumed_after_seq": resume.seq,
                                "cursor_path": str(self.cursor_path)})
            with contextlib.suppress(MeshError, OSError):  # the log line above stands
                await bus.publish(ALARM_TOPIC, [alarm])

    async def _rebaseline(self, audit: AuditLog) -> Anchor | None:
        """A signed re-baseline that covers this rewind: recorded after the relay last moved
        its cursor (an older one was followed already, or predates this cut), and the log
        holds the head it names."""
        if self._rebaselines is None:
            return None
        try:
            moved = self.cursor_path.stat().st_mtime
        except FileNotFoundError:
            moved = 0.0
        for anchor in reversed(await self._rebaselines()):
            try:
                at = datetime.fromisoformat(anchor.at).timestamp()
            except ValueError:
                continue
            if at > moved and (anchor.seq == 0
                               or await self._holds(audit, anchor.seq, anchor.head)):
                return anchor
        return None

    # -- shipping ----------------------------------------------------------------------------
    async def backlog(self) -> bool:
        """Whether records after the cursor are waiting (what a standby relay reports)."""
        self._cursor = self._read_cursor()  # the active relay may be another process
        audit: AuditLog = self._adapter("audit")
        return bool(await audit.read(since=self._cursor.seq, limit=1))

    async def ship(self) -> ShipResult:
        """Ship everything after the cursor, batch by batch in log order. Stops at the first
        failure and leaves the cursor before it (the batch goes again: at least once)."""
        try:
            return await self._ship()
        except MeshError as exc:  # e.g. a lineage adapter that is not installed
            self.stats.failures += 1
            _log.warning("record relay cannot run: %s", exc)
            return ShipResult(0, False)

    async def _ship(self) -> ShipResult:
        audit: AuditLog = self._adapter("audit")
        lineage: Lineage | None = (self._adapter("lineage") if self._factories["lineage"]
                                   else None)
        bus: EventBus | None = self._adapter("bus") if self._factories["bus"] else None
        shipped = 0
        now = time.monotonic()
        checked = (self._verified_at is not None
                   and now - self._verified_at < self.verify_every_s)
        if not checked:
            head = await audit.read(since=self._cursor.seq, limit=1)
            await self._check_position(audit, head[0] if head else None)
            self._verified_at = now
        while True:
            entries = await audit.read(since=self._cursor.seq, limit=self.batch)
            if not entries:
                return ShipResult(shipped, True)
            if self._cursor.hash and entries[0].prev_hash != self._cursor.hash:
                await self._rewind(audit)  # the log changed under a running relay
                continue
            records = [e.record for e in entries
                       if e.record.get("kind", "decision") == "decision"]  # skip alias changes
            try:
                # The cursor moves only after both sinks took the whole batch.
                if lineage is not None and records:
                    events = [ev for record in records for ev in run_events_for(record)]
                    emit_many = getattr(lineage, "emit_many", None)
                    if emit_many is not None:
                        await emit_many(events)
                    else:
                        for event in events:
                            await lineage.emit(event)
                    self.stats.lineage_events += len(events)
                if bus is not None and records:
                    await bus.publish(DECISION_TOPIC, [decision_event(r) for r in records])
                    self.stats.decision_events += len(records)
            except (MeshError, OSError) as exc:
                self.stats.failures += 1
                _log.warning("record relay paused at seq %s: %s", entries[0].seq, exc)
                return ShipResult(shipped, False)
            self._move_cursor(entries)
            self.stats.records += len(records)
            shipped += len(records)
