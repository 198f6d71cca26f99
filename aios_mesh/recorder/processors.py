"""The built-in record processors, and :class:`Deferred` to take any processor off the
caller's path.

* :class:`TelemetryProcessor` — structlog line, OpenTelemetry span and metrics (exported off
  the caller's path by :class:`~aios_mesh.telemetry.Telemetry`; fail soft, flushed at close).
* :class:`RelayProcessor` — wakes the background relay (:mod:`aios_mesh.relay`), which
  ships OpenLineage events and decision events from the audit log (the outbox: lossless
  across crashes, at least once).
* :class:`SinkProcessor` — the mesh's ``sinks``: plain callables ``(record, doc)``.
* :class:`~aios_mesh.recorder.shadow.ShadowProcessor` — mirrors answered calls to a shadow
  candidate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aios_mesh.record import DecisionRecord
from aios_mesh.recorder.processor import Recorded, RecordProcessor
from aios_mesh.telemetry import Telemetry

if TYPE_CHECKING:
    from aios_mesh.relay import RelayRunner

__all__ = ["Deferred", "RecordSink", "RelayProcessor", "SinkProcessor", "TelemetryProcessor"]

_log = logging.getLogger("aios_mesh.recorder")

#: Called with each record after it is in the audit log (lineage, domain events, tests).
RecordSink = Callable[[DecisionRecord, Mapping[str, Any]], None]


class TelemetryProcessor:
    """Log line, span and metrics for each record (see :class:`Telemetry`)."""

    name = "telemetry"

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def process(self, item: Recorded) -> None:
        self.telemetry.export(item.record, item.doc, item.span)

    def flush(self, timeout: float) -> bool:
        return self.telemetry.flush(timeout)

    def close(self) -> None:
        self.telemetry.close()


class RelayProcessor:
    """Wakes the relay that ships lineage and decision events from the audit log. Nothing is
    handed over in memory: the relay reads the durable log, so a crash loses nothing. The
    mesh owns the relay (it also ships ``mesh.publish`` events): it drains and stops it."""

    name = "relay"

    def __init__(self, relay: RelayRunner) -> None:
        self.relay = relay

    def process(self, item: Recorded) -> None:
        self.relay.poke()

    def flush(self, timeout: float) -> bool:
        return True  # the mesh drains the relay itself (after the other processors)

    def close(self) -> None:
        return None


class SinkProcessor:
    """Calls each sink in ``sinks`` (a list the owner may change at any time) with the
    record and its audit document; a sink that raises is logged and skipped."""

    name = "sinks"

    def __init__(self, sinks: list[RecordSink]) -> None:
        self.sinks = sinks

    def process(self, item: Recorded) -> None:
        for sink in self.sinks:
            try:
                sink(item.record, item.doc)
            except Exception:
                _log.warning("record sink %r failed", sink, exc_info=True)

    def flush(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        return None


class Deferred:
    """Runs another processor off the caller's path: records queue up and a daemon thread
    hands them over in batches, ``linger_s`` after the first of a burst (so a burst costs one
    wake-up). For processors whose work may be lost in a crash (telemetry, user metrics);
    what must not be lost goes through the audit log and the relay instead.

        mesh.recorder.add(Deferred(SinkProcessor([ship_to_warehouse])))
    """

    def __init__(self, processor: RecordProcessor, *, linger_s: float = 0.05,
                 max_queue: int = 100_000) -> None:
        self.processor = processor
        self.name = f"deferred:{processor.name}"
        self.linger_s = linger_s
        self.max_queue = max_queue
        self.dropped = 0
        self._items: deque[Recorded] = deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def process(self, item: Recorded) -> None:
        if len(self._items) >= self.max_queue:
            self.dropped += 1  # fail soft: a stalled processor must not grow memory forever
            return
        self._items.append(item)
        self._idle.clear()
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._main, daemon=True,
                                                    name=f"aios-mesh-{self.name}")
                    self._thread.start()
        self._wake.set()

    def _main(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self.linger_s and not self._stop:
                time.sleep(self.linger_s)
            self._drain()
            if not self._items:
                self._idle.set()
            if self._stop and not self._items:
                return

    def _drain(self) -> None:
        while True:
            try:
                item = self._items.popleft()
            except IndexError:
                return
            try:
                self.processor.process(item)
            except Exception:
                _log.warning("record processor %s failed", self.processor.name, exc_info=True)

    def flush(self, timeout: float) -> bool:
        if self._thread is not None and self._items:
            self._wake.set()
            if not self._idle.wait(timeout):
                return False
        return self.processor.flush(timeout)

    def close(self) -> None:
        thread = self._thread
        if thread is not None:
            self._stop = True
            self._wake.set()
            thread.join(30)
            self._thread = None
        self._drain()
        self.processor.close()
