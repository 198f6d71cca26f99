"""The Recorder: one decision record per call, written to the audit log on the caller's path,
then handed to a chain of record processors.

    call ─▶ build_record (scrubbed) ─▶ audit.append (awaited: no answer is ever unrecorded)
                                         └─▶ processors: telemetry · shadow · relay · sinks · yours

The record is scrubbed once, as it is built and before the audit write
(:class:`~aios_mesh.redaction.scrub.Scrubber`): every processor, the audit log included, and
the caller's error see only scrubbed text.

The audit write stays on the caller's path. Processors only derive signals from the immutable
record and keep their work off it: telemetry is exported from the event loop once the call
has returned (fail soft, flushed at close); lineage and decision events are shipped by the
relay from the audit log itself (the outbox: nothing is lost across a crash); a slow processor
of your own goes behind :class:`Deferred`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from aios_mesh.errors import MeshError
from aios_mesh.lineage_naming import DatasetNames
from aios_mesh.lockfile import LockFile
from aios_mesh.ports.audit import AuditLog
from aios_mesh.record import DecisionRecord
from aios_mesh.recorder.build import CallStart, build_record, outcome_of
from aios_mesh.recorder.processor import Recorded, RecordProcessor
from aios_mesh.redaction.scrub import Scrubber

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from aios_mesh.capabilities import CapabilitySpec
    from aios_mesh.pipeline.call import Call

__all__ = ["CallStart", "RecordProcessor", "Recorded", "Recorder", "build_record",
           "outcome_of"]

_log = logging.getLogger("aios_mesh.recorder")


class Recorder:
    """Builds each call's record, appends it to the audit log, runs the processors.

    Args:
        audit: the audit log (called once per record, so a port loads on first use).
        processors: the chain, in order; change it later with :meth:`add`/:meth:`remove`.
        lock: the lock file in force, if any (the record notes index and model drift
            against it).
        datasets: names what each call read and wrote (the record's ``datasets``, by the
            OpenLineage naming spec); None leaves ``datasets`` out.
        scrubber: masks PII and secrets in the record and the call's error before anything
            sees them (default: pattern, checksum and secret detection).
    """

    def __init__(self, audit: Callable[[], AuditLog],
                 processors: Iterable[RecordProcessor] = (), *,
                 lock: Callable[[], LockFile | None] = lambda: None,
                 datasets: DatasetNames | None = None,
                 scrubber: Scrubber | None = None) -> None:
        self._audit = audit
        self._lock = lock
        self.datasets = datasets
        self.scrubber = scrubber or Scrubber()
        self.processors: list[RecordProcessor] = list(processors)
        self.failures = 0

    def add(self, processor: RecordProcessor, *, before: str | None = None) -> None:
        """Append ``processor`` to the chain (or put it before the one named ``before``)."""
        if before is None:
            self.processors.append(processor)
            return
        names = [p.name for p in self.processors]
        if before not in names:
            raise MeshError(f"no record processor named {before!r}",
                            hint=f"processors are: {', '.join(names)}")
        self.processors.insert(names.index(before), processor)

    def remove(self, name: str) -> RecordProcessor:
        """Take the processor of that name out of the chain and return it."""
        for i, processor in enumerate(self.processors):
            if processor.name == name:
                return self.processors.pop(i)
        raise MeshError(f"no record processor named {name!r}",
                        hint=f"processors are: {', '.join(p.name for p in self.processors)}")

    def build(self, start: CallStart, spec: CapabilitySpec | None, call: Call | None,
              error: MeshError | None, span: Span | None) -> DecisionRecord:
        """The call's immutable decision record, scrubbed (and ``error`` with it)."""
        return build_record(start, spec, call, error, span, self._lock(), self.datasets,
                            self.scrubber)

    async def commit(self, record: DecisionRecord, *, span: Span | None = None,
                     call: Call | None = None) -> None:
        """Append the record to the audit log (an :class:`~aios_mesh.errors.IntegrityError`
        there fails the call), then hand it to every processor (which never fail it)."""
        doc = record.to_dict()
        await self._audit().append(doc)
        item = Recorded(record, doc, span, call)
        for processor in self.processors:
            try:
                processor.process(item)
            except Exception:
                self.failures += 1
                _log.warning("record processor %s failed", processor.name, exc_info=True)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every processor has finished what it took; False on timeout."""
        deadline = time.monotonic() + timeout
        ok = True
        for processor in self.processors:
            ok = processor.flush(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def close(self) -> None:
        """Flush and stop every processor (each once; failures are logged)."""
        for processor in self.processors:
            try:
                processor.close()
            except Exception:
                self.failures += 1
                _log.warning("closing record processor %s failed", processor.name,
                             exc_info=True)
