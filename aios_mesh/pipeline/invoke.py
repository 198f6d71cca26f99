"""Invoke the backend: per-attempt timeout, retries under a retry budget, a circuit breaker per
backend and model with a compartment per tenant, output validation, cost — then the ordered
fallback chain. Only backend failures count against a breaker; the caller's own mistakes (a
handler rejecting its input) are neither retried nor counted. When a fallback answers, the
primary's error stays on the call (``call.primary_error``) and the record says ``degraded``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from aios_mesh.capabilities import Fallback, import_object
from aios_mesh.config import RetryConfig
from aios_mesh.embedded.serving import as_prediction
from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    CircuitOpen,
    FeatureNotSupported,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.generation.wire import parse_structured, usage_of_chunk
from aios_mesh.pipeline.batching import BatcherPool, MicroBatcher
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.guard import schema_review
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.pipeline.validate import digest, validation_message
from aios_mesh.ports.base import Feature
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Prediction, Serving, Usage
from aios_mesh.redaction import describe_exception
from aios_mesh.resilience import BreakerBoard, BreakerState, RetryBudget, backoff_delay
from aios_mesh.resolver import AliasResolver
from aios_mesh.review import ReviewQueue

# BreakerBoard lives in aios_mesh.resilience; named here too because the mesh builds it with
# the steps' other parts.
__all__ = ["BreakerBoard", "InvokeStep", "Target", "Targets"]

#: The temperature a generation is retried at after an off-schema answer.
_RESAMPLE_TEMPERATURE = 0.3

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
    def breaker_model(self) -> str:
        """The model part of the breaker's key: ``name/version`` (a broken version must not
        be closed again by a fallback to another version of the same model)."""
        return f"{self.model.name}/{self.model.version}" if self.model.version \
            else self.model.name

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
        # (A generation's payload is its LLM request by now: its fields are call.variables.)
        fields = call.variables if call.variables is not None else call.payload
        arg = spec.input.model_validate(fields) if call.redaction is not None else call.input
        try:
            out = (self.handler(arg, self.context) if _wants_context(self.handler)
                   else self.handler(arg))
            if inspect.isawaitable(out):
                out = await out
        except MeshError:
            raise
        except ValueError as exc:  # pydantic's ValidationError too: the input is the problem
            raise InvalidInput(f"handler of {spec.name} rejected its input: "
                               f"{describe_exception(exc)}",
                               hint="fix the payload; a handler rejects an input by raising "
                                    "InvalidInput or ValueError") from exc
        except Exception as exc:
            raise BackendUnavailable(f"handler of {spec.name} raised "
                                     f"{describe_exception(exc)}",
                                     hint="see the handler's exception; the call was retried "
                                          "and the fallback chain taken") from exc
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
            # the resolve step's ref (it may name the handler's pinned definition)
            model = ref or ModelRef(name=f"function:{spec.name}", version=spec.version)
            call.model_ref = model
            return Target("function", model, handler=spec.handler, context=self._context(call))
        if ref is None:
            raise NotFound(f"capability {spec.name} has no model to call")
        # the SLO router's choice of backend, else the capability's own
        label, serving = self._serving(call.backend if call.backend is not None
                                       else spec.serving)
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
        if call.paused is not None:  # an operator paused it: the primary is not called
            await self._paused(call)
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
                if isinstance(exc, InvalidOutput) and schema_review(call, exc, self._review):
                    return  # a policy sends off-schema answers to a human
                raise
            primary: MeshError = exc
        last = await self._fallbacks(call, primary)
        if last is None:
            call.primary_error = primary  # an answer came, but not the primary's
            return
        if isinstance(last, InvalidOutput) and schema_review(call, last, self._review):
            return  # a policy sends off-schema answers to a human
        raise last

    async def _fallbacks(self, call: Call, primary: MeshError) -> MeshError | None:
        """Try the fallback chain in order: ``None`` once one answered (``call.fallback``
        names it), else the last error (``primary`` when no fallback is declared)."""
        last = primary
        for fallback in call.spec.fallbacks:
            try:
                await self._fallback(call, fallback)
            except FALLBACK_ON as exc:
                last = exc
                continue
            call.fallback = str(fallback)
            return None
        return last

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
            self._park(call, "fallback chain reached human review")

    def _park(self, call: Call, reason: str) -> None:
        call.review_reason = reason
        call.review_id = self._review().enqueue(
            record_id=call.record_id, tenant=call.tenant, capability=call.spec.key,
            reason=reason, payload=call.payload or {}, proposed=None, resume=call.resume)
        call.done = True

    async def _paused(self, call: Call) -> None:
        """A paused capability (:mod:`aios_mesh.lifecycle.pause`): the call is parked for a
        human, or answered by the fallback chain; ``call.primary_error`` (set by the pause
        controller) says why the primary was skipped, so the record does."""
        if call.paused == "human":
            self._park(call, call.review_reason or "paused")
            return
        self.budget.record_call()
        assert call.primary_error is not None  # set by the pause controller
        last = await self._fallbacks(call, call.primary_error)
        if last is not None:  # (the controller refuses a pause to no fallback)
            raise last

    async def _run(self, call: Call, target: Target) -> None:
        """Attempts with timeout, retries (bounded by max_attempts and the budget), breaker."""
        call.serving = target.label
        bulkhead = self.breakers.bulkhead(target.label, target.breaker_model, call.tenant)
        timeout = call.spec.slo.timeout_s
        keeps_deadline = target.keeps_deadline
        attempt = 0
        while True:
            attempt += 1
            probes = bulkhead.acquire()
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
                error = BackendUnavailable(
                    f"{target.label} failed: {describe_exception(exc)}")
                error.__cause__ = exc
            except BaseException:  # cancelled: nothing learnt about the backend
                bulkhead.release(probes)
                raise
            else:
                bulkhead.record_success()
                return
            if _backend_failed(error):
                bulkhead.record_failure(probes, type(error).__name__)
            else:  # the caller's mistake says nothing about the backend
                bulkhead.release(probes)
            # An LLM that wrote off-schema output may write a valid one next time: retried
            # like a backend failure, sampling a little (greedy decoding would repeat it).
            regenerate = isinstance(error, InvalidOutput) and call.spec.generate is not None
            # No retry into a breaker our own failures just opened: the record keeps saying
            # what failed, not "circuit open".
            if (not (error.retryable or regenerate) or attempt >= self.retry.max_attempts
                    or bulkhead.state is BreakerState.OPEN or not self.budget.try_spend()):
                raise error
            if regenerate and call.payload is not None:
                call.payload["temperature"] = max(float(call.payload.get("temperature", 0.0)),
                                                  _RESAMPLE_TEMPERATURE)
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
        bulkhead = self.breakers.bulkhead(target.label, target.breaker_model, call.tenant)
        probes = bulkhead.acquire()
        call.attempts += 1
        timeout = call.spec.slo.timeout_s
        stream: AsyncIterator[dict[str, Any]] = target.serving.stream(
            target.model, call.payload or {}, timeout=timeout)
        generation = call.spec.generate is not None
        text: list[str] = []
        reported: Usage | None = None
        try:
            try:
                async for chunk in stream:
                    if generation:
                        delta = chunk.get("text")
                        if isinstance(delta, str):
                            text.append(delta)
                        elif "usage" in chunk:
                            reported = usage_of_chunk(chunk)
                    call.chunks += 1
                    await call.emit(chunk)
            finally:  # a consumer that left early must not leave the backend's stream open
                close: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
                if generation:  # what was generated is charged, also when the stream broke
                    call.usage = reported or Usage.of_tokens(
                        call.prompt_tokens, len(text), estimated=True)
                    call.cost = (call.price or call.spec.price).cost(call.usage)
        except MeshError as exc:  # CallCancelled too: the consumer left, not the backend
            if _backend_failed(exc):
                bulkhead.record_failure(probes, type(exc).__name__)
            else:
                bulkhead.release(probes)
            raise
        except Exception as exc:
            bulkhead.record_failure(probes, type(exc).__name__)
            raise BackendUnavailable(f"{target.label} failed while streaming: "
                                     f"{type(exc).__name__}") from exc
        except BaseException:  # cancelled: nothing learnt about the backend
            bulkhead.release(probes)
            raise
        bulkhead.record_success()
        if generation:  # the assembled answer is validated and recorded like invoke's
            joined = "".join(text)
            structured = bool((call.payload or {}).get("structured"))
            self._accept(call, Prediction(parse_structured(joined) if structured
                                          else {"text": joined}, usage=call.usage))
            return
        call.usage = Usage(calls=1)
        call.cost = (call.price or call.spec.price).cost(call.usage)

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
        call.cost = (call.price or spec.price).cost(prediction.usage)


def _backend_failed(error: MeshError) -> bool:
    """Whether ``error`` counts against the backend's breaker: backend trouble, not the
    caller's own mistakes nor a breaker that was already open."""
    return isinstance(error, FALLBACK_ON) and not isinstance(error, CircuitOpen)

