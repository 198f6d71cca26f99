"""What a record processor is: the seam every signal derived from a decision record plugs into.

A processor gets each :class:`Recorded` call once its decision record is in the audit log.
It must not raise (the Recorder logs and counts a processor that does, and goes on), and it
should not make the caller wait: a processor that does real work queues it (see
:class:`~aios_mesh.recorder.processors.Deferred`) and finishes it in :meth:`flush`.

    class CountDenials:
        name = "count-denials"

        def __init__(self) -> None:
            self.denied = 0

        def process(self, item: Recorded) -> None:
            self.denied += item.record.outcome == "denied"

        def flush(self, timeout: float) -> bool:
            return True

        def close(self) -> None:
            pass

    mesh.recorder.add(CountDenials())
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aios_mesh.record import DecisionRecord

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from aios_mesh.pipeline.call import Call

__all__ = ["RecordProcessor", "Recorded"]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One finished call as processors see it.

    ``doc`` is ``record.to_dict()`` exactly as the audit log holds it; ``span`` is the call's
    OpenTelemetry span (still open: the telemetry processor ends it) and ``call`` the
    pipeline's state of the call (``None`` when it never started, e.g. an unknown capability).
    Processors read them and never change them.
    """

    record: DecisionRecord
    doc: Mapping[str, Any]
    span: Span | None = None
    call: Call | None = None


@runtime_checkable
class RecordProcessor(Protocol):
    """Derives something from each recorded call (telemetry, lineage, events, shadow, sinks)."""

    name: str

    def process(self, item: Recorded) -> None:
        """Take one recorded call. Never raises; never blocks the caller for long."""
        ...

    def flush(self, timeout: float) -> bool:
        """Finish what was taken so far; False if ``timeout`` ran out first."""
        ...

    def close(self) -> None:
        """Flush, then release threads and files. Called once, at the mesh's close."""
        ...
