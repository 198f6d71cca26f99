"""The request an LLM serving adapter receives and the answers it turns into predictions.

The pipeline hands a generation's serving adapter ``payload`` = a :data:`GenerationRequest`:
the body of an OpenAI chat-completions request without ``model`` (the adapter adds the
resolved model's name). Every LLM backend we meet speaks or mirrors that format (llama.cpp's
server and in-process engine, vLLM, Ollama, OpenAI), so the request and the parsing of
answers live here once and the adapters only move bytes.

A streamed generation yields ``{"text": delta}`` chunks and ends with one
``{"usage": {...}, "finish_reason": ...}`` chunk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

from pydantic import BaseModel

from aios_mesh.errors import InvalidInput, InvalidOutput
from aios_mesh.ports.serving import Prediction, Usage

__all__ = ["GenerationRequest", "completion_to_prediction", "final_chunk", "json_object_format",
           "response_format", "stream_delta", "usage_of", "usage_of_chunk"]


class GenerationRequest(TypedDict):
    """An OpenAI chat-completions body, less ``model``; ``response_format`` only for
    structured output (``{"type": "json_schema", "json_schema": {"name", "schema",
    "strict"}}``); ``structured`` tells the adapter to parse the answer as JSON."""

    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    stop: NotRequired[list[str]]
    response_format: NotRequired[dict[str, Any]]
    structured: bool


def response_format(output: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` that constrains decoding to ``output``'s JSON schema."""
    return {"type": "json_schema",
            "json_schema": {"name": output.__name__, "schema": output.model_json_schema(),
                            "strict": True}}


def json_object_format(fmt: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI's ``json_schema`` response format in llama-cpp-python's dialect, which
    constrains decoding only for ``{"type": "json_object", "schema": ...}`` (its server
    answers 500 to ``json_schema``); other formats pass through."""
    if fmt.get("type") != "json_schema":
        return dict(fmt)
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping):
        raise InvalidInput("response_format json_schema needs json_schema.schema",
                           hint="build it with aios_mesh.generation.response_format(Model)")
    return {"type": "json_object", "schema": dict(schema)}


def usage_of(doc: Mapping[str, Any] | None) -> Usage | None:
    """A server's ``usage`` object → :class:`Usage` (None when it reported none)."""
    if not doc:
        return None
    prompt = doc.get("prompt_tokens")
    completion = doc.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage.of_tokens(prompt, completion)


def completion_to_prediction(doc: Mapping[str, Any], *, structured: bool,
                             fallback_usage: Usage | None = None) -> Prediction:
    """A chat-completions answer → :class:`Prediction`: ``{"text": ...}`` for free text, the
    parsed object for structured output. An answer that is not the JSON it must be raises
    :class:`InvalidOutput` (retried under the retry budget) without quoting the model's text:
    it may hold what the prompt held."""
    try:
        choice = doc["choices"][0]
        content = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise InvalidOutput("the LLM's answer has no choices[0].message",
                            hint="check that the backend speaks the chat-completions "
                                 "format") from None
    usage = usage_of(doc.get("usage")) or fallback_usage or Usage()
    if not structured:
        return Prediction({"text": content}, usage=usage)
    return Prediction(parse_structured(content), usage=usage)


def parse_structured(content: str) -> dict[str, Any]:
    """The JSON object a structured generation wrote (InvalidOutput if it is none)."""
    try:
        value = json.loads(content)
    except ValueError:
        raise InvalidOutput(f"the LLM's answer is not valid JSON ({len(content)} characters)",
                            hint="the backend should constrain decoding to the schema; the "
                                 "call is retried under the retry budget") from None
    if not isinstance(value, dict):
        raise InvalidOutput(f"the LLM's answer is JSON {type(value).__name__}, not an object",
                            hint="the output schema must be an object")
    return value


def stream_delta(chunk: Mapping[str, Any]) -> str:
    """The text one streamed chat-completions chunk adds ('' for role or usage chunks)."""
    choices = chunk.get("choices") or ()
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    content = delta.get("content")
    return content if isinstance(content, str) else ""


def final_chunk(usage: Usage, finish_reason: str | None) -> dict[str, Any]:
    """The last chunk of a streamed generation: what it used and why it stopped."""
    doc: dict[str, Any] = {"input_tokens": usage.input_tokens,
                           "output_tokens": usage.output_tokens}
    if usage.estimated:
        doc["estimated"] = True
    return {"usage": doc, "finish_reason": finish_reason or "stop"}


def usage_of_chunk(chunk: Mapping[str, Any]) -> Usage | None:
    """The usage a generation's last streamed chunk reports (:func:`final_chunk`'s shape, or
    a server's ``prompt_tokens`` naming); None for any other chunk."""
    doc = chunk.get("usage")
    if not isinstance(doc, Mapping):
        return None
    if "input_tokens" in doc:
        return Usage.of_tokens(int(doc["input_tokens"]), int(doc.get("output_tokens", 0)),
                               estimated=bool(doc.get("estimated", False)))
    return usage_of(doc)
