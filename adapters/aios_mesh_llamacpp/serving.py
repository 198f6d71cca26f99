"""The embedded LLM: llama.cpp in this process behind the Serving port.

URL::

    llamacpp://gemma3-270m                      the default model (Gemma 3 270M, Q4_K_M),
                                                assembled once under BASE_DIR/models (on
                                                first use, in the engine's thread)
    llamacpp:///models/my-model.gguf            a GGUF file relative to the config's folder
    llamacpp:////abs/path/my-model.gguf         an absolute path
    ...?n_ctx=2048&threads=2&chat_format=gemma  options (defaults shown; threads: llama.cpp's)

The payload is the pipeline's :data:`~aios_mesh.generation.GenerationRequest`; the engine
serves the one model its URL names, whatever the resolved ModelRef calls it. Structured output
runs under llama.cpp's JSON-schema grammar (the request's ``json_schema`` becomes llama's
``{"type": "json_object", "schema": ...}``), so the answer is the schema's JSON by
construction.

Errors: a prompt that with ``max_tokens`` does not fit ``n_ctx`` →
:class:`ContextWindowExceeded` (before any token); a request llama refuses →
:class:`InvalidInput`; the timeout passing → :class:`BackendTimeout` (the engine stops at the
next token: ``Feature.DEADLINE``); an engine failure → :class:`BackendUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, Self

from aios_mesh.backends import BackendURL
from aios_mesh.errors import BackendTimeout, ConfigError, InvalidInput, MeshError
from aios_mesh.generation.wire import completion_to_prediction, json_object_format
from aios_mesh.ports.base import Feature
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import PerItemServing, Prediction
from aios_mesh_llamacpp.engine import CHAT_FORMATS, LlamaEngine, Watch
from aios_mesh_llamacpp.model import DEFAULT_MODEL, GEMMA_CHAT_FORMAT, gemma_model_path

__all__ = ["LlamaCppServing", "llama_request"]

_OPTIONS: Final = frozenset({"n_ctx", "threads", "chat_format"})
_ROLES: Final = frozenset({"system", "user", "assistant"})
_REQUEST_HINT: Final = "send a GenerationRequest (aios_mesh.generation.wire)"


def llama_request(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A :data:`GenerationRequest` → keyword arguments of ``Llama.create_chat_completion``;
    :class:`InvalidInput` for a payload that is not one."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, Mapping) and m.get("role") in _ROLES
            and isinstance(m.get("content"), str) for m in messages):
        raise InvalidInput("a generation needs 'messages': a non-empty list of "
                           "{'role': system|user|assistant, 'content': str}",
                           hint=_REQUEST_HINT)
    max_tokens = payload.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidInput("'max_tokens' must be a positive integer", hint=_REQUEST_HINT)
    temperature = payload.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) \
            or not math.isfinite(temperature) or not 0 <= temperature <= 2:
        raise InvalidInput("'temperature' must be a number from 0 to 2", hint=_REQUEST_HINT)
    stop = payload.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise InvalidInput("'stop' must be a list of strings", hint=_REQUEST_HINT)
    kwargs: dict[str, Any] = {
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "max_tokens": max_tokens, "temperature": float(temperature), "stop": list(stop)}
    response_format = payload.get("response_format")
    if response_format is not None:
        kwargs["response_format"] = _llama_format(response_format)
    return kwargs


def _llama_format(doc: Any) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` in llama-cpp-python's dialect (``text``: none)."""
    kind = doc.get("type") if isinstance(doc, Mapping) else None
    if kind in ("json_schema", "json_object"):
        return json_object_format(doc)
    if kind == "text":
        return None
    raise InvalidInput(f"response_format type {kind!r} is not one llama.cpp knows",
                       hint="use json_schema, json_object or text")


class LlamaCppServing(PerItemServing):
    """llama.cpp in process (``llama_cpp.Llama``): generation, streaming, token counting.

    The model loads on the first call (about a second for Gemma 3 270M), in the engine's
    worker thread; generations run there one at a time (a llama.cpp context generates one
    sequence), so the event loop never blocks and concurrent calls queue in order. A caller
    that leaves (a closed stream, a cancelled task, a passed timeout) stops its generation
    at the next token.

    It is a :class:`~aios_mesh.generation.TokenCounter`: prompts are counted with the model's
    tokenizer and the chat template the engine renders, so the pipeline checks the context
    window and reserves quota with the exact prompt size.
    """

    features: frozenset[Feature] = frozenset({Feature.GENERATION, Feature.STREAMING,
                                              Feature.DEADLINE})

    def __init__(self, engine: LlamaEngine, *, name: str) -> None:
        self.engine = engine
        self.name = name

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """Build from ``llamacpp://gemma3-270m`` or ``llamacpp:///path/model.gguf`` with
        ``n_ctx``, ``threads`` and ``chat_format`` options (keywords win)."""
        if url.scheme != "llamacpp":
            raise ConfigError(f"LlamaCppServing cannot serve scheme {url.scheme!r}",
                              hint="write llamacpp://gemma3-270m")
        url = url.with_options(options)
        url.check_options(_OPTIONS, what="llama.cpp")
        n_ctx = url.int_option("n_ctx", 2048, min=64, max=1 << 20)
        threads = url.int_option("threads", min=1, max=512)
        chat_format = url.choice_option("chat_format", list(CHAT_FORMATS), GEMMA_CHAT_FORMAT)
        if url.host:
            if url.host != DEFAULT_MODEL:
                raise ConfigError(f"{url.redacted()} names no model llama.cpp knows",
                                  hint=f"write llamacpp://{DEFAULT_MODEL} or "
                                       "llamacpp:///path/to/model.gguf")
            folder = base_dir / "models"
            model: Path | Callable[[], Path] = partial(gemma_model_path, folder)
            name = DEFAULT_MODEL
        else:
            model = url.resolve_path(base_dir)
            name = model.stem
        engine = LlamaEngine(model, n_ctx=n_ctx, threads=threads, chat_format=chat_format)
        return cls(engine, name=name)

    def __repr__(self) -> str:
        return f"LlamaCppServing({self.name!r}, n_ctx={self.engine.n_ctx})"

    @property
    def busy(self) -> bool:
        """A generation runs in the engine now (False again soon after its caller left)."""
        return self.engine.busy

    # -- TokenCounter --------------------------------------------------------------------------

    async def count_tokens(self, model: ModelRef,
                           messages: Sequence[Mapping[str, str]]) -> int:
        """Prompt tokens with the model's tokenizer and chat template (exact)."""
        await self._loaded()
        return self.engine.count_tokens(messages)  # < 1 ms: inline, per CONVENTIONS

    def context_window(self, model: ModelRef) -> int | None:
        """``n_ctx``."""
        return self.engine.n_ctx

    # -- Serving -------------------------------------------------------------------------------

    async def infer(self, model: ModelRef, payload: Mapping[str, Any], *,
                    timeout: float | None = None) -> Prediction:
        """One completion; the usage is llama's own count."""
        kwargs = llama_request(payload)
        watch = Watch.within(timeout)
        future = self.engine.submit(self.engine.complete, kwargs, watch)
        try:
            async with asyncio.timeout(timeout):
                answer = await future
        except TimeoutError:
            watch.stop.set()
            raise BackendTimeout(f"llama.cpp did not answer within {timeout}s",
                                 hint="raise slo.timeout_s or lower max_tokens") from None
        except asyncio.CancelledError:
            watch.stop.set()
            raise
        except Exception as exc:
            raise self.engine.translate(exc) from exc
        return completion_to_prediction(answer, structured=bool(payload.get("structured")))

    def stream(self, model: ModelRef, payload: Mapping[str, Any], *,
               timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """``{"text": delta}`` chunks, then ``{"usage": {"input_tokens", "output_tokens"},
        "finish_reason"}``. Closing the iterator early stops the generation."""
        return self._stream(llama_request(payload), timeout)

    async def _stream(self, kwargs: dict[str, Any],
                      timeout: float | None) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        watch = Watch.within(timeout)

        def emit(item: dict[str, Any]) -> bool:  # in the worker thread
            if watch.stop.is_set():
                return False
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody listens
                return False
            return True

        future = self.engine.submit(self.engine.stream, kwargs, watch, emit)
        future.add_done_callback(_consume)
        try:
            while True:
                try:
                    async with asyncio.timeout_at(None if watch.deadline is None else
                                                  loop.time() + _left(watch)):
                        item = await queue.get()
                except TimeoutError:
                    raise BackendTimeout(f"llama.cpp did not finish within {timeout}s",
                                         hint="raise slo.timeout_s or lower max_tokens"
                                         ) from None
                error = item.get("error")
                if isinstance(error, MeshError):
                    raise error
                yield item
                if "usage" in item:
                    return
        finally:  # done, closed early, cancelled or failed: the worker stops at its next token
            watch.stop.set()
            future.cancel()  # still queued behind another generation: never starts

    async def _loaded(self) -> None:
        if not self.engine.loaded:
            try:
                await self.engine.submit(self.engine.llama)
            except MeshError:
                raise
            except Exception as exc:
                raise self.engine.translate(exc) from exc

    async def health(self) -> None:
        """Load the model if it is not loaded (a real check that the file is a model
        llama.cpp runs); :class:`ConfigError` / :class:`BackendUnavailable` otherwise."""
        await self._loaded()

    async def aclose(self) -> None:
        """Stop running generations, free the worker and the model; idempotent (a later
        call loads the model again)."""
        with contextlib.suppress(RuntimeError):
            await asyncio.to_thread(self.engine.close)


def _left(watch: Watch) -> float:
    assert watch.deadline is not None
    return max(0.0, watch.deadline - time.monotonic())


def _consume(future: asyncio.Future[None]) -> None:
    """The worker hands its errors to the stream's queue; nothing is left on the future."""
    if not future.cancelled():
        future.exception()
