"""Watching live traffic for drift: the :class:`DriftMonitor` record processor (per capability
× model version, against the reference logged with the version), the :class:`DriftAlarm` it
raises — an event on :data:`~aios_mesh.lifecycle.drift.DRIFT_TOPIC`, an OpenTelemetry counter
and gauges, an audit entry (numbers and feature names only) — and :class:`RetrainWorkflow`, an
``on_alarm`` hook that starts a retraining workflow. The statistics live in
:mod:`aios_mesh.lifecycle.drift`.

Example::

    install_drift_monitor(mesh, DriftSettings(window=300, check_every=50))
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aios_mesh.errors import MeshError, NotFound
from aios_mesh.lifecycle.features import call_features
from aios_mesh.ports.base import Feature
from aios_mesh.ports.events import Event
from aios_mesh.ports.registry import ModelRef, ModelRegistry

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from aios_mesh.capabilities import CapabilitySpec
    from aios_mesh.ports.audit import AuditLog
    from aios_mesh.ports.orchestrator import Execution, Orchestrator
    from aios_mesh.recorder.processor import Recorded
    from aios_mesh.redaction.scrub import Scrubber

from aios_mesh.lifecycle.drift import (
    DRIFT_EVENT_TYPE,
    DRIFT_TOPIC,
    DriftDetector,
    DriftReference,
    DriftReport,
    DriftSettings,
    load_reference,
)

__all__ = ["AlarmHook", "DriftAlarm", "DriftMonitor", "RetrainWorkflow", "install_drift_monitor"]

_log = logging.getLogger("aios_mesh.lifecycle.drift")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- monitor


@dataclass(frozen=True, slots=True)
class DriftAlarm:
    """What the monitor raises: which capability and version drifted, and the tests that
    say so. :meth:`to_dict` holds numbers and names only — never a payload value."""

    capability: str
    model: str | None
    model_version: str
    report: DriftReport
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    at: str = field(default_factory=_now)

    def to_dict(self) -> dict[str, Any]:
        worst = max(self.report.significant, key=lambda t: t.effect)
        return {"kind": "drift_alarm", "alarm_id": self.id, "at": self.at,
                "capability": self.capability, "model": self.model,
                "model_version": self.model_version, "calls": self.report.calls,
                "window": self.report.window, "per_test_alpha": self.report.per_test_alpha,
                "features_tested": len(self.report.tests),
                "worst_feature": worst.feature, "worst_effect": round(worst.effect, 6),
                "drifted": [t.to_dict() for t in self.report.significant]}


#: Called with each alarm (on the monitor's thread; exceptions are logged and ignored).
AlarmHook = Callable[[DriftAlarm], None]


class RetrainWorkflow:
    """An ``on_alarm`` hook that starts a workflow (e.g. a Flyte retraining workflow) through
    the mesh's orchestrator port with the alarm's numbers as inputs.

    ``inputs`` maps the alarm (its :meth:`DriftAlarm.to_dict` document) to the workflow's
    inputs; the default passes ``capability``, ``model_version`` and ``worst_feature``. With
    ``wait`` (the default) the workflow runs to completion with ``orchestrator.run`` on a
    thread of its own, so a long retraining never holds up the monitor, and local
    orchestrators (``flyte-local://``, whose ``submit`` needs a running event loop) work;
    ``wait=False`` only submits it (a remote Flyte cluster runs it).

        install_drift_monitor(mesh, settings, on_alarm=RetrainWorkflow(
            lambda: mesh.ports.orchestrator, "retrain.flows:retrain_extractor",
            run=mesh.run_sync))
    """

    def __init__(self, orchestrator: Callable[[], Orchestrator], workflow: str, *,
                 run: Callable[[Coroutine[Any, Any, Any]], Any],
                 inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 wait: bool = True) -> None:
        self.orchestrator = orchestrator
        self.workflow = workflow
        self.run = run
        self.wait = wait
        self.inputs = inputs or (lambda doc: {k: doc[k] for k in
                                              ("capability", "model_version", "worst_feature")})
        #: execution ids started, oldest first
        self.executions: list[str] = []
        #: finished executions (``wait=True``), oldest first
        self.finished: list[Execution] = []
        self._threads: list[threading.Thread] = []

    def __call__(self, alarm: DriftAlarm) -> None:
        inputs = self.inputs(alarm.to_dict())
        if not self.wait:
            self.executions.append(str(self.run(self.orchestrator().submit(self.workflow,
                                                                           inputs))))
            return

        def work() -> None:
            try:
                execution = self.run(self.orchestrator().run(self.workflow, inputs))
            except Exception:
                _log.warning("retraining workflow %s did not start", self.workflow,
                             exc_info=True)
                return
            self.executions.append(execution.id)
            self.finished.append(execution)

        thread = threading.Thread(target=work, daemon=True, name="aios-mesh-retrain")
        self._threads.append(thread)
        thread.start()

    def join(self, timeout: float = 60.0) -> bool:
        """Wait for the workflows started so far; False if one is still running."""
        for thread in self._threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)


@dataclass(slots=True)
class _Track:
    detector: DriftDetector | None = None
    retry_at: int = 0  # calls seen when a missing reference is looked up again
    seen: int = 0
    alarmed_at: int | None = None


class DriftMonitor:
    """A record processor that watches each capability × model version for drift.

    Every answered call (an output, no fallback, a model version) is turned into features
    and fed to that version's :class:`DriftDetector`, whose reference is loaded once per
    version from the registry (or ``settings.reference``'s folder) and cached; a version
    without a reference is looked up again every ``window`` calls. An alarm is raised at most
    once per ``window`` calls per version. ``process`` does all of this on the caller's
    thread, so run it behind :class:`~aios_mesh.recorder.processors.Deferred`
    (:func:`install_drift_monitor` does).

    Args:
        settings: thresholds (the ``[drift]`` section).
        registry: the registry holding references (called on first use).
        audit: the audit log alarms are appended to.
        publish: puts ``(topic, event)`` pairs in the outbox (``mesh.publish_many``).
        run: runs a coroutine to completion on this thread (``mesh.run_sync``).
        on_alarm: called with each alarm after it is recorded (e.g. :class:`RetrainWorkflow`).
        listeners: called with ``(capability, model_version)`` of each alarm, before
            ``on_alarm`` (the automatic rollback's ``drift_alarm``: a drifting canary is
            rolled back).
        scrubber: masks declared names in what is recorded (``mesh.recorder.scrubber``).
        meter_provider: OpenTelemetry meters (default: the global provider).
    """

    name = "drift"

    def __init__(self, settings: DriftSettings | None = None, *,
                 registry: Callable[[], ModelRegistry],
                 audit: Callable[[], AuditLog],
                 publish: Callable[[Iterable[tuple[str, Event]]], int],
                 run: Callable[[Coroutine[Any, Any, Any]], Any],
                 on_alarm: AlarmHook | None = None,
                 listeners: Sequence[Callable[[str, str], None]] = (),
                 scrubber: Scrubber | None = None,
                 meter_provider: MeterProvider | None = None) -> None:
        from opentelemetry import metrics

        self.settings = settings or DriftSettings()
        self.registry = registry
        self.audit = audit
        self.publish = publish
        self.run = run
        self.on_alarm = on_alarm
        self.listeners = list(listeners)
        self.scrubber = scrubber
        self.alarms: list[DriftAlarm] = []
        self.failures = 0
        self._tracks: dict[tuple[str, str, str], _Track] = {}
        self._given: dict[tuple[str, str | None], DriftReference] = {}
        self._latest: dict[tuple[str, str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("aios_mesh")
        self._alarm_counter = meter.create_counter(
            "aios_mesh.drift.alarms", description="drift alarms raised")
        meter.create_observable_gauge(
            "aios_mesh.drift.effect", [self._observe(0)],
            description="largest Jensen-Shannon distance of any feature at the latest check")
        meter.create_observable_gauge(
            "aios_mesh.drift.p_value", [self._observe(1)],
            description="smallest p-value of any feature at the latest check")

    def _observe(self, index: int) -> Any:
        from opentelemetry.metrics import Observation

        def callback(options: Any) -> Iterable[Observation]:
            with self._lock:
                items = list(self._latest.items())
            return [Observation(values[index], {"capability": key[0], "model": key[1],
                                                "model_version": key[2]})
                    for key, values in items]

        return callback

    # -- references ------------------------------------------------------------------------

    def use_reference(self, reference: DriftReference, *, version: str | None = None) -> None:
        """Use ``reference`` for its capability (and ``version``, or every version without a
        reference of its own) instead of looking one up."""
        self._given[(reference.capability, version)] = reference
        with self._lock:
            for key in [k for k in self._tracks if k[0] == reference.capability]:
                del self._tracks[key]

    def _find(self, spec: CapabilitySpec, model_ref: ModelRef) -> DriftReference | None:
        given = (self._given.get((spec.name, model_ref.version))
                 or self._given.get((spec.name, None)))
        if given is not None:
            return given
        source = self.settings.reference
        if source != "registry":
            folder = Path(source)
            for candidate in (folder / f"{spec.name}@{model_ref.version}.json",
                              folder / f"{spec.name}.json"):
                if candidate.is_file():
                    return DriftReference.from_json(candidate.read_bytes())
            return None
        if model_ref.name.startswith("function:"):
            return None  # a handler: no registered model to keep a reference with
        registry = self.registry()
        if Feature.DOCUMENTS not in getattr(registry, "features", frozenset()):
            return None
        try:
            return self.run(load_reference(registry, model_ref))  # type: ignore[no-any-return]
        except NotFound:
            return None

    def _track(self, key: tuple[str, str, str], spec: CapabilitySpec,
               model_ref: ModelRef) -> _Track:
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track()
        if track.detector is None and track.seen >= track.retry_at:
            track.retry_at = track.seen + self.settings.window
            try:
                reference = self._find(spec, model_ref)
                if reference is not None:
                    track.detector = DriftDetector.for_capability(spec, reference, self.settings)
            except MeshError as exc:  # a reference of another schema, a registry outage
                self.failures += 1
                _log.warning("drift reference for %s version %s unusable: %s (%s)", spec.name,
                             model_ref.version, exc.message, exc.hint)
        return track

    # -- the processor ---------------------------------------------------------------------

    def process(self, item: Recorded) -> None:
        try:
            self._process(item)
        except Exception:
            self.failures += 1
            _log.warning("drift monitor failed on a record", exc_info=True)

    def _process(self, item: Recorded) -> None:
        call = item.call
        if (call is None or call.output is None or call.error is not None
                or call.fallback is not None or call.model_ref is None):
            return  # no answer from a model version: nothing to compare
        spec, model_ref = call.spec, call.model_ref
        key = (spec.name, model_ref.name, model_ref.version)
        track = self._track(key, spec, model_ref)
        track.seen += 1
        if track.detector is None:
            return
        report = track.detector.add(call_features(spec.input, call.payload, spec.output,
                                                  call.output))
        if report is None:
            return
        with self._lock:
            self._latest[key] = (report.max_effect, report.min_p_value)
        if not report.drifted:
            return
        if track.alarmed_at is not None and \
                track.detector.calls - track.alarmed_at < self.settings.window:
            return
        track.alarmed_at = track.detector.calls
        self._alarm(DriftAlarm(spec.name, model_ref.name, model_ref.version, report))

    def _alarm(self, alarm: DriftAlarm) -> None:
        self.alarms.append(alarm)
        doc = alarm.to_dict()
        if self.scrubber is not None:
            doc = self.scrubber.names(doc)
        attributes = {"capability": str(doc["capability"]), "model": str(doc["model"]),
                      "model_version": str(doc["model_version"])}
        self._alarm_counter.add(1, attributes)
        _log.warning("drift alarm: %s version %s, worst feature %s (effect %.3f)",
                     doc["capability"], doc["model_version"], doc["worst_feature"],
                     doc["worst_effect"])
        try:
            self.run(self.audit().append(doc))
        except Exception:
            self.failures += 1
            _log.warning("drift alarm not in the audit log", exc_info=True)
        try:
            self.publish([(DRIFT_TOPIC, Event(
                type=DRIFT_EVENT_TYPE, source="aios-mesh", tenant="aios-mesh",
                subject=str(doc["capability"]),
                key=f"{doc['capability']}/{doc['model_version']}", data=doc,
                idempotency_key=alarm.id))])
        except Exception:
            self.failures += 1
            _log.warning("drift alarm event not published", exc_info=True)
        for listener in self.listeners:
            try:
                listener(alarm.capability, alarm.model_version)
            except Exception:
                self.failures += 1
                _log.warning("drift alarm listener %r failed", listener, exc_info=True)
        if self.on_alarm is not None:
            try:
                self.on_alarm(alarm)
            except Exception:
                self.failures += 1
                _log.warning("drift on_alarm hook failed", exc_info=True)

    def flush(self, timeout: float) -> bool:
        return True  # process() finishes its work; Deferred waits for the queue

    def close(self) -> None:
        return None


class _MeshParts(Protocol):
    """What :func:`install_drift_monitor` uses of a mesh (its public parts only)."""

    @property
    def ports(self) -> Any: ...

    @property
    def recorder(self) -> Any: ...

    def publish_many(self, items: Iterable[tuple[str, Event]]) -> int: ...

    def run_sync(self, coro: Coroutine[Any, Any, Any]) -> Any: ...


def install_drift_monitor(mesh: _MeshParts, settings: DriftSettings | None = None, *,
                          on_alarm: AlarmHook | None = None,
                          meter_provider: MeterProvider | None = None) -> DriftMonitor:
    """Add a :class:`DriftMonitor` to ``mesh``'s recorder, off the caller's path (behind
    :class:`~aios_mesh.recorder.processors.Deferred`), and return it. Every record processor
    already in the chain that has a ``drift_alarm(capability, model_version)`` method (the
    automatic rollback) hears of each alarm.

        monitor = install_drift_monitor(mesh, DriftSettings(window=300))
    """
    from aios_mesh.recorder.processors import Deferred

    monitor = DriftMonitor(settings, registry=lambda: mesh.ports.registry,
                           audit=lambda: mesh.ports.audit, publish=mesh.publish_many,
                           run=mesh.run_sync, on_alarm=on_alarm,
                           listeners=[p.drift_alarm for p in mesh.recorder.processors
                                      if callable(getattr(p, "drift_alarm", None))],
                           scrubber=mesh.recorder.scrubber, meter_provider=meter_provider)
    mesh.recorder.add(Deferred(monitor))
    return monitor
