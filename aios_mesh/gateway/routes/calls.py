"""Calls: ``POST /v1/capabilities/{name}/invoke`` (one answer) and
``POST /v1/capabilities/{name}/stream`` (Server-Sent Events).

The body is the capability's input as JSON. The tenant and the caller come from the
credential; a W3C ``traceparent`` header joins the caller's trace. Two optional headers carry
what the in-process call takes besides the input, each a JSON object: ``X-Mesh-Attributes``
(facts for the policy, e.g. an amount; the caller's claims, as in process) and
``X-Mesh-Parent`` (the workflow run the call belongs to, for lineage). An invoke answers
``{"output", "record_id", "trace_id", "outcome", "cost", "currency", "review_id"}``: 200, or
202 when the call went to human review (``output`` is then null).

A stream answers ``text/event-stream``: one ``chunk`` event per chunk, then ``done`` (the same
fields as an invoke, without the output) or ``error`` (a problem document). A call that fails
before its first chunk is answered like a failed invoke, with its problem status. A client
that goes away mid-stream ends the call as ``cancelled``: it is recorded and its quota
reservation is given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, cast

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from aios_mesh.errors import InvalidInput, MeshError, UnknownCapability
from aios_mesh.gateway.app import Gateway
from aios_mesh.gateway.identity import Principal
from aios_mesh.gateway.problems import problem
from aios_mesh.record import DecisionRecord
from aios_mesh.result import Result

__all__ = ["ATTRIBUTES_HEADER", "PARENT_HEADER", "EventStream", "routes"]

#: A JSON object of policy attributes (``Mesh.invoke(attributes=...)``).
ATTRIBUTES_HEADER = "X-Mesh-Attributes"
#: A JSON object naming the workflow run a call belongs to (``Mesh.invoke(parent=...)``).
PARENT_HEADER = "X-Mesh-Parent"


def _plain(output: Any) -> Any:
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json")
    return output


def _summary(record: DecisionRecord) -> dict[str, Any]:
    return {"record_id": record.record_id, "trace_id": record.trace_id,
            "outcome": record.outcome, "cost": record.cost, "currency": record.currency,
            "review_id": record.review_id}


def _traceparent(request: Request) -> Mapping[str, str] | None:
    value = request.headers.get("traceparent")
    return {"traceparent": value} if value else None


def _json_header(request: Request, name: str) -> dict[str, Any] | None:
    """The JSON object in header ``name``; None when it is absent."""
    raw = request.headers.get(name)
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput(f"the {name} header is not valid JSON",
                           hint=f"send {name} as one JSON object") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"the {name} header must be a JSON object, not "
                           f"{type(value).__name__}", hint=f'e.g. {name}: {{"key": "value"}}')
    return value


def _call_options(request: Request) -> dict[str, Any]:
    """The call's options besides the input: trace, policy attributes, lineage parent."""
    return {"traceparent": _traceparent(request),
            "attributes": _json_header(request, ATTRIBUTES_HEADER),
            "parent": _json_header(request, PARENT_HEADER)}


def _sse(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class EventStream(Response):
    """A ``text/event-stream`` answer that stops as soon as the client goes away.

    Each next event is awaited against the client's disconnect, so a client that leaves
    while the call is still producing ends it at once (the event source is closed, which
    ends the call as ``cancelled``), not when the call would have finished.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None],
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no",
                                  **(headers or {})})
        # chunked: the length of a stream is not known up front
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def client_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                continue

        gone = asyncio.ensure_future(client_gone())
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            while not gone.done():
                step = asyncio.ensure_future(anext(self.events))
                await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():  # the client left while the call was producing
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
                    break
                try:
                    data = step.result()
                except StopAsyncIteration:
                    await send({"type": "http.response.body", "body": b"",
                                "more_body": False})
                    break
                await send({"type": "http.response.body", "body": data, "more_body": True})
        finally:
            gone.cancel()
            await self.events.aclose()


def routes(gateway: Gateway) -> Sequence[BaseRoute]:
    """The invoke and stream routes."""
    mesh = gateway.mesh
    metrics = gateway.metrics

    def failed(name: str, tenant: str, mode: str, started: float, exc: MeshError) -> None:
        if isinstance(exc, UnknownCapability):  # the path is the caller's text, not a name
            name = "(unknown)"
        metrics.observe(capability=name, tenant=tenant, mode=mode, outcome=exc.outcome,
                        seconds=time.perf_counter() - started, error_code=exc.code)

    def ended(name: str, mode: str, started: float, record: DecisionRecord) -> None:
        metrics.observe(capability=name, tenant=record.tenant, mode=mode,
                        outcome=record.outcome, seconds=time.perf_counter() - started,
                        cost=record.cost)

    async def begin(request: Request) -> tuple[Principal, str, dict[str, Any], Any, float]:
        """Who calls what, with which options and payload (checked in this order: a
        forbidden call is refused before its body is read), and when it started."""
        principal = await gateway.principal(request)
        name = request.path_params["name"]
        principal.require_call(name)
        options = _call_options(request)
        return principal, name, options, await gateway.json_body(request), time.perf_counter()

    async def invoke(request: Request) -> Response:
        principal, name, options, payload, started = await begin(request)
        try:
            result = await mesh.ainvoke(name, payload, tenant=principal.tenant,
                                        caller=principal.caller, **options)
        except MeshError as exc:
            failed(name, principal.tenant, "invoke", started, exc)
            raise
        ended(name, "invoke", started, result.record)
        body = {"output": _plain(result.output), **_summary(result.record)}
        return Response(orjson.dumps(body), status_code=202 if result.needs_review else 200,
                        media_type="application/json")

    async def stream(request: Request) -> Response:
        principal, name, options, payload, started = await begin(request)
        results: list[Result[Any]] = []
        # Mesh.stream is an async generator (typed as an iterator); the route closes it.
        chunks = cast(AsyncGenerator[dict[str, Any], None], mesh.stream(
            name, payload, tenant=principal.tenant, caller=principal.caller,
            on_result=results.append, **options))
        # The first chunk decides the status: a call refused before it answers gets its
        # problem status, not a 200 with an error event.
        try:
            first: dict[str, Any] | None = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except MeshError as exc:
            failed(name, principal.tenant, "stream", started, exc)
            raise

        async def events() -> AsyncGenerator[bytes, None]:
            try:
                if first is not None:
                    yield _sse("chunk", orjson.dumps(first))
                    async for chunk in chunks:
                        yield _sse("chunk", orjson.dumps(chunk))
            except MeshError as exc:
                failed(name, principal.tenant, "stream", started, exc)
                body = problem(exc, record_id=exc.record_id, instance=request.url.path).body
                yield _sse("error", bytes(body))
                return
            except BaseException:  # cancelled or closed: the client went away
                metrics.observe(capability=name, tenant=principal.tenant, mode="stream",
                                outcome="cancelled", seconds=time.perf_counter() - started,
                                error_code="call_cancelled")
                raise
            finally:  # if the client left, closing the stream ends the call as cancelled
                await chunks.aclose()
            record = results[0].record
            ended(name, "stream", started, record)
            yield _sse("done", orjson.dumps(_summary(record)))

        return EventStream(events())

    return [Route("/v1/capabilities/{name}/invoke", invoke, methods=["POST"]),
            Route("/v1/capabilities/{name}/stream", stream, methods=["POST"])]
