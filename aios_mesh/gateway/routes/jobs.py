"""Bulk jobs over HTTP, under ``/v1/jobs`` (see ``docs/guides/bulk-jobs.md``).

* ``POST /v1/jobs?capability=NAME`` with a JSONL body (``application/x-ndjson`` or
  ``application/jsonl``), or ``POST /v1/jobs`` with ``{"capability": ..., "file": ...}``
  naming a file under the operator's job folder: 202 and the job.
* ``GET /v1/jobs``: the caller's tenant's newest jobs.
* ``GET /v1/jobs/{id}``: progress (counts done/failed/running/pending/cancelled, times).
* ``GET /v1/jobs/{id}/results``: JSONL, one line per input row in input order.
* ``POST /v1/jobs/{id}/cancel``: rows not started are cancelled; running rows finish.

Every job belongs to the tenant of the credential that submitted it; another tenant's job id
answers 404 exactly like an unknown one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from aios_mesh.errors import InvalidInput
from aios_mesh.gateway.app import Gateway, UnsupportedMediaType
from aios_mesh.gateway.jobs import (
    JSONL_TYPES,
    JobRunner,
    JobStore,
    NewRow,
    parse_jsonl,
    read_job_file,
)

__all__ = ["routes"]

_JSON = "application/json"
_PAGE = 1000


def _json(doc: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=_JSON, headers=headers)


def routes(gateway: Gateway) -> Sequence[BaseRoute]:
    """The ``/v1/jobs`` routes; starts the job runner with the app."""
    store = JobStore(gateway.state)
    runner = JobRunner(gateway.mesh, store, lease_s=gateway.settings.job_lease_s)
    gateway.background.append(runner.running)

    async def rows_of(request: Request) -> tuple[str, list[NewRow]]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        limit = gateway.settings.max_bulk_bytes
        if ctype in JSONL_TYPES:
            capability = request.query_params.get("capability", "")
            if not capability:
                raise InvalidInput("which capability should the rows call?",
                                   hint="add ?capability=NAME to the URL")
            data = await gateway.read_body(request, limit=limit)
            return capability, await asyncio.to_thread(parse_jsonl, data)
        if ctype != _JSON:
            raise UnsupportedMediaType(
                f"a bulk job is JSONL or a JSON file reference, not {ctype or 'no type'!r}",
                hint="send Content-Type: application/x-ndjson with one payload per line, "
                     'or application/json with {"capability": ..., "file": ...}')
        body = await gateway.json_body(request)
        if not isinstance(body, dict) or set(body) != {"capability", "file"} \
                or not isinstance(body["capability"], str):
            raise InvalidInput('a file reference is {"capability": NAME, "file": PATH}',
                               hint="PATH is relative to the gateway's job folder")
        data = await asyncio.to_thread(read_job_file, gateway.settings.job_files,
                                       body["file"], limit=limit)
        return body["capability"], await asyncio.to_thread(parse_jsonl, data)

    async def submit(request: Request) -> Response:
        principal = await gateway.principal(request)
        capability, rows = await rows_of(request)
        principal.require_call(capability)
        gateway.mesh.capability(capability)  # unknown capability: 404 before anything is kept
        job = await asyncio.to_thread(store.create, tenant=principal.tenant,
                                      caller=principal.caller, capability=capability,
                                      rows=rows)
        runner.poke()
        return _json(job.to_dict(), 202, {"Location": f"/v1/jobs/{job.id}"})

    async def listing(request: Request) -> Response:
        principal = await gateway.principal(request)
        jobs = await asyncio.to_thread(store.recent, principal.tenant)
        return _json({"jobs": [j.to_dict() for j in jobs]})

    async def progress(request: Request) -> Response:
        principal = await gateway.principal(request)
        job = await asyncio.to_thread(store.get, principal.tenant,
                                      request.path_params["job_id"])
        return _json(job.to_dict())

    async def results(request: Request) -> Response:
        principal = await gateway.principal(request)
        job_id = request.path_params["job_id"]
        first = await asyncio.to_thread(store.results, principal.tenant, job_id, limit=_PAGE)

        async def lines() -> AsyncIterator[bytes]:
            page = first
            while page:
                yield b"".join(orjson.dumps(r.to_dict()) + b"\n" for r in page)
                if len(page) < _PAGE:
                    return
                page = await asyncio.to_thread(store.results, principal.tenant, job_id,
                                               after=page[-1].index, limit=_PAGE)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def cancel(request: Request) -> Response:
        principal = await gateway.principal(request)
        job = await asyncio.to_thread(store.cancel, principal.tenant,
                                      request.path_params["job_id"])
        return _json(job.to_dict())

    return [
        Route("/v1/jobs", submit, methods=["POST"]),
        Route("/v1/jobs", listing, methods=["GET"]),
        Route("/v1/jobs/{job_id}", progress, methods=["GET"]),
        Route("/v1/jobs/{job_id}/results", results, methods=["GET"]),
        Route("/v1/jobs/{job_id}/cancel", cancel, methods=["POST"]),
    ]
