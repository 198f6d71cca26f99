"""The gateway from Python: the in-process :class:`~aios_mesh.Mesh`'s call API over HTTP.

Business code written against ``mesh.invoke`` / ``ainvoke`` / ``invoke_many`` /
``ainvoke_many`` / ``stream`` runs unchanged against a gateway: swap the object, not the
code (``MeshClient.from_env()`` reads ``AIOS_MESH_GATEWAY_URL`` and ``AIOS_MESH_API_KEY``)::

    from aios_mesh.client import MeshClient

    with MeshClient("http://127.0.0.1:8080", api_key="amk_...") as mesh:
        result = mesh.invoke("triage-ticket", {"text": "refund please"})
        print(result.output, result.record_id)

Over HTTP the tenant comes from the credential. A ``tenant=`` argument is checked by the
gateway against it (a different tenant is :class:`~aios_mesh.errors.Forbidden`, never an
override). A failed call raises the same :class:`~aios_mesh.errors.MeshError` subclass as in
process, rebuilt from the gateway's problem document (its ``code``, ``hint`` and
``record_id``; ``QuotaExceeded.retry_after_s`` from ``Retry-After``).

There is one client: async over ``httpx.AsyncClient``, and a sync facade over it (the same
strategy as the mesh: one event loop per thread).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import httpx
import orjson
from pydantic import BaseModel

from aios_mesh import errors
from aios_mesh._sync import SyncFacade, SyncRunner
from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import BackendUnavailable, ConfigError, MeshError

__all__ = ["CallResult", "MeshClient", "error_from_problem"]

T = TypeVar("T")
_TENANT_HEADER = "X-Tenant"
_ATTRIBUTES_HEADER = "X-Mesh-Attributes"
_PARENT_HEADER = "X-Mesh-Parent"


@dataclass(frozen=True, slots=True)
class CallResult:
    """What a call through the gateway returns: the output (the capability's output model
    when the client knows the capability, else plain JSON; None while a human reviews it)
    and the decision record's summary."""

    output: Any
    record_id: str
    trace_id: str | None
    outcome: str
    cost: float
    currency: str | None = None
    review_id: str | None = None

    @property
    def needs_review(self) -> bool:
        return self.outcome == "review"


def _error_classes() -> dict[str, type[MeshError]]:
    found: dict[str, type[MeshError]] = {}
    pending: list[type[MeshError]] = [MeshError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def error_from_problem(status: int, body: bytes, headers: Mapping[str, str]) -> MeshError:
    """The :class:`MeshError` a gateway problem document stands for."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict) or "code" not in doc:
        text = body[:200].decode("utf-8", "replace")
        return BackendUnavailable(f"the gateway answered {status} without a problem "
                                  f"document: {text!r}",
                                  hint="check the gateway URL and that it is aios-mesh")
    cls = _error_classes().get(str(doc["code"]), MeshError)
    options: dict[str, Any] = {"hint": doc.get("hint")}
    if cls is errors.QuotaExceeded:
        retry = headers.get("retry-after")
        options["retry_after_s"] = float(retry) if retry and retry.isdigit() else None
        options["window"] = doc.get("window")
    if cls is errors.PolicyDenied:
        options.update(policy=doc.get("policy"), reason=doc.get("reason"),
                       reason_code=doc.get("reason_code"))
    try:
        error = cls(str(doc.get("detail", "")), **options)
    except TypeError:  # a subclass with its own constructor
        error = MeshError(str(doc.get("detail", "")), hint=doc.get("hint"))
    error.record_id = doc.get("record_id")
    return error


class MeshClient(SyncFacade):
    """Calls capabilities through an aios-mesh gateway.

    Args:
        base_url: the gateway, e.g. ``http://127.0.0.1:8080``.
        api_key: an API key (``aios-mesh keys create``); or ``token`` for a JWT.
        capabilities: specs of the capabilities called, so outputs come back as their
            pydantic models (without them, outputs are plain JSON).
        timeout: seconds per request (connect, read, write).
        transport: an ``httpx`` transport (tests: ``httpx.ASGITransport(app)``).
    """

    def __init__(self, base_url: str, *, api_key: str | None = None,
                 token: str | None = None, capabilities: Iterable[CapabilitySpec] = (),
                 timeout: float = 30.0, concurrency: int = 16,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if api_key and token:
            raise ConfigError("give an API key or a token, not both",
                              hint="the gateway refuses a request with two credentials")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"the gateway URL must start with http:// or https://, not "
                              f"{base_url.split('://')[0]!r}",
                              hint="e.g. http://127.0.0.1:8080")
        self.base_url = base_url.rstrip("/")
        secret = api_key or token
        self._headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._specs = {spec.name: spec for spec in capabilities}
        self._timeout = timeout
        self._transport = transport
        self.concurrency = concurrency
        # One AsyncClient per event loop: an httpx pool belongs to the loop that made it.
        self._clients: dict[int, httpx.AsyncClient] = {}
        self._lock = threading.Lock()
        self._sync = SyncRunner()

    @classmethod
    def from_env(cls, **options: Any) -> Self:
        """From ``AIOS_MESH_GATEWAY_URL`` and ``AIOS_MESH_API_KEY`` (or
        ``AIOS_MESH_TOKEN``)."""
        url = os.environ.get("AIOS_MESH_GATEWAY_URL")
        if not url:
            raise ConfigError("AIOS_MESH_GATEWAY_URL is not set",
                              hint="export AIOS_MESH_GATEWAY_URL=http://127.0.0.1:8080")
        return cls(url, api_key=os.environ.get("AIOS_MESH_API_KEY"),
                   token=os.environ.get("AIOS_MESH_TOKEN"), **options)

    # -- plumbing ------------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        key = id(asyncio.get_running_loop())
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = httpx.AsyncClient(
                    base_url=self.base_url, headers=self._headers,
                    timeout=self._timeout, transport=self._transport)
            return client

    def _request_headers(self, tenant: str | None, traceparent: Mapping[str, str] | None,
                         attributes: Mapping[str, Any] | None = None,
                         parent: Mapping[str, Any] | None = None) -> dict[str, str]:
        headers = dict(traceparent or {})
        if tenant is not None:
            headers[_TENANT_HEADER] = tenant
        # ASCII JSON: header values are not UTF-8 on the wire
        if attributes is not None:
            headers[_ATTRIBUTES_HEADER] = json.dumps(dict(attributes), ensure_ascii=True)
        if parent is not None:
            headers[_PARENT_HEADER] = json.dumps(dict(parent), ensure_ascii=True)
        return headers

    def _payload(self, payload: Any) -> bytes:
        if isinstance(payload, BaseModel):
            return payload.model_dump_json().encode()
        return orjson.dumps(payload)

    def _output(self, capability: str, output: Any) -> Any:
        spec = self._specs.get(capability)
        if spec is None or output is None:
            return output
        return spec.output.model_validate(output)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client().request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise errors.BackendTimeout(f"the gateway at {self.base_url} did not answer in "
                                        f"{self._timeout:g}s",
                                        hint="raise timeout= or check the gateway") from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot reach the gateway at {self.base_url}: "
                                     f"{type(exc).__name__}",
                                     hint="check the URL and that `aios-mesh gateway` runs"
                                     ) from exc
        if response.status_code >= 400:
            raise error_from_problem(response.status_code, response.content,
                                     response.headers)
        return response

    # -- the calls -----------------------------------------------------------------------
    async def ainvoke(self, capability: str, payload: Any, *, tenant: str | None = None,
                      caller: str | None = None, attributes: Mapping[str, Any] | None = None,
                      parent: Mapping[str, Any] | None = None,
                      traceparent: Mapping[str, str] | None = None) -> CallResult:
        """One call. ``caller`` is accepted for parity with the mesh and ignored: over HTTP
        the credential names the caller. ``attributes`` (policy input) and ``parent`` (the
        workflow run, for lineage) mean what they mean in process; both must be JSON."""
        del caller
        response = await self._send(
            "POST", f"/v1/capabilities/{capability}/invoke", content=self._payload(payload),
            headers={"Content-Type": "application/json",
                     **self._request_headers(tenant, traceparent, attributes, parent)})
        doc = orjson.loads(response.content)
        return CallResult(output=self._output(capability, doc.get("output")),
                          record_id=doc["record_id"], trace_id=doc.get("trace_id"),
                          outcome=doc["outcome"], cost=doc.get("cost", 0.0),
                          currency=doc.get("currency"), review_id=doc.get("review_id"))

    async def ainvoke_many(self, capability: str, payloads: Iterable[Any], *,
                           tenant: str | None = None, caller: str | None = None,
                           concurrency: int | None = None, return_exceptions: bool = False
                           ) -> list[CallResult | MeshError]:
        """Many calls, at most ``concurrency`` in flight, results in order; with
        ``return_exceptions`` a failed item holds its error instead of raising the first."""
        gate = asyncio.Semaphore(concurrency or self.concurrency)

        async def one(payload: Any) -> CallResult | MeshError:
            async with gate:
                try:
                    return await self.ainvoke(capability, payload, tenant=tenant,
                                              caller=caller)
                except MeshError as exc:
                    if return_exceptions:
                        return exc
                    raise

        return list(await asyncio.gather(*(one(p) for p in payloads)))

    async def stream(self, capability: str, payload: Any, *, tenant: str | None = None,
                     caller: str | None = None, attributes: Mapping[str, Any] | None = None,
                     parent: Mapping[str, Any] | None = None,
                     traceparent: Mapping[str, str] | None = None
                     ) -> AsyncIterator[dict[str, Any]]:
        """The capability's chunks as the gateway streams them (Server-Sent Events). An
        ``error`` event raises its :class:`MeshError`; leaving the loop early closes the
        connection, and the gateway records the call as cancelled."""
        del caller
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream",
                   **self._request_headers(tenant, traceparent, attributes, parent)}
        request = self._client().build_request(
            "POST", f"/v1/capabilities/{capability}/stream", content=self._payload(payload),
            headers=headers)
        try:
            response = await self._client().send(request, stream=True)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot reach the gateway at {self.base_url}: "
                                     f"{type(exc).__name__}",
                                     hint="check the URL and that `aios-mesh gateway` runs"
                                     ) from exc
        try:
            if response.status_code >= 400:
                await response.aread()
                raise error_from_problem(response.status_code, response.content,
                                         response.headers)
            event, data = "message", []
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    body = "\n".join(data).encode()
                    if event == "chunk":
                        yield orjson.loads(body)
                    elif event == "error":
                        raise error_from_problem(500, body, {})
                    event, data = "message", []
        finally:
            await response.aclose()

    async def record(self, record_id: str) -> dict[str, Any]:
        """One decision record of this credential's tenant."""
        response = await self._send("GET", f"/v1/records/{record_id}")
        doc: dict[str, Any] = orjson.loads(response.content)
        return doc

    # -- sync facade ---------------------------------------------------------------------
    def invoke(self, capability: str, payload: Any, *, tenant: str | None = None,
               caller: str | None = None, attributes: Mapping[str, Any] | None = None,
               parent: Mapping[str, Any] | None = None,
               traceparent: Mapping[str, str] | None = None) -> CallResult:
        """Sync facade of :meth:`ainvoke`."""
        return self.run_sync(self.ainvoke(capability, payload, tenant=tenant, caller=caller,
                                          attributes=attributes, parent=parent,
                                          traceparent=traceparent))

    def invoke_many(self, capability: str, payloads: Iterable[Any], *,
                    tenant: str | None = None, caller: str | None = None,
                    concurrency: int | None = None, return_exceptions: bool = False
                    ) -> list[CallResult | MeshError]:
        """Sync facade of :meth:`ainvoke_many`."""
        return self.run_sync(self.ainvoke_many(capability, payloads, tenant=tenant,
                                               caller=caller, concurrency=concurrency,
                                               return_exceptions=return_exceptions))

    # -- lifecycle -----------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close this event loop's connections (call from the loop that used them)."""
        key = id(asyncio.get_running_loop())
        with self._lock:
            client = self._clients.pop(key, None)
        if client is not None:
            await client.aclose()
