"""The Mesh: business code asks for an intent; the mesh decides and records the rest.

    from aios_mesh import Mesh

    mesh = Mesh.from_config("aios-mesh.toml")          # or Mesh.local() for embedded defaults
    result = mesh.invoke("extract-invoice-fields", {"text": "..."}, tenant="acme",
                         caller="svc-intake")
    result.output          # the typed output model
    result.record          # the decision record (also in the audit log)

The mesh is a thin front over three public parts, and every other front door (the CLI, the
event worker, Flyte tasks, the rollout commands) uses the same three:

* :attr:`ports` (:class:`~aios_mesh.ports.container.Ports`) — the adapters, loaded lazily;
* :attr:`pipeline` (:class:`~aios_mesh.pipeline.Pipeline`) — the declared list of steps;
  invoke, stream and bulk are modes of it;
* :attr:`recorder` (:class:`~aios_mesh.recorder.Recorder`) — the decision record, the audit
  log and the chain of record processors.

``ainvoke`` is the async core; ``invoke`` is a thin facade over it (:meth:`run_sync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from aios_mesh._sync import SyncFacade, SyncRunner
from aios_mesh.backends import PortName
from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.catalog import Catalog, declared
from aios_mesh.config import MeshConfig, UrlSource, config_from_mapping, load_config
from aios_mesh.context import CallContext
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.errors import CallCancelled, MeshError, UnknownTenant
from aios_mesh.lifecycle.live_quality import LiveQuality
from aios_mesh.lifecycle.pause import pause_control
from aios_mesh.lifecycle.rollback import AutoRollback
from aios_mesh.lineage_naming import DatasetNames
from aios_mesh.lockfile import DefinitionPin
from aios_mesh.outbox import Outbox
from aios_mesh.pipeline import Call, Pipeline
from aios_mesh.pipeline.admission import Admission
from aios_mesh.pipeline.batching import BatcherPool
from aios_mesh.pipeline.cache import ResponseCache
from aios_mesh.pipeline.default import StepParts, default_steps
from aios_mesh.pipeline.invoke import BreakerBoard, Targets
from aios_mesh.pipeline.policy import DecisionCache
from aios_mesh.pipeline.runner import Step
from aios_mesh.ports.container import Ports
from aios_mesh.ports.events import Event
from aios_mesh.ports.registry import ModelRef, ModelRegistry
from aios_mesh.record import CallMode, DecisionRecord, new_record_id
from aios_mesh.recorder import CallStart, Recorder, RecordProcessor
from aios_mesh.recorder.processors import (
    RecordSink,
    RelayProcessor,
    SinkProcessor,
    TelemetryProcessor,
)
from aios_mesh.recorder.relay import DECISION_TOPIC, Factory
from aios_mesh.recorder.shadow import ShadowProcessor, ShadowRunner
from aios_mesh.redaction import Redactor, RuleRedactor, TokenizingRedactor
from aios_mesh.redaction.scrub import Scrubber
from aios_mesh.relay import ProcessRunner, RelayRunner, RelaySpec, ThreadRunner, relay_loop
from aios_mesh.resilience import RetryBudget
from aios_mesh.resolver import AliasResolver, prompt_specs
from aios_mesh.result import Result
from aios_mesh.review import ReviewItem, ReviewQueue, resolve_review
from aios_mesh.routes import Route
from aios_mesh.state import open_state
from aios_mesh.telemetry import Telemetry
from aios_mesh.vault_setup import tokenizer_from_config

if TYPE_CHECKING:
    from aios_mesh.lifecycle.drift_monitor import DriftMonitor

__all__ = ["BeforeRecord", "Mesh", "RecordSink", "Result"]

T = TypeVar("T")
_END = object()  # the end of a stream's chunks

#: ``Mesh.ainvoke_row``'s hook: ``(record, output or None, error or None)``, awaited before
#: the record is appended.
BeforeRecord = Callable[[DecisionRecord, Any, MeshError | None], Awaitable[None]]


class Mesh(SyncFacade):
    """The capability mesh. Build it with :meth:`local`, :meth:`from_config` or directly.

    Args:
        config: the configuration (default: embedded defaults, tenant ``default`` only).
        capabilities: specs to serve, besides those the config declares.
        adapters: per-port adapter instances or URLs that win over env and config.
        redactor: replaces the configured redactor.
        telemetry: replaces the configured log line / span / metrics exporter.
        steps: replaces the whole default step list (:mod:`aios_mesh.pipeline.default`).
        admission: controllers for the admission stage (concurrency limits, fair queues).
        processors: replaces the default record processor chain.
    """

    def __init__(self, config: MeshConfig | None = None, *,
                 capabilities: Iterable[CapabilitySpec] = (),
                 adapters: Mapping[str, object] | None = None,
                 redactor: Redactor | None = None,
                 telemetry: Telemetry | None = None,
                 steps: Sequence[Step] | None = None,
                 admission: Sequence[Admission] = (),
                 processors: Sequence[RecordProcessor] | None = None) -> None:
        self.config = config or MeshConfig()
        state = self.config.state_path
        self.ports = Ports(self.config, adapters)
        #: The adapter for a port, loaded on first use: ``mesh.port("audit")`` is
        #: ``mesh.ports.get("audit")`` (typed per port name).
        self.port = self.ports.get
        #: Where the mesh's own stores (review queue, ...) keep state and their schema.
        self.state = open_state(self.config.backends.state, folder=state)
        self.catalog = Catalog()
        self.routes: list[Route] = [Route(**r.model_dump()) for r in self.config.routes]
        self._sync = SyncRunner()
        self._lock = threading.Lock()
        self._review: ReviewQueue | None = None
        self._outbox: Outbox | None = None
        self.telemetry = telemetry or Telemetry(
            log=state / "decisions.log" if self.config.telemetry.log else None,
            enabled_otel=self.config.telemetry.otel)
        self.resolver = AliasResolver(self._registry, ttl_s=self.config.cache.alias_ttl_s,
                                      lock_path=self.config.lock_path)
        #: reviewed accuracy per capability and model version, for SLOs with min_quality
        self.live_quality = LiveQuality(self.review_queue)
        parts = StepParts(
            config=self.config, ports=self.ports,
            redactor=redactor or self._default_redactor(), resolver=self.resolver,
            targets=Targets(self.ports.serving_for, BatcherPool(), self._context),
            review=self.review_queue,
            decision_cache=DecisionCache(self.config.cache.policy_decisions,
                                         self.config.cache.policy_ttl_s),
            breakers=BreakerBoard(self.config.breaker),
            budget=RetryBudget(self.config.retry.budget_ratio,
                               self.config.retry.min_retries_per_s),
            admission=admission, state=self.state, publish=self.publish,
            quality=self.live_quality.accuracy)
        self.parts = parts
        self.pipeline = Pipeline(default_steps(parts) if steps is None else steps)
        self.sinks: list[RecordSink] = []
        self.shadow = ShadowRunner(self.resolver, self.ports.serving_for, state / "shadow.db")
        self.relay = self._make_relay()
        self.recorder = Recorder(lambda: self.ports.audit,
                                 self._default_processors() if processors is None
                                 else processors, lock=lambda: self.resolver.lock,
                                 datasets=DatasetNames(self.ports, decision_topic=DECISION_TOPIC
                                                       if self.config.telemetry.decision_events
                                                       else None),
                                 scrubber=Scrubber.with_names(self.config.redaction.names_model))
        for spec in declared([CapabilitySpec.from_config(d) for d in self.config.capabilities],
                             capabilities):  # a name declared twice is a ConfigError
            self.register(spec)
        #: the drift monitor, when ``[drift]`` is configured (docs/guides/lifecycle.md#drift)
        self.drift = self._install_drift() if self.config.drift is not None else None
        # The relay starts with the mesh: a backlog left by a crash ships without any call.
        self.relay.start()

    def _default_redactor(self) -> Redactor:
        if self.config.redaction.mode == "tokenize":
            return tokenizer_from_config(self.config.redaction, state=self.state,
                                         folder=self.config.state_path,
                                         base_dir=self.config.base_dir)
        return RuleRedactor()

    def _install_drift(self) -> DriftMonitor:
        """The ``[drift]`` monitor, behind Deferred on the recorder (scipy loads only here)."""
        from aios_mesh.lifecycle.drift import DriftSettings
        from aios_mesh.lifecycle.drift_monitor import RetrainWorkflow, install_drift_monitor

        conf = self.config.drift
        assert conf is not None
        settings = DriftSettings.from_config(conf)
        if settings.reference != "registry":  # a folder, relative to the config file
            folder = Path(settings.reference)
            settings = replace(settings, reference=str(
                folder if folder.is_absolute() else self.config.base_dir / folder))
        hook = RetrainWorkflow(lambda: self.ports.orchestrator, conf.retrain_workflow,
                               run=self.run_sync) if conf.retrain_workflow else None
        return install_drift_monitor(self, settings, on_alarm=hook)

    def _make_relay(self) -> RelayRunner:
        """The background relay of this mesh's state folder (see :mod:`aios_mesh.relay`)."""
        tel, conf, ports = self.config.telemetry, self.config.relay, self.ports
        spec = RelaySpec(
            state_dir=str(self.config.state_path), audit=ports.url("audit")[0],
            events=ports.url("events")[0],
            lineage=ports.url("lineage")[0] if tel.lineage else None,
            decision_events=tel.decision_events,
            interval_s=tel.relay_interval_s or conf.interval_s,
            linger_s=conf.linger_s if tel.relay_linger_s is None else tel.relay_linger_s,
            max_backoff_s=conf.max_backoff_s,
            anchors=self.config.anchors.resolved(self.config.base_dir).to_spec()
            if self.config.anchors else None)
        given = any(ports.given(p) is not None for p in ("audit", "lineage", "events"))
        if conf.mode == "process" or (conf.mode == "auto" and not given):
            return ProcessRunner(spec)

        def fresh(port: PortName) -> Factory[Any]:
            return lambda: ports.fresh(port)

        return ThreadRunner(spec, lambda: relay_loop(
            spec, audit=fresh("audit"), lineage=fresh("lineage") if tel.lineage else None,
            bus=fresh("events")))

    def _default_processors(self) -> list[RecordProcessor]:
        chain: list[RecordProcessor] = [TelemetryProcessor(self.telemetry),
                                        ShadowProcessor(self.shadow),
                                        AutoRollback(self),  # canaries with gates only
                                        self.live_quality]  # SLOs with min_quality only
        if self.config.telemetry.lineage or self.config.telemetry.decision_events:
            chain.append(RelayProcessor(self.relay))
        chain.append(SinkProcessor(self.sinks))
        return chain

    async def _registry(self) -> ModelRegistry:
        return self.ports.registry

    def _context(self, call: Call) -> CallContext:
        return CallContext(call.tenant, call.caller, call.record_id, self,
                           call.index_snapshots, call.attributes, parent=call.parent,
                           trace_headers=call.trace_headers, capability=call.spec.name,
                           index_writes=call.index_writes)

    # ------------------------------------------------------------------ construction
    @classmethod
    def local(cls, state_dir: str | Path = ".aios-mesh", *,
              capabilities: Iterable[CapabilitySpec] = (),
              tenants: Sequence[str] = ("default",), **options: Any) -> Self:
        """A mesh on the embedded defaults, keeping its files under ``state_dir``."""
        doc: dict[str, Any] = {"state_dir": str(Path(state_dir).resolve()),
                               "tenants": {t: {} for t in tenants}, **options}
        return cls(config_from_mapping(doc, source="Mesh.local()"), capabilities=capabilities)

    @classmethod
    def from_config(cls, path: str | Path, *, capabilities: Iterable[CapabilitySpec] = (),
                    **adapters: object) -> Self:
        """Build from a TOML file; keyword arguments override a port's adapter (URL or
        instance), e.g. ``Mesh.from_config("mesh.toml", serving="triton+grpc://...")``."""
        return cls(load_config(path), capabilities=capabilities, adapters=adapters)

    # ------------------------------------------------------------------ catalog and routes
    def register(self, spec: CapabilitySpec) -> CapabilitySpec:
        """Add (or replace) a capability. A spec with a handler (and no model) is served by
        calling the handler in-process."""
        return self.catalog.register(spec)

    @property
    def capabilities(self) -> dict[str, CapabilitySpec]:
        return self.catalog.as_dict()

    def capability(self, name: str) -> CapabilitySpec:
        return self.catalog.get(name)

    def on(self, topic: str, capability: str, *, result_topic: str | None = None,
           group: str | None = None, payload: Callable[[Event], Any] | None = None) -> Route:
        """Route events on ``topic`` to ``capability`` (run them with :class:`Worker` or
        ``aios-mesh worker``); answers go to ``result_topic``."""
        self.capability(capability)  # fail now on a typo, not in the worker
        route = Route(topic, capability, result_topic, group,
                      *(() if payload is None else (payload,)))
        self.routes.append(route)
        return route

    # ------------------------------------------------------------------ ports
    @property
    def local_serving(self) -> InProcessServing:
        """The in-process serving table (handlers and models registered in this process)."""
        return self.ports.local_serving

    def backend_url(self, port: PortName) -> tuple[str, UrlSource]:
        return self.ports.url(port)

    @property
    def response_cache(self) -> ResponseCache:
        return self.parts.response_cache

    @property
    def breakers(self) -> BreakerBoard:
        return self.parts.breakers

    # ------------------------------------------------------------------ calls
    async def _call(self, capability: str, payload: Any, *, tenant: str, caller: str,
                    attributes: Mapping[str, Any] | None, parent: Mapping[str, Any] | None,
                    traceparent: Mapping[str, str] | None, resume: Mapping[str, Any] | None,
                    mode: CallMode, emit: Callable[[dict[str, Any]], Any] | None = None,
                    record_id: str | None = None, before_record: BeforeRecord | None = None
                    ) -> Result[Any]:
        """Every mode's one path: the pipeline, then the record (always, whatever happens)."""
        start = CallStart(record_id or new_record_id(), capability, tenant, caller, parent, mode)
        span = self.telemetry.start_span(capability, tenant, traceparent)
        token = self.telemetry.activate(span)
        spec: CapabilitySpec | None = None
        call: Call | None = None
        error: MeshError | None = None
        cancelled: asyncio.CancelledError | None = None
        try:
            spec = self.catalog.get(capability)
            call = Call(spec=spec, tenant=tenant, caller=caller, raw=payload,
                        record_id=start.record_id, attributes=dict(attributes or {}),
                        span=span,
                        resume=dict(resume) if resume else None, parent=start.parent,
                        mode=mode, emit=emit)
            if tenant not in self.config.tenants:
                raise UnknownTenant(f"tenant {tenant!r} is not declared",
                                    hint="add it under [tenants] in the config")
            await self.pipeline.run(call)
        except MeshError as exc:
            error = exc
        except asyncio.CancelledError as exc:  # recorded, then the task stays cancelled
            cancelled = exc
            error = (call.error if call is not None and call.error is not None
                     else CallCancelled(f"{capability} was cancelled by its caller"))
        finally:
            self.telemetry.deactivate(token)
        record = self.recorder.build(start, spec, call, error, span)
        try:
            if before_record is not None and cancelled is None:
                await before_record(record, None if call is None or error else call.output,
                                    error)
        finally:
            await self.recorder.commit(record, span=span, call=call)  # no answer unrecorded
        if cancelled is not None:
            raise cancelled
        if error is not None:
            error.record_id = record.record_id  # the caller can find the call's record
            raise error
        assert call is not None
        return Result(call.output, record)

    async def ainvoke(self, capability: str, payload: Any, *, tenant: str,
                      caller: str = "anonymous", attributes: Mapping[str, Any] | None = None,
                      parent: Mapping[str, Any] | None = None,
                      traceparent: Mapping[str, str] | None = None,
                      resume: Mapping[str, Any] | None = None) -> Result[Any]:
        """Run one call through the pipeline and return its :class:`Result`.

        ``parent`` links the call to a workflow run (lineage); ``traceparent`` carries W3C
        trace headers; ``resume`` says where to publish the answer if the call goes to human
        review (``{"topic": ..., "key": ...}``, set by the event worker).

        Raises the call's :class:`MeshError` after its decision record is in the audit log.
        """
        return await self._call(capability, payload, tenant=tenant, caller=caller,
                                attributes=attributes, parent=parent, traceparent=traceparent,
                                resume=resume, mode="invoke")

    def invoke(self, capability: str, payload: Any, *, tenant: str, caller: str = "anonymous",
               attributes: Mapping[str, Any] | None = None,
               parent: Mapping[str, Any] | None = None,
               traceparent: Mapping[str, str] | None = None) -> Result[Any]:
        """Sync facade of :meth:`ainvoke`."""
        return self.run_sync(self.ainvoke(capability, payload, tenant=tenant, caller=caller,
                                          attributes=attributes, parent=parent,
                                          traceparent=traceparent))

    async def ainvoke_many(self, capability: str, payloads: Iterable[Any], *, tenant: str,
                           caller: str = "anonymous", concurrency: int | None = None,
                           return_exceptions: bool = False,
                           parent: Mapping[str, Any] | None = None
                           ) -> list[Result[Any] | MeshError]:
        """Many calls of one capability (bulk mode), at most ``concurrency`` in flight,
        results in order. With ``return_exceptions`` each failed item holds its
        :class:`MeshError`."""
        limit = asyncio.Semaphore(concurrency or self.config.invoke_many_concurrency)

        async def one(item: Any) -> Result[Any] | MeshError:
            async with limit:
                try:
                    return await self._call(capability, item, tenant=tenant, caller=caller,
                                            attributes=None, parent=parent, traceparent=None,
                                            resume=None, mode="bulk")
                except MeshError as exc:
                    if return_exceptions:
                        return exc
                    raise

        return list(await asyncio.gather(*(one(p) for p in payloads)))

    async def ainvoke_row(self, capability: str, payload: Any, *, tenant: str, record_id: str,
                          caller: str = "anonymous", parent: Mapping[str, Any] | None = None,
                          before_record: BeforeRecord | None = None) -> Result[Any]:
        """One bulk-mode call whose decision record gets ``record_id`` (a durable bulk job
        derives it from the job and the row, so after a crash it can look the row up in the
        audit log instead of running it twice).

        ``before_record(record, output, error)`` is awaited after the pipeline and before the
        record is appended to the audit log (it is appended even if the hook raises): a
        ledger writes the answer ahead there, since the record holds no payload. Raises the
        call's :class:`MeshError` after its record is in the audit log, as :meth:`ainvoke`.
        """
        return await self._call(capability, payload, tenant=tenant, caller=caller,
                                attributes=None, parent=parent, traceparent=None, resume=None,
                                mode="bulk", record_id=record_id, before_record=before_record)

    def invoke_many(self, capability: str, payloads: Iterable[Any], *, tenant: str,
                    caller: str = "anonymous", concurrency: int | None = None,
                    return_exceptions: bool = False, parent: Mapping[str, Any] | None = None
                    ) -> list[Result[Any] | MeshError]:
        """Sync facade of :meth:`ainvoke_many`."""
        return self.run_sync(self.ainvoke_many(capability, payloads, tenant=tenant,
                                               caller=caller, concurrency=concurrency,
                                               return_exceptions=return_exceptions,
                                               parent=parent))

    async def stream(self, capability: str, payload: Any, *, tenant: str,
                     caller: str = "anonymous", attributes: Mapping[str, Any] | None = None,
                     parent: Mapping[str, Any] | None = None,
                     traceparent: Mapping[str, str] | None = None,
                     buffer: int = 16,
                     on_result: Callable[[Result[Any]], None] | None = None,
                     record_id: str | None = None
                     ) -> AsyncIterator[dict[str, Any]]:
        """Yield output chunks as a streaming backend makes them.

        The call runs the same pipeline as :meth:`ainvoke` (stream mode) and gets the same
        decision record, span, metrics, lineage and decision event when it ends. At most
        ``buffer`` chunks wait for a slow consumer (then the backend waits). A consumer that
        stops early (``break``, ``aclose()``) ends the call as ``cancelled``, and whatever it
        reserved is given back. ``on_result`` gets the call's :class:`Result` (its record)
        after the last chunk, before the iteration ends (the gateway's closing SSE event).
        ``record_id`` (from :func:`aios_mesh.record.new_record_id`) names the call's record
        up front, so a front door can hand it out before the first chunk.
        """
        chunks: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(1, buffer))
        gone = False

        async def emit(chunk: dict[str, Any]) -> None:
            if gone:
                raise CallCancelled(f"the consumer of {capability}'s stream went away")
            await chunks.put(chunk)

        async def produce() -> Result[Any]:
            try:
                return await self._call(capability, payload, tenant=tenant, caller=caller,
                                        attributes=attributes, parent=parent,
                                        traceparent=traceparent, resume=None, mode="stream",
                                        emit=emit, record_id=record_id)
            finally:
                if not gone:
                    await chunks.put(_END)

        task = asyncio.ensure_future(produce())
        try:
            while (chunk := await chunks.get()) is not _END:
                yield chunk
            result = await task  # raises the call's MeshError, after its record is written
            if on_result is not None:
                on_result(result)
        finally:
            if not task.done():
                gone = True
                while not chunks.empty():  # frees a producer blocked on a full buffer
                    chunks.get_nowait()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, MeshError):
                    await task

    # ------------------------------------------------------------------ review and events
    def review_queue(self) -> ReviewQueue:
        if self._review is None:
            with self._lock:
                if self._review is None:
                    self._review = ReviewQueue(self.config.state_path / "review.db",
                                               state=self.state)
        return self._review

    async def aresolve_review(self, review_id: str, *, approve: bool, reviewer: str,
                              output: Mapping[str, Any] | None = None,
                              note: str = "") -> ReviewItem:
        """Record a human decision and resume what waits on it (see
        :func:`aios_mesh.review.resolve_review`)."""
        return await resolve_review(self.review_queue(), self.catalog, self.ports.audit,
                                    self.publish, review_id, approve=approve,
                                    reviewer=reviewer, output=output, note=note)

    def resolve_review(self, review_id: str, *, approve: bool, reviewer: str,
                       output: Mapping[str, Any] | None = None, note: str = "") -> ReviewItem:
        """Sync facade of :meth:`aresolve_review`."""
        return self.run_sync(self.aresolve_review(review_id, approve=approve,
                                                  reviewer=reviewer, output=output, note=note))

    def outbox(self) -> Outbox:
        if self._outbox is None:
            with self._lock:
                if self._outbox is None:
                    self._outbox = Outbox(self.config.state_path / "outbox.db")
        return self._outbox

    async def publish(self, topic: str, event: Event) -> None:
        """Publish an application event durably: it is committed to the outbox and this
        returns; the background relay ships it to the bus (retrying with backoff while the
        bus is down). ``flush()`` waits until it is out."""
        self.outbox().put(topic, event)
        self.relay.poke()

    def publish_many(self, items: Iterable[tuple[str, Event]]) -> int:
        """Sync: put ``(topic, event)`` pairs in the outbox in one transaction (all or none)
        and return how many; the background relay ships them (``flush()`` waits)."""
        batch = list(items)
        self.outbox().put_many(batch)
        self.relay.poke()
        return len(batch)

    async def flush_outbox(self, timeout: float = 10.0) -> bool:
        """Wait until the relay has shipped every pending outbox row and decision record;
        False when something is still pending at ``timeout`` (it stays durable)."""
        return await asyncio.to_thread(self.relay.drain, timeout)

    # ------------------------------------------------------------------ lifecycle
    async def aprepare(self, *capabilities: str) -> dict[str, ModelRef]:
        """Resolve each capability's model alias and have its backend load the model now
        (backends that can, e.g. in-process serving), so first calls are not slow. Returns
        the resolved refs by capability name; with no names, prepares every capability."""
        refs: dict[str, ModelRef] = {}
        for name in capabilities or tuple(self.capabilities):
            spec = self.capability(name)
            if spec.model is None:
                continue
            ref = await self.resolver.resolve(spec.model)
            _, serving = self.ports.serving_for(spec.serving)
            preload = getattr(serving, "preload", None)
            if preload is not None:
                await preload(ref)
            refs[name] = ref
        return refs

    def prepare(self, *capabilities: str) -> dict[str, ModelRef]:
        """Sync facade of :meth:`aprepare`."""
        return self.run_sync(self.aprepare(*capabilities))

    def lock(self) -> Path:
        """Pin every capability's model alias and registered prompt alias to its current
        version in the lock file, and every agent's definition to its digest."""
        path = self.config.lock_path
        if path is None:
            raise MeshError("no lock_file is configured", hint="set lock_file in the config")
        specs = list(self.catalog)
        models = [s.model for s in specs if s.model]
        models += [f.target for s in specs for f in s.fallbacks
                   if f.kind == "model" and f.target]
        collections = sorted({c for s in specs for c in s.indexes})
        definitions = {s.key: DefinitionPin.of(s.definition) for s in specs
                       if s.definition is not None}

        async def pin() -> None:
            retrieval = self.ports.retrieval if collections else None
            indexes = {c: await retrieval.snapshot(c) for c in collections} if retrieval else {}
            await self.resolver.lock_all(models, indexes, prompts=prompt_specs(specs),
                                         definitions=definitions)

        self.run_sync(pin())
        return path

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record processor has shipped what past calls produced
        (telemetry, shadow calls) and the relay has shipped every decision record and
        published event; True only when nothing is left pending."""
        deadline = time.monotonic() + timeout
        done = self.recorder.flush(timeout)
        return self.relay.drain(max(0.0, deadline - time.monotonic())) and done

    async def aclose(self) -> None:
        await asyncio.to_thread(self.recorder.close)
        await asyncio.to_thread(self.relay.stop)
        await self.ports.aclose(lambda what: self.telemetry.failed(what))
        if isinstance(self.parts.redactor, TokenizingRedactor):
            await self.parts.redactor.aclose()  # the token vault's connections
        pause = pause_control(self)
        if pause is not None:
            pause.close()  # the pause store's connection and its reader thread
        if self._review is not None:
            self._review.close()
            self._review = None
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None
