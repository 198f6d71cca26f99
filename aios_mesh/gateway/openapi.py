"""The gateway's OpenAPI 3.1 document, generated from the capability specs.

Every capability gets its own ``invoke`` and ``stream`` paths whose request body is the
capability's input schema and whose answer carries its output schema, so a client generator
sees each capability as a typed operation. Schemas are pydantic's JSON Schema (2020-12, the
dialect of OpenAPI 3.1), shared under ``components/schemas``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from aios_mesh import __version__
from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.lifecycle.versions import version_key

__all__ = ["describe", "openapi_document"]

_REF = "#/components/schemas/{model}"
_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def describe(spec: CapabilitySpec) -> dict[str, Any]:
    """What the catalog says about one capability: version, schemas, SLO and price."""
    return {"name": spec.name, "version": spec.version, "major": spec.major,
            "deprecated": spec.deprecated, "description": spec.description,
            "input_schema": spec.input.model_json_schema(),
            "output_schema": spec.output.model_json_schema(),
            "slo": spec.slo.model_dump(), "price": spec.price.model_dump(),
            "streams": spec.model is not None, "review_threshold": spec.review_threshold,
            "data_classification": spec.data_classification}


def _problems(*statuses: int) -> dict[str, Any]:
    content = {"application/problem+json": {"schema": _PROBLEM}}
    return {str(s): {"description": _REASONS[s], "content": content} for s in statuses}


_REASONS = {400: "Bad request", 401: "No or bad credential", 403: "Not allowed",
            404: "Not found (or another tenant's)", 413: "Body over the size limit",
            415: "Body is not JSON", 422: "Malformed JSON or input not valid",
            429: "Quota exhausted (see Retry-After)", 502: "Backend failed",
            503: "Circuit open: the backend is cut off for now",
            504: "Backend did not answer in time"}
_CALL_ERRORS = (401, 403, 404, 413, 415, 422, 429, 502, 503, 504)


def _components(specs: Iterable[CapabilitySpec]) -> tuple[dict[Any, Any], dict[str, Any]]:
    models: list[type[BaseModel]] = []
    for spec in specs:
        for model in (spec.input, spec.output):
            if model not in models:
                models.append(model)
    refs, defs = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    return dict(refs), dict(defs.get("$defs", {}))


def _answer(output: Any) -> dict[str, Any]:
    return {"type": "object", "required": ["record_id", "outcome"], "properties": {
        "output": {"anyOf": [output, {"type": "null"}],
                   "description": "the answer (null while a human reviews it)"},
        "record_id": {"type": "string", "description": "the call's decision record"},
        "trace_id": {"type": ["string", "null"]},
        "outcome": {"type": "string"}, "cost": {"type": "number"},
        "currency": {"type": "string"}, "review_id": {"type": ["string", "null"]}}}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}


#: What a call takes besides its input (each optional).
_CALL_HEADERS = [
    _header("X-Tenant", "the tenant the caller expects; another one than the credential's "
                        "is 403 (the credential decides, this never overrides it)"),
    _header("X-Mesh-Attributes", "a JSON object: the caller's attributes for the policy "
                                 "(claims of the caller, as in process)"),
    _header("X-Mesh-Parent", "a JSON object: the workflow run this call belongs to "
                             "(lineage parent)"),
    _header("traceparent", "W3C trace context: the call joins the caller's trace"),
]


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _operations(spec: CapabilitySpec, refs: dict[Any, Any], *, newest: bool = True
                ) -> dict[str, Any]:
    """The call paths of one version: ``/v1/capabilities/NAME/...`` for a name's newest
    version, ``/v1/capabilities/NAME@MAJOR/...`` for an older major served beside it."""
    body = {"required": True, "content": {"application/json": {
        "schema": refs[(spec.input, "validation")]}}}
    output = refs[(spec.output, "validation")]
    address = spec.name if newest else f"{spec.name}@{spec.major}"
    base = f"/v1/capabilities/{address}"
    op = spec.name.replace("-", "_") + ("" if newest else f"_v{spec.major}")
    invoke = {"operationId": f"invoke_{op}",
              "summary": spec.description or f"Call {spec.name}", "tags": ["calls"],
              "parameters": _CALL_HEADERS, "requestBody": body, "responses": {
                  "200": {"description": "The answer and its decision record id",
                          "content": {"application/json": {"schema": _answer(output)}}},
                  "202": {"description": "Sent to human review: the answer comes later",
                          "content": {"application/json": {"schema": _answer(output)}}},
                  **_problems(*_CALL_ERRORS)}}
    paths: dict[str, Any] = {f"{base}/invoke": {"post": invoke}}
    if spec.model is not None:
        paths[f"{base}/stream"] = {"post": {
            "operationId": f"stream_{op}",
            "summary": f"Stream {spec.name}'s answer as Server-Sent Events", "tags": ["calls"],
            "parameters": _CALL_HEADERS, "requestBody": body, "responses": {
                "200": {"description": "`chunk` events, then one `done` (record id, cost) "
                                       "or `error` (a problem document) event",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                **_problems(*_CALL_ERRORS)}}}
    return paths


def _fixed_paths() -> dict[str, Any]:
    any_object = {"type": "object"}
    return {
        "/v1/capabilities": {"get": {
            "operationId": "list_capabilities", "tags": ["catalog"],
            "summary": "The capabilities this credential may call",
            "responses": {"200": {"description": "version, schemas, SLO and price of each",
                                  "content": {"application/json": {"schema": {
                                      "type": "array", "items": any_object}}}},
                          **_problems(401)}}},
        "/v1/capabilities/{name}": {"get": {
            "operationId": "get_capability", "tags": ["catalog"],
            "summary": "One capability: version, schemas, SLO and price",
            "parameters": [_path("name")],
            "responses": {"200": _json("the capability"), **_problems(401, 404)}}},
        "/v1/openapi.json": {"get": {
            "operationId": "openapi", "tags": ["catalog"],
            "summary": "This document, for the capabilities this credential may call",
            "responses": {"200": _json("OpenAPI 3.1"), **_problems(401)}}},
        "/v1/records/{record_id}": {"get": {
            "operationId": "get_record", "tags": ["records"],
            "summary": "One decision record of the credential's tenant",
            "parameters": [{"name": "record_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The decision record",
                                  "content": {"application/json": {"schema": any_object}}},
                          **_problems(401, 404)}}},
        **_jobs_paths(), **_review_paths(), **_openai_paths(),
        "/healthz": {"get": {"operationId": "healthz", "tags": ["health"],
                             "summary": "The process answers",
                             "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"operationId": "readyz", "tags": ["health"],
                            "summary": "Every configured backend answers",
                            "responses": {"200": {"description": "ready"},
                                          "503": {"description": "a backend is down"}}}},
        "/metrics": {"get": {"operationId": "metrics", "tags": ["health"],
                             "summary": "Prometheus text format, every worker",
                             "responses": {"200": {"description": "metrics"}}}},
    }


def _jobs_paths() -> dict[str, Any]:
    job = _json("The job: id, capability, status, counts (done, failed, running, pending, "
                "cancelled), times")
    jsonl = {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}
    return {
        "/v1/jobs": {
            "post": {"operationId": "submit_job", "tags": ["jobs"],
                     "summary": "Submit a bulk job: JSONL rows (with ?capability=NAME), or "
                                '{"capability", "file"} naming a file in the job folder',
                     "parameters": [{"name": "capability", "in": "query",
                                     "schema": {"type": "string"}}],
                     "requestBody": {"required": True, "content": {
                         "application/x-ndjson": {"schema": {"type": "string"}},
                         "application/json": {"schema": {"type": "object"}}}},
                     "responses": {"202": job, **_problems(401, 403, 404, 413, 415, 422)}},
            "get": {"operationId": "list_jobs", "tags": ["jobs"],
                    "summary": "The tenant's newest jobs",
                    "responses": {"200": _json("jobs", {"type": "array",
                                                        "items": {"type": "object"}}),
                                  **_problems(401)}}},
        "/v1/jobs/{job_id}": {"get": {
            "operationId": "get_job", "tags": ["jobs"], "summary": "A job's progress",
            "parameters": [_path("job_id")],
            "responses": {"200": job, **_problems(401, 404)}}},
        "/v1/jobs/{job_id}/results": {"get": {
            "operationId": "job_results", "tags": ["jobs"],
            "summary": "One JSONL line per input row, in input order: the output or the "
                       "row's problem, and its record id",
            "parameters": [_path("job_id")],
            "responses": {"200": {"description": "JSONL", **jsonl}, **_problems(401, 404)}}},
        "/v1/jobs/{job_id}/cancel": {"post": {
            "operationId": "cancel_job", "tags": ["jobs"],
            "summary": "Cancel the rows not started (running rows finish)",
            "parameters": [_path("job_id")],
            "responses": {"200": job, **_problems(401, 404)}}},
    }


def _openai_paths() -> dict[str, Any]:
    """The OpenAI-compatible face (:mod:`aios_mesh.gateway.routes.openai`): OpenAI's own
    request and answer shapes, its error object instead of problem details."""
    error = {"content": {"application/json": {"schema": _OPENAI_ERROR}}}

    def errors(*statuses: int) -> dict[str, Any]:
        return {str(s): {"description": _REASONS[s], **error} for s in statuses}

    model = {"type": "object", "required": ["id", "object", "created", "owned_by"]}
    body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["model"], "properties": {
            "model": {"type": "string", "description": "a capability: NAME or NAME@VERSION"}
        }}}}}
    calls = (400, 401, 403, 404, 413, 415, 429, 502, 503, 504)
    return {
        "/v1/models": {"get": {
            "operationId": "openai_list_models", "tags": ["openai"],
            "summary": "The chat and embedding capabilities this key may call, as OpenAI "
                       "models",
            "responses": {"200": _json("OpenAI's model list", {
                "type": "object", "properties": {"object": {"const": "list"},
                                                 "data": {"type": "array", "items": model}}}),
                          **errors(401)}}},
        "/v1/models/{model}": {"get": {
            "operationId": "openai_get_model", "tags": ["openai"], "summary": "One model",
            "parameters": [_path("model")],
            "responses": {"200": _json("the model", model), **errors(401, 404)}}},
        "/v1/chat/completions": {"post": {
            "operationId": "openai_chat_completions", "tags": ["openai"],
            "summary": "Call a chat capability (OpenAI chat completions; stream: true for "
                       "Server-Sent Events)",
            "requestBody": body,
            "responses": {"200": {"description": "a chat.completion, or chat.completion.chunk "
                                                 "events ending with data: [DONE]",
                                  "content": {"application/json": {"schema": {
                                      "type": "object"}},
                                      "text/event-stream": {"schema": {"type": "string"}}}},
                          **errors(*calls)}}},
        "/v1/embeddings": {"post": {
            "operationId": "openai_embeddings", "tags": ["openai"],
            "summary": "Call an embedding capability once per input string",
            "requestBody": body,
            "responses": {"200": _json("OpenAI's embedding list"), **errors(*calls)}}},
    }


_OPENAI_ERROR = {"type": "object", "description": "OpenAI's error object", "required": ["error"],
                 "properties": {"error": {"type": "object", "required": ["message", "type"],
                                          "properties": {
                                              "message": {"type": "string"},
                                              "type": {"type": "string"},
                                              "code": {"type": ["string", "null"]},
                                              "param": {"type": ["string", "null"]},
                                              "hint": {"type": "string"},
                                              "record_id": {"type": "string"}}}}}


def _review_paths() -> dict[str, Any]:
    item = _json("A review item: redacted input, proposed output, confidence, reason")
    paths: dict[str, Any] = {
        "/v1/review": {"get": {
            "operationId": "list_review", "tags": ["review"],
            "summary": "The review queue (reviewer role; admins may pass ?tenant=)",
            "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                           for n in ("status", "capability", "tenant", "limit")],
            "responses": {"200": _json("items"), **_problems(401, 403)}}},
        "/v1/review/{item_id}": {"get": {
            "operationId": "get_review_item", "tags": ["review"], "summary": "One item",
            "parameters": [_path("item_id")],
            "responses": {"200": item, **_problems(401, 403, 404)}}},
    }
    for decision, what in (("approve", "accept the proposed output"),
                           ("reject", "throw the proposal out"),
                           ("correct", 'replace the output ({"output": ...}): kept as a label')):
        paths[f"/v1/review/{{item_id}}/{decision}"] = {"post": {
            "operationId": f"{decision}_review_item", "tags": ["review"],
            "summary": f"Decide: {what}", "parameters": [_path("item_id")],
            "requestBody": {"required": decision == "correct", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "note": {"type": "string"}, "output": {"type": "object"}}}}}},
            "responses": {"200": item, **_problems(401, 403, 404, 422)}}}
    return paths


_PROBLEM_SCHEMA = {"type": "object", "description": "RFC 9457 problem details",
                   "required": ["type", "title", "status", "code"], "properties": {
                       "type": {"type": "string"}, "title": {"type": "string"},
                       "status": {"type": "integer"}, "detail": {"type": "string"},
                       "code": {"type": "string"}, "hint": {"type": "string"},
                       "record_id": {"type": "string"}, "instance": {"type": "string"}}}


def openapi_document(specs: Iterable[CapabilitySpec], *, server_url: str | None = None,
                     extra_paths: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a gateway serving ``specs``."""
    chosen = list(specs)
    refs, schemas = _components(chosen)
    paths = _fixed_paths()
    newest: dict[str, CapabilitySpec] = {}
    for spec in chosen:
        if spec.name not in newest or version_key(spec.version) > version_key(
                newest[spec.name].version):
            newest[spec.name] = spec
    for spec in chosen:
        paths.update(_operations(spec, refs, newest=newest[spec.name] is spec))
    paths.update(extra_paths or {})
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "aios-mesh gateway", "version": __version__},
        "paths": paths,
        "components": {"schemas": {**schemas, "Problem": _PROBLEM_SCHEMA},
                       "securitySchemes": {
                           "apiKey": {"type": "http", "scheme": "bearer",
                                      "description": "an API key (aios-mesh keys create) or "
                                                     "a JWT bearer token"}}},
        "security": [{"apiKey": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
