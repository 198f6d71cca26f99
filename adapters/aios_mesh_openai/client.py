"""One Serving adapter for every OpenAI-compatible chat-completions server: llama.cpp's
server, vLLM, Ollama, hosted APIs. Pure httpx (one ``AsyncClient`` per event loop).

URL::

    openai+http://127.0.0.1:8080/v1?model=gemma-3-270m
    openai+https://api.example.com/v1?api_key_env=EXAMPLE_API_KEY

Options: ``model`` (the name the server knows; default: the resolved ModelRef's name),
``api_key_env`` (an environment variable holding the key) or ``api_key_file`` (a file
holding it), ``response_format`` (the structured-output dialect: ``json_schema``, OpenAI's
and vLLM's; ``json_object``, llama-cpp-python's server, which constrains only
``{"type": "json_object", "schema": ...}`` and answers ``json_schema`` with HTTP 500; ``none``
sends no constraint), ``connect_timeout`` (5 s), ``read_timeout`` (120 s; a call's own
timeout wins), ``tokenize`` (``llamacpp``: count prompts with the server's tokenizer, see
:mod:`aios_mesh_openai.tokens`) and, with it, ``context_window``.

The key travels only as ``Authorization: Bearer ...``: it is never in an error, a log line,
``repr()`` or a record.

Errors at the boundary:

==========================================  ==============================================
what happened                               raised
==========================================  ==============================================
connection refused / reset, 5xx, 429, 408   :class:`BackendUnavailable` (retryable)
a stream cut before ``[DONE]``              :class:`BackendUnavailable`
connect / read timeout, 504                 :class:`BackendTimeout` (retryable)
400 / 422 complaining of context length     :class:`ContextWindowExceeded`
other 400 / 422                             :class:`InvalidInput`
401 / 403                                   :class:`BackendUnavailable`, hint about the key
404                                         :class:`NotFound` (the model, or the path)
200 with a body that is no completion       :class:`InvalidOutput`
==========================================  ==============================================
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final

import httpx

from aios_mesh.backends import BackendURL
from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextWindowExceeded,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.generation.tokens import estimate_tokens
from aios_mesh.generation.wire import (
    completion_to_prediction,
    final_chunk,
    json_object_format,
    stream_delta,
    usage_of,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.http_pool import PerLoop
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import PerItemServing, Prediction, Usage
from aios_mesh_openai.sse import DONE, sse_data

__all__ = ["DIALECTS", "OpenAIServing", "read_api_key"]

_SCHEMES: Final = ("openai+http", "openai+https")
_OPTIONS: Final = frozenset({"model", "api_key_env", "api_key_file", "response_format",
                             "connect_timeout", "read_timeout", "tokenize", "context_window"})
#: Structured-output dialects (``?response_format=``).
DIALECTS: Final = ("json_schema", "json_object", "none")
_CONTEXT_WORDS: Final = ("length", "window", "exceed", "too long", "maximum")


def read_api_key(url: BackendURL, base_dir: Path) -> str | None:
    """The key ``api_key_env`` or ``api_key_file`` names (None when neither is set); a
    :class:`ConfigError` that names the variable or file, never the value."""
    env = url.option("api_key_env")
    path = url.path_option("api_key_file", base_dir)
    if env and path:
        raise ConfigError(f"{url.redacted()} sets both api_key_env and api_key_file",
                          hint="keep one of them")
    if env:
        key = os.environ.get(env, "").strip()
        if not key:
            raise ConfigError(f"the environment variable {env} (api_key_env) is not set",
                              hint=f"export {env}=... before starting, or use api_key_file")
        return key
    if path:
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the API key file {path} (api_key_file): "
                              f"{type(exc).__name__}",
                              hint="point api_key_file at a readable file holding the key"
                              ) from exc
        if not key:
            raise ConfigError(f"the API key file {path} is empty",
                              hint="write the key into it (one line)")
        return key
    return None


class OpenAIServing(PerItemServing):
    """Chat completions over HTTP (``POST {base}/chat/completions``), streamed or not.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8080/v1``.
        model: the model name sent in every request (None: the ModelRef's name).
        api_key: sent as a bearer token.
        dialect: a value of :data:`DIALECTS`.
        connect_timeout / read_timeout: seconds.
        transport: an httpx transport (the test seam of ``httpx.AsyncClient``).
    """

    features: frozenset[Feature] = frozenset({Feature.GENERATION, Feature.STREAMING,
                                              Feature.ASYNC_NATIVE})

    def __init__(self, base_url: str, *, model: str | None = None, api_key: str | None = None,
                 dialect: str = "json_schema", connect_timeout: float = 5.0,
                 read_timeout: float = 120.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if dialect not in DIALECTS:
            raise ConfigError(f"response_format={dialect!r} is not a dialect",
                              hint=f"use one of: {', '.join(DIALECTS)}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.dialect = dialect
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._api_key = api_key
        self._transport = transport
        self._clients: PerLoop[httpx.AsyncClient] = PerLoop(self._new_client)

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> OpenAIServing:
        """Build from ``openai+http://host:port/v1?model=...`` (keywords win; ``transport=``
        too). With ``tokenize=llamacpp`` the adapter is a
        :class:`~aios_mesh_openai.tokens.CountingOpenAIServing`."""
        if url.scheme not in _SCHEMES:
            raise ConfigError(f"OpenAIServing cannot serve scheme {url.scheme!r}",
                              hint=f"use one of: {', '.join(_SCHEMES)}")
        transport = options.pop("transport", None)
        url = url.with_options(options)
        url.check_options(_OPTIONS, what="OpenAI-compatible")
        if url.username or url.password:
            raise ConfigError(f"{url.redacted()} carries credentials in the URL",
                              hint="give the key with api_key_env=VAR or api_key_file=PATH")
        base = f"{url.driver}://{url.address}{url.path.rstrip('/')}"
        kwargs: dict[str, Any] = {
            "model": url.option("model"), "api_key": read_api_key(url, base_dir),
            "dialect": url.choice_option("response_format", DIALECTS, "json_schema"),
            "connect_timeout": url.seconds_option("connect_timeout", 5.0, min=0.001),
            "read_timeout": url.seconds_option("read_timeout", 120.0, min=0.001),
            "transport": transport}
        tokenize = url.choice_option("tokenize", ("none", "llamacpp"), "none")
        window = url.int_option("context_window", min=16)
        if tokenize == "none":
            if window is not None:
                raise ConfigError(f"{url.redacted()}: context_window needs tokenize=llamacpp",
                                  hint="set generate.context_window on the capability, or "
                                       "add tokenize=llamacpp for a llama.cpp server")
            return cls(base, **kwargs)
        from aios_mesh_openai.tokens import CountingOpenAIServing, LlamaCppTokenizer

        return CountingOpenAIServing(base, counter=LlamaCppTokenizer(context_window=window),
                                     **kwargs)

    def __repr__(self) -> str:
        key = ", api_key=***" if self._api_key else ""
        return f"{type(self).__name__}({self.base_url!r}, model={self.model!r}{key})"

    # -- plumbing ------------------------------------------------------------------------------

    def client(self) -> httpx.AsyncClient:
        """This event loop's client (the mesh's sync facade and ``asyncio.run`` callers run
        on different loops; a client's connections belong to one)."""
        return self._clients.get()

    def _new_client(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return httpx.AsyncClient(
            transport=self._transport, headers=headers,
            timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout))

    def _timeout(self, timeout: float | None) -> httpx.Timeout:
        read = timeout if timeout is not None else self.read_timeout
        return httpx.Timeout(read, connect=min(self.connect_timeout, read))

    def body(self, model: ModelRef, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The chat-completions body for ``payload`` (a GenerationRequest)."""
        body = {k: v for k, v in payload.items() if k != "structured"}
        body["model"] = self.model or model.name
        fmt = body.pop("response_format", None)
        if fmt is not None and self.dialect != "none":
            body["response_format"] = fmt if self.dialect == "json_schema" \
                else json_object_format(fmt)
        return body

    def transport_error(self, exc: httpx.TransportError) -> MeshError:
        where = f"{self.base_url}"
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(f"{where} did not answer in time ({type(exc).__name__})",
                                  hint="raise the capability's slo.timeout_s or ?read_timeout=,"
                                       " or check the server's load")
        return BackendUnavailable(f"{where} is unreachable or broke the connection "
                                  f"({type(exc).__name__})",
                                  hint="check that the server runs at that address; the mesh "
                                       "retries and its breaker opens on repeats")

    def status_error(self, status: int, content: bytes, what: str) -> MeshError:
        """The MeshError for an HTTP error answer. The server's own text is classified, not
        quoted: a validation error may echo the prompt."""
        code = _error_code(content)
        said = f"{what}: HTTP {status}" + (f" ({code})" if code else "")
        lowered = content[:2000].decode("utf-8", "replace").lower()
        if status in (400, 413, 422):
            if code == "context_length_exceeded" or (
                    "context" in lowered and any(w in lowered for w in _CONTEXT_WORDS)):
                return ContextWindowExceeded(said + ": the prompt does not fit the model's "
                                             "context window",
                                             hint="send a shorter input or lower max_tokens")
            return InvalidInput(said, hint="the server refused the request; check the "
                                           "model's limits and the response_format dialect "
                                           "(?response_format=json_object for llama.cpp)")
        if status in (401, 403):
            return BackendUnavailable(said + ": the server refused the credentials",
                                      hint="check the key that api_key_env / api_key_file "
                                           "names (the key is never shown)")
        if status == 404:
            return NotFound(said + ": no such model or path",
                            hint="check ?model= (the name the server serves) and that the "
                                 "URL ends in the API root, e.g. /v1")
        if status == 504:
            return BackendTimeout(said, hint="the server or its gateway timed out")
        return BackendUnavailable(said, hint="see the server's log; the mesh retries and "
                                             "its breaker opens on repeats")

    # -- the port ------------------------------------------------------------------------------

    async def infer(self, model: ModelRef, payload: Mapping[str, Any], *,
                    timeout: float | None = None) -> Prediction:
        """One completion; the usage is the server's."""
        what = f"chat completion on {self.base_url}"
        try:
            response = await self.client().post(f"{self.base_url}/chat/completions",
                                                json=self.body(model, payload),
                                                timeout=self._timeout(timeout))
        except httpx.TransportError as exc:
            raise self.transport_error(exc) from exc
        if response.status_code != 200:
            raise self.status_error(response.status_code, response.content, what)
        try:
            doc = response.json()
        except ValueError:
            raise InvalidOutput(f"{what}: the answer is not JSON",
                                hint="check that the URL is an OpenAI-compatible API root"
                                ) from None
        if not isinstance(doc, dict):
            raise InvalidOutput(f"{what}: the answer is no object",
                                hint="check that the URL is an OpenAI-compatible API root")
        return completion_to_prediction(doc, structured=bool(payload.get("structured")))

    def stream(self, model: ModelRef, payload: Mapping[str, Any], *,
               timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """``{"text": delta}`` chunks, then ``{"usage": ..., "finish_reason": ...}``. Closing
        the iterator closes the HTTP response, and the server stops generating."""
        body = self.body(model, payload)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        return self._stream(body, payload, model, timeout)

    async def _stream(self, body: dict[str, Any], payload: Mapping[str, Any],
                      model: ModelRef, timeout: float | None) -> AsyncIterator[dict[str, Any]]:
        what = f"streamed chat completion on {self.base_url}"
        client = self.client()
        request = client.build_request("POST", f"{self.base_url}/chat/completions", json=body,
                                       timeout=self._timeout(timeout))
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self.transport_error(exc) from exc
        try:
            if response.status_code != 200:
                raise self.status_error(response.status_code, await response.aread(), what)
            pieces = 0
            finish: str | None = None
            reported = None
            ended = False
            try:
                async for data in sse_data(response.aiter_lines()):
                    if data == DONE:
                        ended = True
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise InvalidOutput(f"{what}: an event is not JSON",
                                            hint="check that the server speaks OpenAI's "
                                                 "streaming format") from None
                    if not isinstance(chunk, dict):
                        continue
                    reported = usage_of(chunk.get("usage")) or reported
                    choices = chunk.get("choices") or ()
                    if choices and isinstance(choices[0], dict):
                        finish = choices[0].get("finish_reason") or finish
                    delta = stream_delta(chunk)
                    if delta:
                        pieces += 1
                        yield {"text": delta}
            except httpx.TransportError as exc:
                raise self.transport_error(exc) from exc
            if not ended:
                raise BackendUnavailable(f"{what}: the stream ended before [DONE]",
                                         hint="the server stopped mid-generation; see its log")
            # the server reports none: a streamed piece is about one token
            yield final_chunk(reported or Usage.of_tokens(
                await self.prompt_tokens(model, payload), pieces, estimated=True), finish)
        finally:
            await response.aclose()

    async def prompt_tokens(self, model: ModelRef, payload: Mapping[str, Any]) -> int:
        """Prompt tokens for a usage the server did not report (an estimate here)."""
        return estimate_tokens(payload.get("messages") or [])

    async def health(self) -> None:
        """``GET {base}/models`` with the key; :class:`BackendUnavailable` unless 200."""
        try:
            response = await self.client().get(f"{self.base_url}/models",
                                               timeout=self._timeout(5.0))
        except httpx.TransportError as exc:
            raise self.transport_error(exc) from exc
        if response.status_code != 200:
            error = self.status_error(response.status_code, response.content,
                                      f"models of {self.base_url}")
            raise BackendUnavailable(error.message, hint=error.hint)

    async def aclose(self) -> None:
        """Close this loop's client (others on their own loops); idempotent."""
        await self._clients.aclose()


def _error_code(content: bytes) -> str | None:
    """OpenAI's ``error.code`` / ``error.type`` when it is a short identifier."""
    try:
        doc = json.loads(content)
    except ValueError:
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return None
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and value.replace("_", "").isalnum() and len(value) < 64:
            return value
    return None
