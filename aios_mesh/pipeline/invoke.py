"""Invoke the backend: per-attempt timeout, retries under a retry budget, a circuit breaker per
backend and model, output validation, cost — then the ordered fallback chain."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from aios_mesh.capabilities import Fallback, import_object
from aios_mesh.config import BreakerConfig, RetryConfig
from aios_mesh.embedded.serving import as_prediction
from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    CallCancelled,
    CircuitOpen,
    FeatureNotSupported,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.pipeline.batching import BatcherPool, MicroBatcher
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.pipeline.validate import digest, validation_message
from aios_mesh.ports.base import Feature
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Prediction, Serving, Usage
from aios_mesh.resilience import CircuitBreaker, RetryBudget, backoff_delay
from aios_mesh.resolver import AliasResolver
from aios_mesh.review import ReviewQueue

__all__ = ["BreakerBoard", "InvokeStep", "Target", "Targets"]

#: What a failed primary may fall back from: backend trouble, not the caller's own mistakes.
FALLBACK_ON = (BackendUnavailable, BackendTimeout, CircuitOpen, InvalidOutput)


@dataclass(frozen=True, slots=True)
class Target:
    """Who answers: a model on a serving backend, or a capability's in-process handler.
    ``label`` names the backend in records and breakers."""

    label: str
    model: ModelRef
    serving: Serving | None = None
    handler: Callable[..., Any] | None = None
    context: Any = None
    batcher: MicroBatcher | None = None

    @property
    def keeps_deadline(self) -> bool:
        """The serving adapter bounds the call itself (:attr:`Feature.DEADLINE`); a batched
        call waits at most the batcher's ``max_wait`` more before its batch is sent."""
        return (self.handler is None and self.serving is not None
                and Feature.DEADLINE in self.serving.features)

    def predict(self, call: Call, timeout: float) -> Awaitable[Prediction]:
        # Hands back the backend's own awaitable: one coroutine frame less on every call.
        if self.batcher is not None:
            return self.batcher.infer(call.payload or {})
        if self.handler is None:
            assert self.serving is not None
            return self.serving.infer(self.model, call.payload or {}, timeout=timeout)
        return self._handle(call)

    async def _handle(self, call: Call) -> Prediction:
        assert self.handler is not None
        spec = call.spec
        # A handler sees the redacted payload when redaction ran, else the validated input.
        arg = spec.input.model_validate(call.payload) if call.redaction is not None \
            else call.input
        try:
            out = (self.handler(arg, self.context) if _wants_context(self.handler)
                   else self.handler(arg))
            if inspect.isawaitable(out):
                out = await out
        except MeshError:
            raise
        except Exception as exc:
            raise BackendUnavailable(f"handler of {spec.name} raised {type(exc).__name__}: "
                                     f"{exc}") from exc
        return as_prediction(out)


class Targets:
    """Decides who answers a call: the capability's in-process handler, or its model on the
    capability's serving backend (through a micro-batcher when the spec batches).

    Args:
        serving: ``(label, adapter)`` of a serving backend by name (None: the default one);
            :meth:`aios_mesh.ports.container.Ports.serving_for`.
        batchers: the shared micro-batchers.
        context: builds the :class:`~aios_mesh.context.CallContext` a handler may take.
    """

    def __init__(self, serving: Callable[[str | None], tuple[str, Serving]],
                 batchers: BatcherPool, context: Callable[[Call], Any]) -> None:
        self._serving = serving
        self.batchers = batchers
        self._context = context

    def __call__(self, call: Call, ref: ModelRef | None) -> Target:
        spec = call.spec
        if spec.handler is not None and (ref is None or ref.name.startswith("function:")):
            model = ModelRef(name=f"function:{spec.name}", version=spec.version)
            call.model_ref = model
            return Target("function", model, handler=spec.handler, context=self._context(call))
        if ref is None:
            raise NotFound(f"capability {spec.name} has no model to call")
        label, serving = self._serving(spec.serving)
        batcher = None
        if spec.batch is not None and spec.batch.max_size > 1 and call.mode != "stream":
            batcher = self.batchers.get(label, serving, ref, max_size=spec.batch.max_size,
                                        max_wait_s=spec.batch.max_wait_ms / 1000.0,
                                        timeout=spec.slo.timeout_s)
        return Target(label, ref, serving=serving, batcher=batcher)


def _wants_context(fn: Callable[..., Any]) -> bool:
    cached: bool | None = getattr(fn, "__aios_wants_context__", None)
    if cached is None:
        cached = len(inspect.signature(fn).parameters) >= 2
        try:
            fn.__aios_wants_context__ = cached  # type: ignore[attr-defined]
        except AttributeError:
            pass
    return cached


class BreakerBoard:
    """One :class:`CircuitBreaker` per (backend, model name), created on first use."""

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, label: str, model: str) -> CircuitBreaker:
        key = f"{label}/{model}"
        breaker = self._breakers.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.setdefault(key, CircuitBreaker(
                    key, failure_threshold=self.config.failure_threshold,
                    reset_timeout_s=self.config.reset_timeout_s))
        return breaker

    def states(self) -> dict[str, str]:
        return {k: b.state.value for k, b in self._breakers.items()}


class InvokeStep(StepBase):
    name = "invoke"

    def __init__(self, *, target: Callable[[Call, ModelRef | None], Target],
                 resolver: AliasResolver, breakers: BreakerBoard, budget: RetryBudget,
                 retry: RetryConfig, review: Callable[[], ReviewQueue]) -> None:
        self._target = target
        self.resolver = resolver
        self.breakers = breakers
        self.budget = budget
        self.retry = retry
        self._review = review

    async def before(self, call: Call) -> None:
        if call.cache == "hit":
            return
        self.budget.record_call()
        if call.mode == "stream":
            await self._stream(call, self._target(call, call.model_ref))
            return
        try:
            await self._run(call, self._target(call, call.model_ref))
            return
        except FALLBACK_ON as exc:
            if not call.spec.fallbacks:
                raise
            last: MeshError = exc
        for fallback in call.spec.fallbacks:
            try:
                await self._fallback(call, fallback)
                call.fallback = str(fallback)
                return
            except FALLBACK_ON as exc:
                last = exc
        raise last

    async def _fallback(self, call: Call, fallback: Fallback) -> None:
        if fallback.kind == "model":
            assert fallback.target is not None
            ref = await self.resolver.resolve(fallback.target)
            call.model_ref = ref
            await self._run(call, self._target(call, ref))
        elif fallback.kind == "function":
            assert fallback.target is not None
            fn = import_object(fallback.target)
            call.attempts += 1
            model = ModelRef(name=f"function:{fallback.target}", version="0")
            target = Target("function", model, handler=fn)
            self._accept(call, await target.predict(call, call.spec.slo.timeout_s))
            call.model_ref = model
            call.serving = "function"
        else:  # human: park the call; the outcome becomes "review" with no output yet
            call.review_reason = "fallback chain reached human review"
            call.review_id = self._review().enqueue(
                record_id=call.record_id, tenant=call.tenant, capability=call.spec.key,
                reason=call.review_reason, payload=call.payload or {}, proposed=None,
                resume=call.resume)
            call.done = True

    async def _run(self, call: Call, target: Target) -> None:
        """Attempts with timeout, retries (bounded by max_attempts and the budget), breaker."""
        call.serving = target.label
        breaker = self.breakers.get(target.label, target.model.name)
        timeout = call.spec.slo.timeout_s
        keeps_deadline = target.keeps_deadline
        attempt = 0
        while True:
            attempt += 1
            breaker.acquire()
            call.attempts += 1
            error: MeshError
            try:
                # One timer per call is enough (each costs ~4 µs): the adapter's, if it keeps
                # the deadline itself.
                async with (contextlib.nullcontext() if keeps_deadline
                            else asyncio.timeout(timeout)):
                    prediction = await target.predict(call, timeout)
                self._accept(call, prediction)
            except TimeoutError:
                error = BackendTimeout(f"{target.label} did not answer {call.spec.name} within "
                                       f"{timeout}s", hint="raise slo.timeout_s or check the "
                                                           "backend's load")
            except MeshError as exc:
                error = exc
            except Exception as exc:  # an adapter let a native error through: still typed
                error = BackendUnavailable(f"{target.label} failed: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
            else:
                breaker.record_success()
                return
            if isinstance(error, FALLBACK_ON) and not isinstance(error, CircuitOpen):
                breaker.record_failure()
            if (not error.retryable or attempt >= self.retry.max_attempts
                    or not self.budget.try_spend()):
                raise error
            await asyncio.sleep(backoff_delay(attempt, self.retry.backoff_s,
                                              self.retry.max_backoff_s))

    async def _stream(self, call: Call, target: Target) -> None:
        """Stream mode: hand each chunk to the consumer as the backend makes it. One attempt
        (a chunk already sent cannot be taken back), under the same breaker as invoke."""
        if target.serving is None or call.emit is None:
            raise FeatureNotSupported(
                f"{call.spec.name} is answered by a function, which does not stream",
                hint="stream() needs a model on a streaming backend; use invoke()")
        call.serving = target.label
        breaker = self.breakers.get(target.label, target.model.name)
        breaker.acquire()
        call.attempts += 1
        timeout = call.spec.slo.timeout_s
        stream: AsyncIterator[dict[str, Any]] = target.serving.stream(
            target.model, call.payload or {}, timeout=timeout)
        try:
            try:
                async for chunk in stream:
                    call.chunks += 1
                    await call.emit(chunk)
            finally:  # a consumer that left early must not leave the backend's stream open
                close: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
        except CallCancelled:
            raise  # the consumer left: not the backend's failure
        except MeshError as exc:
            if isinstance(exc, FALLBACK_ON) and not isinstance(exc, CircuitOpen):
                breaker.record_failure()
            raise
        except Exception as exc:
            breaker.record_failure()
            raise BackendUnavailable(f"{target.label} failed while streaming: "
                                     f"{type(exc).__name__}") from exc
        breaker.record_success()
        call.usage = Usage(calls=1)
        call.cost = call.spec.price.cost(call.usage)

    @staticmethod
    def _accept(call: Call, prediction: Prediction) -> None:
        spec = call.spec
        try:
            output = spec.output.model_validate(prediction.output)
        except ValidationError as exc:
            raise InvalidOutput(f"backend answer does not match {spec.output.__name__}: "
                                f"{validation_message(exc)}",
                                hint="check the model's output mapping for this capability"
                                ) from None
        call.prediction = prediction
        call.output = output
        call.output_sha256 = digest(prediction.output)
        call.usage = prediction.usage
        call.cost = spec.price.cost(prediction.usage)


