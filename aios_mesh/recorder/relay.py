"""The record relay: OpenLineage run events and ``aios.mesh.decision`` domain events, shipped
from the audit log itself (the Recorder's lossless, deferred processors).

The audit log is already a durable, ordered, append-only record of every call, written before
the caller gets its answer — so it doubles as the outbox for per-call signals (the
transactional-outbox pattern, with the log as the outbox table). :class:`RecordRelay` follows
it from a persisted cursor, emits each record's lineage events and domain event, and moves the
cursor only after both sinks accepted them: an outage of the bus or the lineage backend loses
nothing, and a restart resumes where it stopped (at least once; consumers dedupe on the
event's ``idempotency_key`` = record id, lineage on ``runId`` + ``eventType``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aios_mesh.errors import MeshError
from aios_mesh.lineage import run_events_for
from aios_mesh.ports.audit import AuditLog
from aios_mesh.ports.events import Event, EventBus
from aios_mesh.ports.lineage import Lineage

__all__ = ["DECISION_EVENT_TYPE", "DECISION_TOPIC", "Factory", "RecordRelay", "RelayStats",
           "decision_event"]

T = TypeVar("T")
#: Builds an adapter; returns it and whether the relay owns it (and so closes it).
Factory = Callable[[], tuple[T, bool]]

DECISION_TOPIC = "aios.mesh.decisions"
DECISION_EVENT_TYPE = "aios.mesh.decision.recorded"

_log = logging.getLogger("aios_mesh.recorder.relay")


@dataclass(slots=True)
class RelayStats:
    records: int = 0
    lineage_events: int = 0
    decision_events: int = 0
    failures: int = 0
    cursor: int = 0


def decision_event(record: dict[str, Any]) -> Event:
    """The domain event for one decision record (keyed per tenant and capability, so a
    consumer sees one capability's decisions for a tenant in order)."""
    cap = record["capability"]["name"]
    return Event(type=DECISION_EVENT_TYPE, source="aios-mesh", tenant=record["tenant"],
                 subject=cap, key=f"{record['tenant']}/{cap}", data=record,
                 idempotency_key=record["record_id"],
                 headers={"outcome": str(record["outcome"])})


class RecordRelay:
    """Follows the audit log and ships derived signals; run it with :meth:`start` (a daemon
    thread with its own event loop) or drive it with :meth:`run_once`."""

    def __init__(self, *, audit: Factory[AuditLog], lineage: Factory[Lineage] | None,
                 bus: Factory[EventBus] | None, cursor_path: Path,
                 interval_s: float = 0.5, batch: int = 500, linger_s: float = 0.05) -> None:
        # Factories, not instances: the relay builds its own adapters on its own thread and
        # event loop (sqlite handles and async clients are bound to where they were made).
        self._factories: dict[str, Factory[Any] | None] = {
            "audit": audit, "lineage": lineage, "bus": bus}
        self._adapters: dict[str, tuple[Any, bool]] = {}
        self.cursor_path = cursor_path
        self.interval_s = interval_s
        # Woken by a call, wait this long before shipping: a burst of calls becomes one
        # batch (one audit read, one bus transaction, one cursor write) instead of one each.
        self.linger_s = linger_s
        self.batch = batch
        self.stats = RelayStats(cursor=self._read_cursor())
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._lock = threading.Lock()

    def _adapter(self, name: str) -> Any:
        found = self._adapters.get(name)
        if found is None:
            factory = self._factories[name]
            assert factory is not None
            found = self._adapters[name] = factory()
        return found[0]

    async def _close_adapters(self) -> None:
        for adapter, owned in self._adapters.values():
            if owned:
                with contextlib.suppress(Exception):
                    await adapter.aclose()
        self._adapters.clear()

    def _read_cursor(self) -> int:
        try:
            return int(self.cursor_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            _log.warning("unreadable relay cursor %s; replaying from the start",
                         self.cursor_path)
            return 0

    def _write_cursor(self, seq: int) -> None:
        self.cursor_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cursor_path.parent, prefix=".cursor-")
        with os.fdopen(fd, "w") as f:
            f.write(str(seq))
        os.replace(tmp, self.cursor_path)

    async def run_once(self) -> int:
        """Ship everything after the cursor; returns how many records were shipped. Stops at
        the first failure (order is kept) and leaves the cursor before it."""
        shipped = 0
        try:
            return await self._ship(shipped)
        except MeshError as exc:  # e.g. a lineage adapter that is not installed
            self.stats.failures += 1
            _log.warning("signal relay cannot run: %s", exc)
            return 0

    async def _ship(self, shipped: int) -> int:
        audit: AuditLog = self._adapter("audit")
        lineage: Lineage | None = (self._adapter("lineage") if self._factories["lineage"]
                                   else None)
        bus: EventBus | None = self._adapter("bus") if self._factories["bus"] else None
        while True:
            entries = await audit.read(since=self.stats.cursor, limit=self.batch)
            if not entries:
                return shipped
            records = [e.record for e in entries
                       if e.record.get("kind", "decision") == "decision"]  # skip alias changes
            try:
                # One batch at a time, in log order; the cursor moves only after both sinks
                # took the whole batch (a failure resends it: at least once).
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
                _log.warning("signal relay paused at seq %s: %s", entries[0].seq, exc)
                return shipped
            self.stats.cursor = entries[-1].seq
            self.stats.records += len(records)
            shipped += len(records)
            self._write_cursor(self.stats.cursor)

    # -- background thread ----------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, daemon=True,
                                                name="aios-mesh-relay")
                self._thread.start()

    def poke(self) -> None:
        """A new record exists; ship soon."""
        self._idle.clear()
        self._wake.set()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    loop.run_until_complete(self.run_once())
                except Exception:  # fail soft: never take the process down
                    if not threading.main_thread().is_alive():
                        return  # interpreter exit without close(): the cursor resumes later
                    self.stats.failures += 1
                    _log.exception("signal relay round failed")
                if not self._wake.is_set():
                    self._idle.set()
                if self._wake.wait(self.interval_s) and self.linger_s:
                    self._stop.wait(self.linger_s)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(self.run_once())  # final drain
            loop.run_until_complete(self._close_adapters())
            loop.close()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far has been shipped (or ``timeout``)."""
        if self._thread is None:
            return True
        self.poke()
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 120.0) -> None:
        """Ship what is left, then stop. Whatever is not shipped by ``timeout`` stays in the
        audit log behind the cursor and goes out on the next start."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            _log.warning("signal relay still shipping after %.0fs; the rest resumes from the "
                         "cursor on the next start", timeout)
        self._thread = None
