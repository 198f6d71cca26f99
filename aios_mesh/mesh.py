"""The Mesh: business code asks for an intent; the mesh decides and records the rest.

    from aios_mesh import Mesh

    mesh = Mesh.from_config("aios-mesh.toml")          # or Mesh.local() for embedded defaults
    result = mesh.invoke("extract-invoice-fields", {"text": "..."}, tenant="acme",
                         caller="svc-intake")
    result.output          # the typed output model
    result.record          # the decision record (also in the audit log)

``ainvoke`` is the async core; ``invoke`` is a thin facade over it. ``invoke_many`` runs a bulk
of calls with bounded concurrency; ``stream`` yields chunks where the backend streams.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, ValidationError

from aios_mesh._sync import SyncRunner
from aios_mesh.backends import PORTS, PortName, load_adapter, parse_url
from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.config import MeshConfig, config_from_mapping, load_config
from aios_mesh.context import CallContext
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.errors import (
    CapabilityNotSupported,
    InvalidInput,
    MeshError,
    NotFound,
    PolicyDenied,
    QuotaExceeded,
    UnknownCapability,
    UnknownTenant,
)
from aios_mesh.outbox import Outbox
from aios_mesh.pipeline import Call, Pipeline
from aios_mesh.pipeline.batching import BatcherPool
from aios_mesh.pipeline.cache import CacheStep, ResponseCache
from aios_mesh.pipeline.confidence import ConfidenceGate
from aios_mesh.pipeline.invoke import BreakerBoard, InvokeStep, Target
from aios_mesh.pipeline.policy import DecisionCache, PolicyStep
from aios_mesh.pipeline.quota import QuotaStep
from aios_mesh.pipeline.redact import RedactStep
from aios_mesh.pipeline.resolve import ResolveModel
from aios_mesh.pipeline.validate import ValidateInput, digest, validation_message
from aios_mesh.ports.audit import AuditLog
from aios_mesh.ports.events import Event
from aios_mesh.ports.policy import Policy
from aios_mesh.ports.quota import QuotaStore
from aios_mesh.ports.registry import ModelRef, ModelRegistry
from aios_mesh.ports.serving import Serving, Usage
from aios_mesh.record import DecisionRecord, Outcome, new_record_id, utc_now_iso
from aios_mesh.redaction import Redactor, RuleRedactor, TokenizingRedactor
from aios_mesh.redaction.tokens import load_or_create_key
from aios_mesh.resilience import RetryBudget
from aios_mesh.resolver import AliasResolver
from aios_mesh.review import ReviewItem, ReviewQueue
from aios_mesh.rollout import ShadowRunner, _Job
from aios_mesh.signals import SignalRelay
from aios_mesh.telemetry import Telemetry
from aios_mesh.worker import Route

__all__ = ["Mesh", "RecordSink", "Result"]

OutT = TypeVar("OutT", bound=BaseModel)

#: Called with each record after it is in the audit log (lineage, domain events, tests).
RecordSink = Callable[[DecisionRecord, Mapping[str, Any]], None]

_REJECTED = (InvalidInput, QuotaExceeded, NotFound)


@dataclass(frozen=True, slots=True)
class Result(Generic[OutT]):
    """What a call returns: the typed output (None while a human reviews it) and its record."""

    output: OutT | None
    record: DecisionRecord

    @property
    def needs_review(self) -> bool:
        return self.record.outcome == "review"

    @property
    def review_id(self) -> str | None:
        return self.record.review_id


def _outcome(error: MeshError | None, review_id: str | None) -> Outcome:
    if error is None:
        return "review" if review_id else "ok"
    if isinstance(error, PolicyDenied):
        return "denied"
    if isinstance(error, _REJECTED):
        return "rejected"
    return "error"


class Mesh:
    """The capability mesh. Build it with :meth:`local`, :meth:`from_config` or directly.

    Adapters may be given as instances (the test seam, like ``httpx.Client(transport=...)``)
    or as URLs; anything not given follows the precedence argument > environment
    (``AIOS_MESH_<PORT>_URL``) > config file > embedded default. Ports load lazily on first
    use, so a mesh that never retrieves never imports a vector engine.
    """

    def __init__(self, config: MeshConfig | None = None, *,
                 capabilities: Iterable[CapabilitySpec] = (),
                 adapters: Mapping[str, Any] | None = None,
                 redactor: Redactor | None = None,
                 telemetry: Telemetry | None = None) -> None:
        self.config = config or MeshConfig()
        self._explicit: dict[str, Any] = dict(adapters or {})
        unknown = set(self._explicit) - set(PORTS)
        if unknown:
            raise MeshError(f"unknown port(s) {sorted(unknown)}",
                            hint=f"ports are: {', '.join(PORTS)}")
        self._ports: dict[str, Any] = {}
        self._port_lock = threading.Lock()
        self._named_serving: dict[str, Serving] = {}
        self._serving_label: str | None = None
        self._capabilities: dict[str, CapabilitySpec] = {}
        self.local_serving = InProcessServing()
        self.sinks: list[RecordSink] = []
        self.routes: list[Route] = [Route(**r.model_dump()) for r in self.config.routes]
        self._sync = SyncRunner()
        self._review: ReviewQueue | None = None
        self._outbox: Outbox | None = None
        state = self.config.state_path
        self.telemetry = telemetry or Telemetry(
            log=state / "decisions.log" if self.config.telemetry.log else None,
            enabled_otel=self.config.telemetry.otel)
        self.resolver = AliasResolver(self._get_registry, ttl_s=self.config.cache.alias_ttl_s,
                                      lock_path=self.config.lock_path)
        self.decision_cache = DecisionCache(self.config.cache.policy_decisions,
                                            self.config.cache.policy_ttl_s)
        self.breakers = BreakerBoard(self.config.breaker)
        self.batchers = BatcherPool()
        self.response_cache = ResponseCache()
        self.shadow = ShadowRunner(self, state / "shadow.db")
        retry = self.config.retry
        self.retry_budget = RetryBudget(retry.budget_ratio, retry.min_retries_per_s)
        tel = self.config.telemetry
        self.signals: SignalRelay | None = None
        if tel.lineage or tel.decision_events:
            self.signals = SignalRelay(
                audit=lambda: self._fresh_adapter("audit"),
                lineage=(lambda: self._fresh_adapter("lineage")) if tel.lineage else None,
                bus=(lambda: self._fresh_adapter("events")) if tel.decision_events else None,
                cursor_path=state / "signals.cursor", interval_s=tel.relay_interval_s,
                linger_s=tel.relay_linger_s)
        self.pipeline = Pipeline([
            ValidateInput(self.config.max_payload_bytes),
            PolicyStep(self._policy_port, self.decision_cache),
            QuotaStep(self._quota_port),
            RedactStep(redactor or self._default_redactor()),
            ResolveModel(self.resolver),
            CacheStep(self.response_cache),
            InvokeStep(target=self._target, resolver=self.resolver, breakers=self.breakers,
                       budget=self.retry_budget, retry=retry, review=self.review_queue),
            ConfidenceGate(self.review_queue),
        ])
        for spec in (*self._config_capabilities(), *capabilities):
            self.register(spec)

    def _default_redactor(self) -> Redactor:
        if self.config.redaction.mode == "tokenize":
            key = load_or_create_key(self.config.state_path / "redaction.key")
            return TokenizingRedactor(key)
        return RuleRedactor()

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
                    **adapters: Any) -> Self:
        """Build from a TOML file; keyword arguments override a port's adapter (URL or
        instance), e.g. ``Mesh.from_config("mesh.toml", serving="triton+grpc://...")``."""
        return cls(load_config(path), capabilities=capabilities, adapters=adapters)

    def _config_capabilities(self) -> list[CapabilitySpec]:
        return [CapabilitySpec.from_config(doc) for doc in self.config.capabilities]

    def register(self, spec: CapabilitySpec) -> CapabilitySpec:
        """Add (or replace) a capability. A spec with a handler (and no model) is served by
        calling the handler in-process."""
        self._capabilities[spec.name] = spec
        return spec

    def on(self, topic: str, capability: str, *, result_topic: str | None = None,
           group: str | None = None,
           payload: Callable[[Event], Any] | None = None) -> Route:
        """Route events on ``topic`` to ``capability`` (run them with :class:`Worker` or
        ``aios-mesh worker``); answers go to ``result_topic``."""
        self.capability(capability)  # fail now on a typo, not in the worker
        route = Route(topic, capability, result_topic, group,
                      *(() if payload is None else (payload,)))
        self.routes.append(route)
        return route

    @property
    def capabilities(self) -> dict[str, CapabilitySpec]:
        return dict(self._capabilities)

    def capability(self, name: str) -> CapabilitySpec:
        try:
            return self._capabilities[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self._capabilities), n=1)
            hint = (f"did you mean {close[0]!r}?" if close
                    else "`aios-mesh capabilities` lists what is registered")
            raise UnknownCapability(f"no capability named {name!r}", hint=hint) from None

    # ------------------------------------------------------------------ ports
    def backend_url(self, port: PortName) -> tuple[str, str]:
        explicit = self._explicit.get(port)
        return self.config.backend_url(port, explicit if isinstance(explicit, str) else None)

    def port(self, name: PortName) -> Any:
        """The adapter for a port, loaded on first use (thread-safe)."""
        found = self._ports.get(name)
        if found is not None:
            return found
        with self._port_lock:
            if name not in self._ports:
                given = self._explicit.get(name)
                if given is not None and not isinstance(given, str):
                    adapter = given
                elif name == "serving" and \
                        parse_url(self.backend_url(name)[0]).scheme == "inprocess":
                    adapter = self.local_serving  # one in-process table for handlers & models
                else:
                    url, _ = self.backend_url(name)
                    options = self._port_options(name)
                    adapter = load_adapter(name, url, base_dir=self.config.state_path,
                                           **options)
                self._on_loaded(name, adapter)
                self._ports[name] = adapter
        return self._ports[name]

    def _fresh_adapter(self, name: PortName) -> tuple[Any, bool]:
        """A new adapter instance for another thread (and whether the caller owns it); an
        instance given to the mesh explicitly is shared instead."""
        given = self._explicit.get(name)
        if given is not None and not isinstance(given, str):
            return given, False
        url, _ = self.backend_url(name)
        return load_adapter(name, url, base_dir=self.config.state_path,
                            **self._port_options(name)), True

    def _port_options(self, name: PortName) -> dict[str, Any]:
        return {}

    def _on_loaded(self, name: str, adapter: Any) -> None:
        if name == "quota":
            for tenant, tconf in self.config.tenants.items():
                if tconf.quota is not None:
                    adapter.set_limits(tenant, tconf.quota.to_limits())
                for cap, limits in tconf.capabilities.items():
                    adapter.set_limits(tenant, limits.to_limits(), capability=cap)

    # The steps take the ports through these (loaded on first use): plain calls, since an
    # awaited getter costs a coroutine on every call.
    def _policy_port(self) -> Policy:
        policy: Policy = self.port("policy")
        return policy

    def _quota_port(self) -> QuotaStore:
        quota: QuotaStore = self.port("quota")
        return quota

    async def _get_registry(self) -> ModelRegistry:
        registry: ModelRegistry = self.port("registry")
        return registry

    def _serving(self, name: str | None) -> tuple[str, Serving]:
        if name is None:
            serving: Serving = self.port("serving")
            if self._serving_label is None:
                given = self._explicit.get("serving")
                self._serving_label = (type(given).__name__ if given is not None
                                       and not isinstance(given, str)
                                       else parse_url(self.backend_url("serving")[0]).scheme)
            return self._serving_label, serving
        if name not in self._named_serving:
            urls = self.config.backends.serving_named
            if name not in urls:
                raise NotFound(f"no serving backend named {name!r}",
                               hint="declare it under [backends.serving_named]")
            with self._port_lock:
                self._named_serving.setdefault(name, load_adapter(
                    "serving", urls[name], base_dir=self.config.state_path))
        return name, self._named_serving[name]

    def _target(self, call: Call, ref: ModelRef | None) -> Target:
        spec = call.spec
        if spec.handler is not None and (ref is None or ref.name.startswith("function:")):
            model = ModelRef(name=f"function:{spec.name}", version=spec.version)
            call.model_ref = model
            ctx = CallContext(call.tenant, call.caller, call.record_id, self,
                              call.index_snapshots, call.attributes, parent=call.parent,
                              trace_headers=call.trace_headers)
            return Target("function", model, handler=spec.handler, context=ctx)
        if ref is None:
            raise NotFound(f"capability {spec.name} has no model to call")
        label, serving = self._serving(spec.serving)
        batcher = None
        if spec.batch is not None and spec.batch.max_size > 1:
            batcher = self.batchers.get(label, serving, ref, max_size=spec.batch.max_size,
                                        max_wait_s=spec.batch.max_wait_ms / 1000.0,
                                        timeout=spec.slo.timeout_s)
        return Target(label, ref, serving=serving, batcher=batcher)

    async def aresolve_review(self, review_id: str, *, approve: bool, reviewer: str,
                              output: Mapping[str, Any] | None = None,
                              note: str = "") -> ReviewItem:
        """Record a human decision and resume what waits on it.

        The decision goes into the review queue and the audit log (``kind:
        "review_decision"``). If the call came from an event route, the final answer (or the
        rejection) is published to that route's result topic through the durable outbox, so a
        bus outage delays it but never loses it. An approved ``output`` is validated against
        the capability's output model first.
        """
        queue = self.review_queue()
        item = queue.get(review_id)
        if output is not None:
            name = item.capability.split("@", 1)[0]
            spec = self.capability(name)
            try:
                output = spec.output.model_validate(dict(output)).model_dump(mode="json")
            except ValidationError as exc:
                raise InvalidInput(f"the corrected output does not match "
                                   f"{spec.output.__name__}: {validation_message(exc)}"
                                   ) from None
        item = queue.resolve(review_id, approve=approve, reviewer=reviewer,
                             output=dict(output) if output is not None else None, note=note)
        audit: AuditLog = self.port("audit")
        await audit.append({"kind": "review_decision", "review_id": item.id,
                            "record_id": item.record_id, "capability": item.capability,
                            "tenant": item.tenant, "decision": item.status,
                            "reviewer": reviewer, "at": item.decided_at,
                            "output_sha256": digest(item.final_output)
                            if item.final_output is not None else None})
        if item.resume and item.resume.get("topic"):
            cap = item.resume.get("capability", item.capability)
            kind = "result" if approve else "rejected"
            event = Event(type=f"{cap}.{kind}", source="aios-mesh/review", tenant=item.tenant,
                          key=item.resume.get("key"),
                          idempotency_key=f"{item.resume.get('idempotency_key', item.id)}:{cap}",
                          data={"output": item.final_output, "record_id": item.record_id,
                                "review_id": item.id, "reviewed_by": reviewer},
                          headers={"causation_id": str(item.resume.get("causation_id", ""))})
            await self.publish(item.resume["topic"], event)
        return item

    def resolve_review(self, review_id: str, *, approve: bool, reviewer: str,
                       output: Mapping[str, Any] | None = None, note: str = "") -> ReviewItem:
        """Sync facade of :meth:`aresolve_review`."""
        return self._sync.run(self.aresolve_review(review_id, approve=approve,
                                                   reviewer=reviewer, output=output, note=note))

    async def publish(self, topic: str, event: Event) -> None:
        """Publish an application event durably: it lands in the outbox first and is relayed
        to the bus now, or later if the bus is down (``flush_outbox`` / the worker retry)."""
        self.outbox().put(topic, event)
        await self.flush_outbox()

    def publish_many(self, items: Iterable[tuple[str, Event]]) -> int:
        """Sync: put ``(topic, event)`` pairs in the outbox in one transaction (all or none),
        then relay what the bus takes now; returns how many were sent now. Whatever the bus
        does not take stays in the outbox for the next flush."""
        self.outbox().put_many(items)
        return self._sync.run(self.flush_outbox())

    async def flush_outbox(self) -> int:
        """Ship pending outbox rows to the bus; returns how many were sent."""
        from aios_mesh.outbox import Relay

        result = await Relay(self.outbox(), self.port("events")).run_once()
        return result.sent

    def outbox(self) -> Outbox:
        if self._outbox is None:
            with self._port_lock:
                if self._outbox is None:
                    self._outbox = Outbox(self.config.state_path / "outbox.db")
        return self._outbox

    def review_queue(self) -> ReviewQueue:
        if self._review is None:
            with self._port_lock:
                if self._review is None:
                    self._review = ReviewQueue(self.config.state_path / "review.db")
        return self._review

    async def aprepare(self, *capabilities: str) -> dict[str, ModelRef]:
        """Resolve each capability's model alias and have its backend load the model now
        (backends that can, e.g. in-process serving), so first calls are not slow. Returns
        the resolved refs by capability name; with no names, prepares every capability."""
        names = capabilities or tuple(self._capabilities)
        refs: dict[str, ModelRef] = {}
        for name in names:
            spec = self.capability(name)
            if spec.model is None:
                continue
            ref = await self.resolver.resolve(spec.model)
            _, serving = self._serving(spec.serving)
            preload = getattr(serving, "preload", None)
            if preload is not None:
                await preload(ref)
            refs[name] = ref
        return refs

    def prepare(self, *capabilities: str) -> dict[str, ModelRef]:
        """Sync facade of :meth:`aprepare`."""
        return self._sync.run(self.aprepare(*capabilities))

    # ------------------------------------------------------------------ calls
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
        started = time.perf_counter()
        started_at = utc_now_iso()
        record_id = new_record_id()
        span = self.telemetry.start_span(capability, tenant, traceparent)
        token = self.telemetry.activate(span)
        spec: CapabilitySpec | None = None
        call: Call | None = None
        error: MeshError | None = None
        try:
            spec = self.capability(capability)
            call = Call(spec=spec, tenant=tenant, caller=caller, raw=payload,
                        record_id=record_id, attributes=dict(attributes or {}),
                        trace_headers=self.telemetry.inject(span),
                        resume=dict(resume) if resume else None,
                        parent=dict(parent) if parent else None)
            if tenant not in self.config.tenants:
                raise UnknownTenant(f"tenant {tenant!r} is not declared",
                                    hint="add it under [tenants] in the config")
            await self.pipeline.run(call)
        except MeshError as exc:
            error = exc
        finally:
            self.telemetry.deactivate(token)
        record = self._record(record_id, started, started_at, capability, tenant, caller,
                              spec, call, error, parent, span)
        doc = record.to_dict()
        audit: AuditLog = self.port("audit")
        await audit.append(doc)  # IntegrityError here fails the call: no answer unrecorded
        self.telemetry.export(record, doc, span)
        if spec is not None and spec.canary is not None and spec.canary.shadow \
                and call is not None and call.output is not None and call.model_ref:
            self.shadow.submit(_Job(spec, call.payload or {}, tenant, record_id,
                                    call.output.model_dump(mode="json"), record.latency_ms,
                                    call.model_ref.version))
        if self.signals is not None:
            self.signals.start()
            self.signals.poke()
        for sink in self.sinks:
            try:
                sink(record, doc)
            except Exception:
                self.telemetry._fail(f"record sink {sink!r}")
        if error is not None:
            raise error
        assert call is not None
        return Result(call.output, record)

    def invoke(self, capability: str, payload: Any, *, tenant: str, caller: str = "anonymous",
               attributes: Mapping[str, Any] | None = None,
               parent: Mapping[str, Any] | None = None,
               traceparent: Mapping[str, str] | None = None) -> Result[Any]:
        """Sync facade of :meth:`ainvoke`."""
        return self._sync.run(self.ainvoke(capability, payload, tenant=tenant, caller=caller,
                                           attributes=attributes, parent=parent,
                                           traceparent=traceparent))

    async def ainvoke_many(self, capability: str, payloads: Iterable[Any], *, tenant: str,
                           caller: str = "anonymous", concurrency: int | None = None,
                           return_exceptions: bool = False,
                           parent: Mapping[str, Any] | None = None
                           ) -> list[Result[Any] | MeshError]:
        """Many calls of one capability, at most ``concurrency`` in flight, results in order.
        With ``return_exceptions`` each failed item holds its :class:`MeshError`."""
        limit = asyncio.Semaphore(concurrency or self.config.invoke_many_concurrency)

        async def one(item: Any) -> Result[Any] | MeshError:
            async with limit:
                try:
                    return await self.ainvoke(capability, item, tenant=tenant, caller=caller,
                                              parent=parent)
                except MeshError as exc:
                    if return_exceptions:
                        return exc
                    raise

        return list(await asyncio.gather(*(one(p) for p in payloads)))

    def invoke_many(self, capability: str, payloads: Iterable[Any], *, tenant: str,
                    caller: str = "anonymous", concurrency: int | None = None,
                    return_exceptions: bool = False, parent: Mapping[str, Any] | None = None
                    ) -> list[Result[Any] | MeshError]:
        """Sync facade of :meth:`ainvoke_many`."""
        return self._sync.run(self.ainvoke_many(capability, payloads, tenant=tenant,
                                                caller=caller, concurrency=concurrency,
                                                return_exceptions=return_exceptions,
                                                parent=parent))

    async def stream(self, capability: str, payload: Any, *, tenant: str,
                     caller: str = "anonymous") -> AsyncIterator[dict[str, Any]]:
        """Yield output chunks from a streaming backend. The gates (validation, policy,
        quota, redaction, resolution) run first; one record is written when the stream ends."""
        started = time.perf_counter()
        started_at = utc_now_iso()
        record_id = new_record_id()
        spec = self.capability(capability)
        call = Call(spec=spec, tenant=tenant, caller=caller, raw=payload, record_id=record_id)
        # The gates: every step before the answer is produced (a stream is never cached).
        cut = self.pipeline.names.index("cache")
        gates = Pipeline(self.pipeline.steps[:cut])
        error: MeshError | None = None
        chunks = 0
        try:
            if tenant not in self.config.tenants:
                raise UnknownTenant(f"tenant {tenant!r} is not declared")
            await gates.run(call)
            target = self._target(call, call.model_ref)
            if target.serving is None:
                raise CapabilityNotSupported(f"{capability} is a function capability",
                                             hint="stream() needs a model on a streaming "
                                                  "backend; use invoke()")
            call.serving = target.label
            call.attempts = 1
            try:
                async for chunk in target.serving.stream(target.model, call.payload or {},
                                                         timeout=spec.slo.timeout_s):
                    chunks += 1
                    yield chunk
            except MeshError as exc:
                error = exc
                for step in reversed(gates.steps):
                    await step.on_error(call, exc)
                raise
            call.usage = Usage(calls=1)
            call.cost = spec.price.cost(call.usage)
            for step in reversed(gates.steps):
                await step.after(call)
        except MeshError as exc:
            error = error or exc
            raise
        finally:
            record = self._record(record_id, started, started_at, capability, tenant, caller,
                                  spec, call, error, None, None)
            audit: AuditLog = self.port("audit")
            await audit.append(record.to_dict())

    # ------------------------------------------------------------------ records
    def _record(self, record_id: str, started: float, started_at: str, capability: str,
                tenant: str, caller: str, spec: CapabilitySpec | None, call: Call | None,
                error: MeshError | None, parent: Mapping[str, Any] | None,
                span: Any) -> DecisionRecord:
        # On every call's path: the call-less case (unknown capability) is handled apart so
        # the common one reads each field once.
        latency_ms = round((time.perf_counter() - started) * 1000.0, 4)
        ended_at = utc_now_iso()
        trace_id = span_id = None
        if span is not None:
            ctx = span.get_span_context()
            if ctx.is_valid:
                trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
        if call is None:
            return DecisionRecord(
                record_id=record_id, started_at=started_at, ended_at=ended_at,
                latency_ms=latency_ms, tenant=tenant, caller=caller, capability=capability,
                capability_version=spec.version if spec is not None else "",
                outcome=_outcome(error, None), trace_id=trace_id, span_id=span_id,
                parent=dict(parent) if parent else None,
                currency=spec.price.currency if spec else "USD",
                error=error.to_dict() if error is not None else None)
        policy = None
        d = call.decision
        if d is not None:
            policy = {"path": d.policy or (spec.policy if spec else None), "allow": d.allow,
                      "reason": d.reason,
                      "obligations": {"redact": list(d.obligations.redact),
                                      "require_human": d.obligations.require_human,
                                      "max_cost": d.obligations.max_cost},
                      "bundle_hash": d.bundle_hash, "cached": call.policy_cached,
                      "input": call.policy_input}
        r = call.model_ref
        model = None if r is None else {"name": r.name, "version": r.version, "alias": r.alias,
                                        "source": r.source, "run_id": r.run_id}
        res = call.reservation
        quota = None if res is None else {"reservation_id": res.id, "reserved_cost": res.cost}
        redaction = call.redaction
        usage = call.usage
        return DecisionRecord(
            record_id=record_id,
            started_at=started_at,
            ended_at=ended_at,
            latency_ms=latency_ms,
            tenant=tenant,
            caller=caller,
            capability=capability,
            capability_version=call.spec.version,
            outcome=_outcome(error, call.review_id),
            trace_id=trace_id,
            span_id=span_id,
            parent=dict(parent) if parent else None,
            policy=policy,
            redaction={"applied": redaction.applied, "counts": dict(redaction.counts)}
            if redaction is not None else {"applied": False, "counts": {}},
            model=model,
            serving=call.serving,
            index_snapshots=dict(call.index_snapshots),
            index_drift=self._index_drift(call) if call.index_snapshots else None,
            attempts=call.attempts,
            fallback=call.fallback,
            usage={"calls": usage.calls, "tokens": usage.tokens,
                   "gpu_seconds": usage.gpu_seconds},
            cost=round(call.cost, 10),
            currency=call.spec.price.currency,
            quota=quota,
            review_id=call.review_id,
            confidence=call.confidence,
            cache=call.cache,
            variant=call.variant,
            error=error.to_dict() if error is not None else None,
            input_sha256=call.input_sha256,
            output_sha256=call.output_sha256,
        )

    def _index_drift(self, call: Call | None) -> dict[str, dict[str, str]] | None:
        """Indexes that answered at another snapshot than the lock file pins (a reproducible
        run expects none; the record says which ones moved)."""
        lock = self.resolver.lock
        if call is None or lock is None or not lock.indexes:
            return None
        drift = {c: {"pinned": lock.indexes[c], "answered": snap}
                 for c, snap in call.index_snapshots.items()
                 if c in lock.indexes and lock.indexes[c] != snap}
        return drift or None

    # ------------------------------------------------------------------ lifecycle
    def lock(self) -> Path:
        """Pin every capability's model alias to its current version in the lock file."""
        path = self.config.lock_path
        if path is None:
            raise MeshError("no lock_file is configured", hint="set lock_file in the config")
        specs = [s.model for s in self._capabilities.values() if s.model]
        specs += [f.target for s in self._capabilities.values() for f in s.fallbacks
                  if f.kind == "model" and f.target]
        collections = sorted({c for s in self._capabilities.values() for c in s.indexes})

        async def pin() -> None:
            indexes = {}
            if collections:
                retrieval = self.port("retrieval")
                indexes = {c: await retrieval.snapshot(c) for c in collections}
            await self.resolver.lock_all(specs, indexes)

        self._sync.run(pin())
        return path

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until telemetry, lineage and decision events of past calls are shipped."""
        ok = self.telemetry.flush(timeout) and self.shadow.flush(timeout)
        if self.signals is not None:
            ok = self.signals.drain(timeout) and ok
        return ok

    async def aclose(self) -> None:
        await asyncio.to_thread(self.shadow.stop)
        if self.signals is not None:
            await asyncio.to_thread(self.signals.stop)
        for adapter in [*self._ports.values(), *self._named_serving.values()]:
            close: Callable[[], Awaitable[None]] | None = getattr(adapter, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    self.telemetry._fail(f"closing {type(adapter).__name__}")
        self._ports.clear()
        self._named_serving.clear()
        if self._review is not None:
            self._review.close()
            self._review = None
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None
        self.telemetry.close()

    def close(self) -> None:
        self._sync.run(self.aclose())
        self._sync.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
