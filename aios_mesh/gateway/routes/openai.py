"""The OpenAI-compatible face: ``GET /v1/models``, ``POST /v1/chat/completions`` (one answer
or Server-Sent Events) and ``POST /v1/embeddings``, so the official ``openai`` SDK,
LangChain's ``ChatOpenAI`` and LlamaIndex's ``OpenAILike`` call capabilities unchanged.

Why a face and not a proxy: every request is a capability call for the credential's tenant
(the API key is what the SDK sends as its ``api_key``), so it runs the whole pipeline —
policy, redaction, quota, prompt, scheduling, record — and leaves one decision record, like
``/v1/capabilities/{name}/invoke``.

``model`` names a capability (``name`` or ``name@version``):

* a **chat model** is a generation capability whose input is
  :class:`~aios_mesh.generation.ChatInput`; its answer is the
  :class:`~aios_mesh.generation.TextOutput` text, or the structured output as JSON text;
* an **embedding model** is a capability whose input has a ``text: str`` field (every other
  field optional) and whose output has an ``embedding`` field (a list of floats); each string
  of ``input`` is one call with its own record: one string is an interactive call, a list
  runs as bulk rows, concurrently (the fair scheduler serves them after interactive calls).

What the body may change: ``max_tokens`` (or ``max_completion_tokens``) may lower the
capability's declared ``max_tokens``, never raise it (a higher one runs under the declared
limit), and ``temperature`` replaces the declared one; both travel as call attributes (see
:data:`aios_mesh.pipeline.prompt.LIMIT_ATTRIBUTES`). ``n`` above 1, ``tools`` and
``functions`` are refused (400); other OpenAI parameters are ignored.

Errors are OpenAI's shape, ``{"error": {"message", "type", "code", "param"}}`` (plus the
mesh's ``hint`` and, when the call was recorded, its ``record_id``), with the status the
problem documents use, except that a bad input is 400 (OpenAI's status) instead of 422. The
message and hint pass the scrubber, as problem documents do.
"""

from __future__ import annotations

import base64
import math
import struct
import time
import typing
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal, cast

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import (
    ContextWindowExceeded,
    InvalidInput,
    MeshError,
    NotFound,
    Overloaded,
    QuotaExceeded,
)
from aios_mesh.gateway.app import Gateway, UnsupportedMediaType
from aios_mesh.gateway.identity import Principal, Unauthenticated
from aios_mesh.gateway.problems import status_for
from aios_mesh.gateway.routes.calls import EventStream
from aios_mesh.generation.messages import ChatInput, TextOutput
from aios_mesh.record import DecisionRecord, new_record_id
from aios_mesh.redaction.scrub import default_scrubber
from aios_mesh.result import Result

__all__ = ["OWNED_BY", "RECORD_ID_HEADER", "is_chat_model", "is_embedding_model",
           "openai_error", "routes"]

#: The ``owned_by`` of every listed model.
OWNED_BY = "aios-mesh"
#: The header a chat completion or embedding answer names its decision record in (for an
#: embedding request of several inputs: the records, comma-separated, in input order).
RECORD_ID_HEADER = "x-aios-record-id"
#: The header a chat completion sent to human review names the review item in.
REVIEW_ID_HEADER = "x-aios-review-id"


# ------------------------------------------------------------------ which capabilities
def is_chat_model(spec: CapabilitySpec) -> bool:
    """A generation whose input is the caller's conversation (``/v1/chat/completions``)."""
    return spec.generate is not None and issubclass(spec.input, ChatInput)


def is_embedding_model(spec: CapabilitySpec) -> bool:
    """A capability that takes ``text: str`` (nothing else required) and answers an
    ``embedding`` (``/v1/embeddings``)."""
    fields = spec.input.model_fields
    text = fields.get("text")
    if text is None or text.annotation is not str or "embedding" not in spec.output.model_fields:
        return False
    return all(not f.is_required() for name, f in fields.items() if name != "text")


# ------------------------------------------------------------------ errors
def _error_type(status: int) -> str:
    return {400: "invalid_request_error", 401: "authentication_error",
            403: "permission_error", 404: "invalid_request_error", 413: "invalid_request_error",
            415: "invalid_request_error", 429: "rate_limit_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error")


def _status(error: MeshError) -> int:
    if isinstance(error, UnsupportedMediaType):
        return 415
    status = status_for(error)
    return 400 if status == 422 else status  # OpenAI answers a bad request 400, never 422


def openai_error(error: MeshError, *, param: str | None = None) -> Response:
    """``error`` as OpenAI's error JSON with its HTTP status (``Retry-After`` on 429/503
    when the error knows when to retry, ``WWW-Authenticate`` on 401)."""
    status = _status(error)
    headers: dict[str, str] = {}
    retry_after = getattr(error, "retry_after_s", None)
    if isinstance(error, QuotaExceeded | Overloaded) and isinstance(retry_after, int | float):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="aios-mesh"'
    if error.record_id:
        headers[RECORD_ID_HEADER] = error.record_id
    return Response(orjson.dumps({"error": _error_body(error, param)}), status_code=status,
                    media_type="application/json", headers=headers)


def _error_body(error: MeshError, param: str | None = None) -> dict[str, Any]:
    """OpenAI's ``error`` object for ``error``: message and hint scrubbed, the mesh's code
    (``context_length_exceeded`` in OpenAI's words), the record id when it was recorded."""
    scrub = default_scrubber().text
    code = "context_length_exceeded" if isinstance(error, ContextWindowExceeded) else error.code
    body: dict[str, Any] = {"message": scrub(error.message), "type": _error_type(_status(error)),
                            "code": code, "param": param or getattr(error, "param", None)}
    if error.hint:
        body["hint"] = scrub(error.hint)
    if error.record_id:
        body["record_id"] = error.record_id
    return body


class _BadRequest(InvalidInput):
    """The body is not a request this endpoint takes; ``param`` names the field."""

    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None,
                 hint: str | None = None) -> None:
        self.param = param
        super().__init__(message, hint=hint or "see docs/guides/openai-compatible.md")


class _ModelNotFound(NotFound):
    code = "model_not_found"


# ------------------------------------------------------------------ request bodies
class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None

    def as_chat(self, index: int) -> dict[str, str]:
        """``{"role", "content"}`` as :class:`ChatMessage` takes it: a ``developer`` message
        is a system message, text parts are joined; anything but text is refused."""
        content = self.content
        if content is None:
            raise _BadRequest(f"messages[{index}] has no content (tool calls are not "
                              "supported)", param=f"messages[{index}].content")
        if not isinstance(content, str):
            if any(p.type != "text" or p.text is None for p in content):
                raise _BadRequest(f"messages[{index}] has a part that is not text",
                                  param=f"messages[{index}].content",
                                  hint="send text parts only")
            content = "".join(cast(str, p.text) for p in content)
        return {"role": "system" if self.role == "developer" else self.role,
                "content": content}


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    n: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    functions: list[Any] | None = None


class _EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)


_Body = typing.TypeVar("_Body", bound=BaseModel)


def _parse(model: type[_Body], doc: Any) -> _Body:
    """``doc`` as ``model``; a bad one is a 400 naming the first bad field (never its
    value: it may hold what the caller wrote)."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise _BadRequest(f"{where}: {first['msg']}"
                          + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
                          param=where) from None


# ------------------------------------------------------------------ answers
def _json(body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def _usage(record: DecisionRecord) -> dict[str, int]:
    usage = record.usage
    prompt = int(usage.get("input_tokens", usage.get("tokens", 0)) or 0)
    completion = int(usage.get("output_tokens", 0) or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _content(output: Any) -> str | None:
    if output is None:
        return None
    if isinstance(output, TextOutput):
        return output.text
    if isinstance(output, BaseModel):
        return output.model_dump_json()
    return orjson.dumps(output).decode()


def _finish_reason(spec: CapabilitySpec, asked: int | None, usage: Mapping[str, int]) -> str:
    """``length`` when the generation used all of its ``max_tokens`` (the declared one, or
    the lower one the body asked for), else ``stop``."""
    if spec.generate is None:
        return "stop"
    limit = min(asked or spec.generate.max_tokens, spec.generate.max_tokens)
    return "length" if usage["completion_tokens"] >= limit else "stop"


def _chunk(ident: str, created: int, model: str, delta: Mapping[str, Any],
           finish_reason: str | None = None, **extra: Any) -> bytes:
    body = {"id": ident, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}], **extra}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _embedding(vector: Sequence[float], encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, what OpenAI sends and its SDK decodes
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return [float(x) for x in vector]


# ------------------------------------------------------------------ routes
def routes(gateway: Gateway) -> Sequence[BaseRoute]:
    """The OpenAI-compatible routes."""
    mesh = gateway.mesh
    metrics = gateway.metrics

    def observe(name: str, tenant: str, mode: str, started: float, *,
                record: DecisionRecord | None = None, error: MeshError | None = None,
                cancelled: bool = False) -> None:
        seconds = time.perf_counter() - started
        if record is not None:
            metrics.observe(capability=name, tenant=tenant, mode=mode, outcome=record.outcome,
                            seconds=seconds, cost=record.cost)
        elif error is not None:
            metrics.observe(capability=name, tenant=tenant, mode=mode, outcome=error.outcome,
                            seconds=seconds, error_code=error.code)
        elif cancelled:
            metrics.observe(capability=name, tenant=tenant, mode=mode, outcome="cancelled",
                            seconds=seconds, error_code="call_cancelled")

    def capability(principal: Principal, model: str) -> CapabilitySpec:
        """The capability ``model`` names: 404 if there is none (or its version differs),
        403 if the credential's scopes leave it out."""
        name, _, version = model.partition("@")
        found = mesh.catalog.get(name) if name in mesh.catalog else None
        if found is None or (version and found.version != version):
            raise _ModelNotFound(f"the model {model!r} does not exist",
                                 hint="GET /v1/models lists the models this key may use")
        principal.require_call(name)
        return found

    def listed(principal: Principal, spec: CapabilitySpec) -> bool:
        return principal.may_call(spec.name) and (is_chat_model(spec)
                                                   or is_embedding_model(spec))

    def model_entry(spec: CapabilitySpec) -> dict[str, Any]:
        # A capability has no creation time; 0 says "unknown" in an int field.
        return {"id": spec.name, "object": "model", "created": 0, "owned_by": OWNED_BY}

    async def list_models(request: Request) -> Response:
        try:
            principal = await gateway.principal(request)
        except MeshError as exc:
            return openai_error(exc)
        data = [model_entry(s) for s in mesh.catalog if listed(principal, s)]
        return _json({"object": "list", "data": data})

    async def one_model(request: Request) -> Response:
        try:
            principal = await gateway.principal(request)
            model = request.path_params["model"]
            name = model.partition("@")[0]
            spec = mesh.catalog.get(name) if name in mesh.catalog else None
            if spec is None or not listed(principal, spec):  # out of scope reads as absent
                raise _ModelNotFound(f"the model {model!r} does not exist",
                                     hint="GET /v1/models lists the models this key may use")
        except MeshError as exc:
            return openai_error(exc, param="model")
        return _json(model_entry(spec))

    async def chat_completions(request: Request) -> Response:
        started = time.perf_counter()
        name, tenant, mode = "(unknown)", "", "invoke"
        try:
            principal = await gateway.principal(request)
            tenant = principal.tenant
            body = _parse(_ChatRequest, await gateway.json_body(request))
            spec = capability(principal, body.model)
            name = spec.name
            if not is_chat_model(spec):
                raise _BadRequest(f"{body.model!r} is not a chat model", param="model",
                                  hint="a chat model is a generation capability whose input "
                                       "is ChatInput; GET /v1/models lists them")
            if (body.n or 1) > 1:
                raise _BadRequest("n above 1 is not supported", param="n")
            if body.tools or body.functions:
                raise _BadRequest("tools and functions are not supported", param="tools",
                                  hint="declare the structure you need as the capability's "
                                       "output model (constrained decoding)")
            payload = {"messages": [m.as_chat(i) for i, m in enumerate(body.messages)]}
            call: dict[str, Any] = {"tenant": tenant, "caller": principal.caller,
                                    "traceparent": _traceparent(request),
                                    "attributes": _limits(body)}
            if body.stream:
                mode = "stream"
                include_usage = body.stream_options is not None \
                    and body.stream_options.include_usage
                return await stream(spec, body.model, payload, call, include_usage,
                                    _asked(body), started)
            result = await mesh.ainvoke(spec.name, payload, **call)
        except MeshError as exc:
            observe(name, tenant, mode, started, error=exc)
            return openai_error(exc)
        record = result.record
        observe(name, tenant, "invoke", started, record=record)
        usage = _usage(record)
        headers = {RECORD_ID_HEADER: record.record_id}
        if result.needs_review:  # held for a human: no content, as a filtered answer
            headers[REVIEW_ID_HEADER] = result.review_id or ""
            finish = "content_filter"
        else:
            finish = _finish_reason(spec, _asked(body), usage)
        return _json({
            "id": f"chatcmpl-{record.record_id}", "object": "chat.completion",
            "created": int(time.time()), "model": body.model, "system_fingerprint": None,
            "choices": [{"index": 0, "logprobs": None, "finish_reason": finish,
                         "message": {"role": "assistant", "content": _content(result.output),
                                     "refusal": None}}],
            "usage": usage}, headers=headers)

    async def stream(spec: CapabilitySpec, model: str, payload: dict[str, Any],
                     call: dict[str, Any], include_usage: bool, asked: int | None,
                     started: float) -> Response:
        results: list[Result[Any]] = []
        record_id = new_record_id()  # named up front: the header and every chunk's id carry it
        chunks = cast(AsyncGenerator[dict[str, Any], None], mesh.stream(
            spec.name, payload, on_result=results.append, record_id=record_id, **call))
        tenant = call["tenant"]
        # The first chunk decides the status: a call refused before it answers is an error
        # response with its status, not a 200 stream that says so.
        try:
            first: dict[str, Any] | None = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except MeshError:
            await chunks.aclose()
            raise
        ident, created = f"chatcmpl-{record_id}", int(time.time())
        usage_extra = {"usage": None} if include_usage else {}

        async def events() -> AsyncGenerator[bytes, None]:
            finish: str | None = None
            try:
                yield _chunk(ident, created, model, {"role": "assistant", "content": ""},
                             **usage_extra)
                pending = [first] if first is not None else []
                while True:
                    chunk = pending.pop() if pending else await anext(chunks, None)
                    if chunk is None:
                        break
                    text = chunk.get("text")
                    if isinstance(text, str):
                        if text:
                            yield _chunk(ident, created, model, {"content": text},
                                         **usage_extra)
                    elif isinstance(chunk.get("finish_reason"), str):
                        finish = chunk["finish_reason"]
            except MeshError as exc:
                observe(spec.name, tenant, "stream", started, error=exc)
                error = {**_error_body(exc), "status": _status(exc)}  # the status it would be
                yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
                return
            except BaseException:  # cancelled or closed: the client went away
                observe(spec.name, tenant, "stream", started, cancelled=True)
                raise
            finally:  # if the client left, closing the stream ends the call as cancelled
                await chunks.aclose()
            record = results[0].record
            observe(spec.name, tenant, "stream", started, record=record)
            usage = _usage(record)
            yield _chunk(ident, created, model, {}, finish or _finish_reason(spec, asked, usage),
                         record_id=record.record_id, **usage_extra)
            if include_usage:
                body = {"id": ident, "object": "chat.completion.chunk", "created": created,
                        "model": model, "system_fingerprint": None, "choices": [],
                        "usage": usage, "record_id": record.record_id}
                yield b"data: " + orjson.dumps(body) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return EventStream(events(), headers={"x-aios-record-id": record_id})

    async def embeddings(request: Request) -> Response:
        started = time.perf_counter()
        name, tenant, mode = "(unknown)", "", "bulk"
        try:
            principal = await gateway.principal(request)
            tenant = principal.tenant
            body = _parse(_EmbeddingRequest, await gateway.json_body(request))
            spec = capability(principal, body.model)
            name = spec.name
            if not is_embedding_model(spec):
                raise _BadRequest(f"{body.model!r} is not an embedding model", param="model",
                                  hint="an embedding model takes text: str and answers an "
                                       "embedding; GET /v1/models lists them")
            texts = [body.input] if isinstance(body.input, str) else body.input
            if len(texts) == 1:  # someone waits on it: an interactive call
                mode = "invoke"
                results = [await mesh.ainvoke(spec.name, {"text": texts[0]}, tenant=tenant,
                                              caller=principal.caller,
                                              traceparent=_traceparent(request))]
            else:  # a batch: bulk rows, concurrently, after interactive calls
                answers = await mesh.ainvoke_many(spec.name, [{"text": t} for t in texts],
                                                  tenant=tenant, caller=principal.caller,
                                                  return_exceptions=True)
                failed = next((a for a in answers if isinstance(a, MeshError)), None)
                if failed is not None:  # all or nothing, as OpenAI answers
                    raise failed
                results = [cast(Result[Any], a) for a in answers]
            data = []
            for index, result in enumerate(results):
                vector = list(getattr(result.output, "embedding", None) or [])
                if body.dimensions is not None and body.dimensions != len(vector):
                    raise _BadRequest(f"{body.model!r} makes {len(vector)}-dimensional "
                                      f"embeddings, not {body.dimensions}",
                                      param="dimensions")
                data.append({"object": "embedding", "index": index,
                             "embedding": _embedding(vector, body.encoding_format)})
        except MeshError as exc:
            observe(name, tenant, mode, started, error=exc)
            return openai_error(exc)
        for result in results:
            observe(name, tenant, mode, started, record=result.record)
        prompt = sum(_usage(r.record)["prompt_tokens"] for r in results)
        return _json({"object": "list", "data": data, "model": body.model,
                      "usage": {"prompt_tokens": prompt, "total_tokens": prompt}},
                     headers={RECORD_ID_HEADER: ",".join(r.record.record_id
                                                         for r in results)})

    return [Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model}", one_model, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"])]


def _asked(body: _ChatRequest) -> int | None:
    return body.max_completion_tokens or body.max_tokens


def _limits(body: _ChatRequest) -> dict[str, Any] | None:
    """The body's own limits as call attributes (the prompt step applies a lower
    ``max_tokens`` than the capability declares, never a higher one, and ``temperature``)."""
    asked = {"max_tokens": _asked(body), "temperature": body.temperature}
    return {k: v for k, v in asked.items() if v is not None} or None


def _traceparent(request: Request) -> Mapping[str, str] | None:
    value = request.headers.get("traceparent")
    return {"traceparent": value} if value else None

