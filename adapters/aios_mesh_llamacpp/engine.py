"""One llama.cpp model in this process, driven from one worker thread.

A ``llama_cpp.Llama`` context is not thread-safe and generates one sequence at a time, so the
engine owns a single-thread executor: every load and generation runs there, in order, and the
event loop only waits on futures. A generation is watched between tokens (:class:`Watch`):
the caller that leaves or runs out of time sets the watch, and the worker stops at the next
token instead of finishing ``max_tokens`` for nobody.

Tokenising is read-only on the model's vocabulary (thread-safe in llama.cpp), so counting a
prompt does not queue behind a running generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar, cast

import llama_cpp
from llama_cpp import llama_chat_format

from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    CallCancelled,
    ConfigError,
    ContextWindowExceeded,
    InvalidInput,
    MeshError,
)
from aios_mesh.generation.wire import final_chunk, stream_delta
from aios_mesh.ports.serving import Usage

__all__ = ["CHAT_FORMATS", "Interrupted", "LlamaEngine", "Watch"]

_T = TypeVar("_T")

#: The chat formats the engine can count prompts for exactly: llama-cpp-python's own
#: formatters, the same functions its chat handlers render with.
CHAT_FORMATS: Final[Mapping[str, llama_chat_format.ChatFormatter]] = {
    "gemma": llama_chat_format.format_gemma,
    "chatml": llama_chat_format.format_chatml,
    "llama-2": llama_chat_format.format_llama2,
    "llama-3": llama_chat_format.format_llama3,
    "mistral-instruct": llama_chat_format.format_mistral_instruct,
    "qwen": llama_chat_format.format_qwen,
    "zephyr": llama_chat_format.format_zephyr,
}
#: Formats whose template has no system turn and silently drops system messages; the engine
#: puts the system text before the first user message instead (as Gemma's own template does).
_NO_SYSTEM_TURN: Final = frozenset({"gemma"})

_log = logging.getLogger("aios_mesh.llamacpp")
# llama.cpp's C library logs to stderr on its own, and llama-cpp-python prints some of it
# whatever `verbose` says ("using full-size SWA cache" at error level on every load): its
# lines go to this logger at debug level instead. (llama.cpp's levels say little: routine
# lines come as warnings and errors; a real failure reaches us as an exception.)


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
def _llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    if _log.isEnabledFor(logging.DEBUG):  # most runs: not even decoded
        _log.debug("%s", text.decode("utf-8", "replace").rstrip())


def _route_llama_logs() -> None:
    """Send llama.cpp's log lines to :data:`_log` (process-wide; set before each load so a
    library that set its own callback since does not print again)."""
    llama_cpp.llama_log_set(_llama_log, ctypes.c_void_p(0))


@dataclass(slots=True, eq=False)
class Watch:
    """What the worker checks between tokens, and what it counts for usage.

    ``sampled`` is every token the model sampled (an end-of-generation token included);
    ``ended`` says the last one was such a token, which is not part of the completion.
    """

    stop: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None  # time.monotonic() value
    sampled: int = 0
    ended: bool = False

    @classmethod
    def within(cls, timeout: float | None) -> Watch:
        """A watch whose deadline is ``timeout`` seconds from now (None: no deadline)."""
        return cls(deadline=None if timeout is None else time.monotonic() + timeout)

    @property
    def completion_tokens(self) -> int:
        """Tokens the completion holds (the end-of-generation token is not one)."""
        return self.sampled - (1 if self.ended else 0)


class Interrupted(Exception):
    """Raised inside the worker when a watch says stop; ``reason`` is ``cancelled`` or
    ``deadline``. Never leaves the engine: :meth:`LlamaEngine.translate` types it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _WatchedLlama(llama_cpp.Llama):
    """``Llama`` whose token loop reports to the current :class:`Watch`: it counts what was
    sampled and stops between tokens when asked. ``generate`` is the public per-token
    generator both the streamed and the whole completion run on."""

    watch: Watch | None = None

    def generate(self, tokens: Sequence[int], *args: Any,
                 **kwargs: Any) -> Generator[int, Sequence[int] | None, None]:
        watch = self.watch
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        for token in super().generate(tokens, *args, **kwargs):
            if watch is not None:
                watch.sampled += 1
                watch.ended = bool(vocab and llama_cpp.llama_vocab_is_eog(vocab, token))
                if watch.stop.is_set():
                    raise Interrupted("cancelled")
                if watch.deadline is not None and time.monotonic() > watch.deadline:
                    raise Interrupted("deadline")
            yield token


class LlamaEngine:
    """A GGUF model loaded on first use, generating one request at a time.

    Args:
        model: the ``.gguf`` file, or a function that finds (or assembles) it: called in the
            worker thread on first use, so a slow assembly never blocks the event loop.
        n_ctx: the context window in tokens.
        threads: CPU threads for llama.cpp (None: its default).
        chat_format: a key of :data:`CHAT_FORMATS`.
    """

    def __init__(self, model: Path | Callable[[], Path], *, n_ctx: int, threads: int | None,
                 chat_format: str) -> None:
        if chat_format not in CHAT_FORMATS:
            raise ConfigError(f"chat format {chat_format!r} is not one the engine can count",
                              hint=f"use one of: {', '.join(CHAT_FORMATS)}")
        self._model = model
        self.n_ctx = n_ctx
        self.threads = threads
        self.chat_format = chat_format
        self._formatter = CHAT_FORMATS[chat_format]
        self._llama: _WatchedLlama | None = None
        self._load_lock = threading.Lock()
        self._busy = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._running: set[Watch] = set()
        #: generations stopped between tokens because their watch said so
        self.interrupted = 0

    # -- the worker ----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A generation is running in the worker right now."""
        return self._busy.locked()

    def submit(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Run ``fn(*args)`` in the engine's worker thread (after what is queued before it)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def llama(self) -> _WatchedLlama:
        """The loaded model (loaded now, in the calling thread, if it was not yet)."""
        found = self._llama
        if found is not None:
            return found
        with self._load_lock:
            if self._llama is None:
                path = self._model if isinstance(self._model, Path) else self._model()
                if not path.is_file():
                    raise ConfigError(f"no model file at {path}",
                                      hint="point llamacpp:///PATH at a .gguf file, or use "
                                           "llamacpp://gemma3-270m")
                _route_llama_logs()
                try:
                    self._llama = _WatchedLlama(
                        model_path=str(path), n_ctx=self.n_ctx,
                        n_threads=self.threads, chat_format=self.chat_format, verbose=False)
                except (ValueError, RuntimeError, OSError) as exc:
                    raise BackendUnavailable(
                        f"llama.cpp could not load {path.name}: "
                        f"{type(exc).__name__}",
                        hint="check that the file is a GGUF model llama.cpp supports and "
                             "that there is memory for n_ctx") from exc
            return self._llama

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._llama is not None

    def close(self) -> None:
        """Stop what runs (at its next token), drop what queues, free the model. A later
        call starts a new worker and loads the model again."""
        for watch in list(self._running):
            watch.stop.set()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()

    # -- prompts -------------------------------------------------------------------------------

    def messages(self, messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
        """The messages as the chat format can take them (system text folded into the first
        user message where the format has no system turn)."""
        out = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self.chat_format not in _NO_SYSTEM_TURN:
            return out
        system = "\n\n".join(m["content"] for m in out if m["role"] == "system")
        rest = [m for m in out if m["role"] != "system"]
        if system:
            first = next((m for m in rest if m["role"] == "user"), None)
            if first is None:
                rest.insert(0, {"role": "user", "content": system})
            else:
                first["content"] = f"{system}\n\n{first['content']}"
        return rest

    def count_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        """Prompt tokens ``messages`` make, rendered and tokenised exactly as the chat
        handler will (the model must be loaded)."""
        # llama's formatters are typed for its TypedDict messages; ours have the same shape
        rendered = self._formatter(messages=self.messages(messages))  # type: ignore[arg-type]
        return len(self.llama().tokenize(rendered.prompt.encode("utf-8"),
                                         add_bos=not rendered.added_special, special=True))

    # -- generating (in the worker) ------------------------------------------------------------

    @contextlib.contextmanager
    def _generating(self, kwargs: dict[str, Any],
                    watch: Watch) -> Iterator[tuple[_WatchedLlama, int]]:
        """One generation at a time: the model and the prompt's token count, the watch armed
        while the block runs and disarmed after it, however it ends."""
        with self._busy:
            llama, prompt = self._prepare(kwargs, watch)
            try:
                yield llama, prompt
            except Interrupted:
                self.interrupted += 1
                raise
            finally:
                llama.watch = None
                self._running.discard(watch)

    def complete(self, kwargs: dict[str, Any], watch: Watch) -> dict[str, Any]:
        """One whole chat completion (llama's own answer, usage included)."""
        with self._generating(kwargs, watch) as (llama, _):
            answer = llama.create_chat_completion(**kwargs, stream=False)
        assert isinstance(answer, dict)
        return dict(answer)

    def stream(self, kwargs: dict[str, Any], watch: Watch,
               emit: Callable[[dict[str, Any]], bool]) -> None:
        """Stream a chat completion: ``emit({"text": delta})`` per piece, then
        :func:`~aios_mesh.generation.wire.final_chunk`; an error is emitted as
        ``{"error": MeshError}``. ``emit`` returns False once nobody listens."""
        try:
            finish: str | None = None
            with self._generating(kwargs, watch) as (llama, prompt):
                chunks = cast(Iterator[dict[str, Any]],
                              llama.create_chat_completion(**kwargs, stream=True))
                for chunk in chunks:
                    choices = chunk.get("choices") or ()
                    finish = (choices[0].get("finish_reason") if choices else None) or finish
                    content = stream_delta(chunk)
                    if content and not emit({"text": content}):
                        watch.stop.set()
            emit(final_chunk(Usage.of_tokens(prompt, watch.completion_tokens), finish))
        except Exception as exc:  # handed to the consumer, typed
            emit({"error": self.translate(exc)})

    def _prepare(self, kwargs: dict[str, Any], watch: Watch) -> tuple[_WatchedLlama, int]:
        """Load, check the request fits the window, arm the watch (under the busy lock);
        the model and the prompt's token count."""
        if watch.stop.is_set():  # the caller left while the request queued
            raise Interrupted("cancelled")
        self._running.add(watch)
        llama = self.llama()
        prompt = self.count_tokens(kwargs["messages"])
        wanted = prompt + int(kwargs["max_tokens"])
        if wanted > self.n_ctx:  # llama would cut max_tokens silently; say it instead
            raise ContextWindowExceeded(
                f"the prompt is {prompt} tokens; with max_tokens={kwargs['max_tokens']} it "
                f"needs {wanted}, over the context window of {self.n_ctx}",
                hint="send a shorter prompt, lower max_tokens, or raise ?n_ctx=",
                prompt_tokens=prompt, max_tokens=kwargs["max_tokens"],
                context_window=self.n_ctx)
        kwargs["messages"] = self.messages(kwargs["messages"])
        llama.watch = watch
        return llama, prompt

    def translate(self, exc: BaseException) -> MeshError:
        """Any failure of a generation as the MeshError a caller sees."""
        if isinstance(exc, MeshError):
            return exc
        if isinstance(exc, Interrupted):
            if exc.reason == "deadline":
                return BackendTimeout("llama.cpp ran past the call's timeout; generation "
                                      "stopped", hint="raise slo.timeout_s or lower max_tokens")
            return CallCancelled("the caller left; generation stopped",
                                 hint="nothing to do: the engine is free again")
        text = str(exc)
        if isinstance(exc, ValueError) and "context window" in text:
            return ContextWindowExceeded("the prompt does not fit the model's context window",
                                         hint="send a shorter prompt or raise ?n_ctx=")
        if isinstance(exc, ValueError):
            # the request itself (a schema the grammar builder refuses, a bad field): say
            # what kind, never the prompt
            return InvalidInput(f"llama.cpp refused the request: {type(exc).__name__}",
                                hint="check response_format's schema and the request fields")
        return BackendUnavailable(f"llama.cpp failed: {type(exc).__name__}",
                                  hint="see the process log; the call is retried")
