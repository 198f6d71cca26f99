"""Telemetry derived from the decision record: one structlog JSON line, one OpenTelemetry span,
and metrics (latency histogram, calls, errors, cost by tenant, capability and model).

It never breaks a call: every export is wrapped, failures are logged and counted in
:attr:`Telemetry.failures`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson
import structlog
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from aios_mesh.record import DecisionRecord

__all__ = ["Telemetry"]

_internal = logging.getLogger("aios_mesh.telemetry")
_ATTRS = ("tenant", "capability", "model", "outcome")


def _json(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj).decode()


#: Records waiting for the event loop before export() writes them out itself.
_MAX_PENDING = 256
_SDK_RECHECK_S = 1.0  # how often a mesh without an OpenTelemetry SDK looks for one


class Telemetry:
    """Exports one record to logs, traces and metrics.

    Args:
        log: where decision lines go: a stdlib logger name (default ``aios_mesh.decisions``,
            silent until the application configures logging), a path to append JSON lines to,
            or an open text stream.
        tracer_provider / meter_provider: OpenTelemetry providers; default the global ones
            (no-op unless the application installs an SDK).
        background: export off the caller's path (default): as a callback the event loop runs
            once the calling task yields and the requests queued so far have gone out — while
            the next call waits on its backend — or, with
            no running loop, on a worker thread. A worker thread on a busy process contends for
            the GIL exactly when a call's response arrives; the loop callback does not.
    """

    def __init__(self, *, log: str | Path | TextIO | None = "aios_mesh.decisions",
                 tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None,
                 enabled_log: bool = True, enabled_otel: bool = True,
                 background: bool = True) -> None:
        self.failures = 0
        self.background = background
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._pending: deque[tuple[DecisionRecord, Mapping[str, Any], Span | None, int]] = \
            deque()
        self._file: BinaryIO | None = None
        self._logger: Any = None
        if enabled_log and log is not None:
            if isinstance(log, Path):
                # our own JSON-lines file: one orjson line per record, written directly (the
                # structlog chain below costs ~3x as much per line for the same bytes)
                log.parent.mkdir(parents=True, exist_ok=True)
                self._file = log.open("ab", buffering=0)
                sink: Any = None
            elif isinstance(log, str):
                sink = logging.getLogger(log)
            else:
                sink = structlog.WriteLogger(log)
            if sink is not None:
                self._logger = structlog.wrap_logger(
                    sink, processors=[structlog.processors.add_log_level,
                                      structlog.processors.JSONRenderer(serializer=_json)])
        self.otel = enabled_otel
        self._has_sdk = tracer_provider is not None
        self._sdk_recheck_at = -math.inf  # see _no_sdk
        tp = tracer_provider or trace.get_tracer_provider()
        mp = meter_provider or metrics.get_meter_provider()
        self._tracer = tp.get_tracer("aios_mesh")
        meter = mp.get_meter("aios_mesh")
        self._latency = meter.create_histogram("aios_mesh.call.duration", unit="ms",
                                               description="capability call latency")
        # Counters are kept here and observed at collection time: one dict update per call
        # instead of three SDK measurements (each re-hashes its attributes).
        self._totals: dict[tuple[str, str, str, str], list[float]] = {}
        self._totals_lock = threading.Lock()
        meter.create_observable_counter("aios_mesh.calls", [self._observe(0)],
                                        description="capability calls")
        meter.create_observable_counter("aios_mesh.errors", [self._observe(1)],
                                        description="failed calls")
        meter.create_observable_counter("aios_mesh.cost", [self._observe(2)],
                                        description="cost of calls")

    def _observe(self, index: int) -> Any:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            with self._totals_lock:
                items = [(k, v[index]) for k, v in self._totals.items()]
            return [Observation(value, dict(zip(_ATTRS, key, strict=True)))
                    for key, value in items]

        return callback

    def start_span(self, capability: str, tenant: str,
                   traceparent: Mapping[str, str] | None = None) -> Span | None:
        """Open the call's span (child of ``traceparent`` headers or the current context)."""
        if not self.otel:
            return None
        if not traceparent and self._no_sdk() \
                and not trace.get_current_span().get_span_context().is_valid:
            # Without an OpenTelemetry SDK and without a parent, the span would be the API's
            # empty no-op span; making, activating and ending one costs ~30 µs on a cold CPU.
            return None
        try:
            ctx = propagate.extract(dict(traceparent)) if traceparent else None
            return self._tracer.start_span(f"capability {capability}", context=ctx,
                                           kind=SpanKind.INTERNAL,
                                           attributes={"aios_mesh.capability": capability,
                                                       "aios_mesh.tenant": tenant})
        except Exception:
            self.failed("span start")
            return None

    def _no_sdk(self) -> bool:
        """True while spans can only be no-ops: the global provider is still the API's.

        An application may install its SDK after the mesh starts, so "no SDK" is re-read at
        most once a second (reading it costs ~10 µs on a cold CPU); an SDK, once seen, stays.
        """
        if self._has_sdk:
            return False
        now = time.monotonic()
        if now < self._sdk_recheck_at:
            return True
        if isinstance(trace.get_tracer_provider(),
                      trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            self._sdk_recheck_at = now + _SDK_RECHECK_S
            return True
        self._has_sdk = True
        return False

    @staticmethod
    def inject(span: Span | None) -> dict[str, str]:
        """W3C trace headers for the call's span, for adapters to send to their backend."""
        carrier: dict[str, str] = {}
        if span is not None and span.get_span_context().is_valid:
            propagate.inject(carrier, context=trace.set_span_in_context(span))
        return carrier

    @staticmethod
    def activate(span: Span | None) -> object | None:
        return None if span is None else otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def deactivate(token: object | None) -> None:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def export(self, record: DecisionRecord, doc: Mapping[str, Any], span: Span | None) -> None:
        """Hand the record to the export worker (or export inline); never raises.

        Like OpenTelemetry's batch processors, the work is done off the caller's path: the
        span keeps its true end time, and :meth:`flush` waits until everything is out.
        """
        end_ns = time.time_ns()
        if not self.background:
            self._export(record, doc, span, end_ns)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self._pending.append((record, doc, span, end_ns))
            if len(self._pending) >= _MAX_PENDING:
                # A caller that never yields (an in-process model in a tight async loop)
                # would otherwise pile up records here until it does: export them now.
                self._export_pending()
                return
            loop.call_soon(self._export_later, loop)
            return
        if self._worker is None:
            with self._worker_lock:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._drain, daemon=True,
                                                    name="aios-mesh-telemetry")
                    self._worker.start()
        self._queue.put((record, doc, span, end_ns))

    def _export_later(self, loop: asyncio.AbstractEventLoop) -> None:
        # One more hop through the ready queue: work the caller scheduled after this record
        # (the next call's request, which grpc.aio sends from a task) goes out first, so the
        # export runs while the backend works instead of delaying the request.
        loop.call_soon(self._export_pending)

    def _export_pending(self) -> None:
        # Everything queued so far, not just this callback's item: a callback whose loop
        # stopped before running it leaves nothing behind (flush() runs this too).
        items = []
        while True:
            try:
                items.append(self._pending.popleft())
            except IndexError:
                break
        if items:
            self._export_many(items)

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            self._export(*item)

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until every queued record is exported; False on timeout."""
        self._export_pending()
        if self._worker is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _export(self, record: DecisionRecord, doc: Mapping[str, Any], span: Span | None,
                end_ns: int) -> None:
        self._export_many([(record, doc, span, end_ns)])

    def _export_many(self, items: list[tuple[DecisionRecord, Mapping[str, Any], Span | None,
                                             int]]) -> None:
        if self._file is not None:
            try:  # the lines structlog's JSONRenderer would write; one write() for them all
                self._file.write(b"".join(
                    orjson.dumps({"event": "decision", "level": "info", **doc}) + b"\n"
                    for _, doc, _, _ in items))
            except Exception:
                self.failed("log line")
        elif self._logger is not None:
            for _, doc, _, _ in items:
                try:
                    self._logger.info("decision", **doc)
                except Exception:
                    self.failed("log line")
        if self.otel:
            for record, _, span, end_ns in items:
                self._export_otel(record, span, end_ns)

    def _export_otel(self, record: DecisionRecord, span: Span | None, end_ns: int) -> None:
        try:
            key = (record.tenant, record.capability, (record.model or {}).get("name", ""),
                   record.outcome)
            with self._totals_lock:
                totals = self._totals.get(key)
                if totals is None:
                    totals = self._totals[key] = [0.0, 0.0, 0.0]
                totals[0] += 1
                totals[1] += 0 if record.ok else 1
                totals[2] += record.cost
            self._latency.record(record.latency_ms, dict(zip(_ATTRS, key, strict=True)))
        except Exception:
            self.failed("metrics")
        if span is not None:
            try:
                # The span opened with what the caller named; it ends with the record's
                # scrubbed names (an unknown capability may be an e-mail address).
                span.update_name(f"capability {record.capability}")
                span.set_attributes({
                    "aios_mesh.capability": record.capability,
                    "aios_mesh.tenant": record.tenant,
                    "aios_mesh.record_id": record.record_id,
                    "aios_mesh.capability.version": record.capability_version,
                    "aios_mesh.outcome": record.outcome,
                    "aios_mesh.model": (record.model or {}).get("name", ""),
                    "aios_mesh.model.version": (record.model or {}).get("version", ""),
                    "aios_mesh.cost": record.cost,
                    "aios_mesh.attempts": record.attempts,
                })
                if record.error is not None and not record.ok:  # degraded: answered
                    span.set_status(Status(StatusCode.ERROR, record.error["message"]))
                span.end(end_time=end_ns)
            except Exception:
                self.failed("span end")

    def failed(self, what: str) -> None:
        """Count and log a failed export (or any fail-soft signal of the mesh)."""
        self.failures += 1
        _internal.warning("telemetry export failed: %s", what, exc_info=True)

    def close(self) -> None:
        """Flush what is queued, stop the worker, close the log file."""
        self.flush()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(5)
            self._worker = None
        if self._file is not None:
            self._file.close()
