"""The gateway's ASGI application: the mesh's capabilities over HTTP, under ``/v1``.

:func:`create_app` builds a Starlette app around one :class:`~aios_mesh.Mesh`. Each area
of the API is a *route module* — a function ``routes(gateway) -> list[BaseRoute]`` in
:mod:`aios_mesh.gateway.routes` — that gets the :class:`Gateway` (the mesh, who is calling,
how to read a body) and nothing else, so an area is added without touching the others.

Every :class:`~aios_mesh.errors.MeshError` that escapes a route becomes a problem-details
response (:mod:`aios_mesh.gateway.problems`).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from aios_mesh.errors import InvalidInput, MeshError, PayloadTooLarge
from aios_mesh.gateway.identity import Authenticator, Forbidden, Principal
from aios_mesh.gateway.metrics import GatewayMetrics, LifecycleMetrics
from aios_mesh.gateway.problems import problem
from aios_mesh.state import SharedState

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["ROUTE_MODULES", "Gateway", "GatewaySettings", "RouteModule",
           "create_app"]

#: The header a client names its expected tenant in (checked against the credential).
TENANT_HEADER = "x-tenant"

#: Builds one area's routes.
RouteModule = Callable[["Gateway"], Sequence[BaseRoute]]

#: The areas of the API, each ``aios_mesh.gateway.routes.<name>.routes``.
ROUTE_MODULES: tuple[str, ...] = ("health", "catalog", "calls", "records", "jobs", "review",
                                  "console", "openai")


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """How the gateway answers.

    Args:
        max_body_bytes: a request body above this is refused with 413 before it is read
            whole (defaults to the mesh's ``max_payload_bytes``).
        max_bulk_bytes: the limit for a bulk job's JSONL upload.
        job_files: the folder under which a bulk job may name its input file (a file
            reference); ``None`` refuses file references. Never an arbitrary path.
        job_lease_s: how long a replica's runner holds a bulk job without renewing it; after
            a crash another replica (or the restarted one) resumes the job this much later.
        metrics_refresh_s: the lifecycle and business metrics on ``/metrics`` are read from
            the audit log, the review queue and the pause store at most this often, and
            only while scraped (:class:`~aios_mesh.gateway.metrics.LifecycleMetrics`).
    """

    max_body_bytes: int = 1 << 20
    max_bulk_bytes: int = 256 << 20
    job_files: Path | None = None
    job_lease_s: float = 30.0
    metrics_refresh_s: float = 30.0


class Gateway:
    """What every route module gets: the mesh, the authenticator and the request helpers."""

    def __init__(self, mesh: Mesh, authenticator: Authenticator,
                 settings: GatewaySettings, state: SharedState | None = None) -> None:
        self.mesh = mesh
        self.authenticator = authenticator
        self.settings = settings
        #: Where the gateway's stores (bulk jobs, keys, ...) keep state: the mesh's sqlite
        #: state by default, a PostgreSQL one so replicas share it.
        self.state: SharedState = state or mesh.state
        #: What runs while the app is up (a bulk job runner ...): each is entered when the
        #: app starts and exited, in reverse order, when it stops.
        self.background: list[Callable[[], contextlib.AbstractAsyncContextManager[object]]] = []
        #: Calls, errors, latency and cost, for ``/metrics``: a route counts each call here;
        #: the lifecycle KPIs are read from the stores, off the caller's path.
        self.metrics = GatewayMetrics(LifecycleMetrics(mesh,
                                                       refresh_s=settings.metrics_refresh_s))

    async def principal(self, request: HTTPConnection) -> Principal:
        """Who sent ``request`` (raises ``Unauthenticated``, answered as 401).

        The tenant is the credential's. A client that names a tenant (``X-Tenant``, sent by
        :class:`aios_mesh.client.MeshClient` for a ``tenant=`` argument) must name that one:
        anything else is ``Forbidden`` (403), never an override."""
        principal = await self.authenticator.authenticate(request)
        asked = request.headers.get(TENANT_HEADER)
        if asked is not None and asked != principal.tenant:
            raise Forbidden(f"this credential is for tenant {principal.tenant!r}, not "
                            f"{asked!r}", hint="use a credential issued for that tenant, or "
                                               "drop tenant= (the credential decides)")
        return principal

    async def json_body(self, request: Request, *, limit: int | None = None) -> Any:
        """The request's JSON body: 415 unless it says JSON, 413 above ``limit`` (checked
        against ``Content-Length`` first, then while reading), 422 if it does not parse."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise UnsupportedMediaType(
                f"expected a JSON body, got content type {ctype or 'none'!r}",
                hint="send Content-Type: application/json")
        raw = await self.read_body(request, limit=limit or self.settings.max_body_bytes)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"the body is not valid JSON ({exc.msg} at byte {exc.pos})",
                               hint="send one JSON document") from None

    async def read_body(self, request: Request, *, limit: int) -> bytes:
        """The raw body, refused with 413 as soon as it passes ``limit`` bytes."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the body is {declared} bytes, over the {limit}-byte limit",
                                  hint="send less, or use a bulk job for many rows")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body is over the {limit}-byte limit",
                                      hint="send less, or use a bulk job for many rows")
            chunks.append(chunk)
        return b"".join(chunks)


class UnsupportedMediaType(InvalidInput):
    """The body's content type is not one the endpoint reads (HTTP 415)."""

    code = "unsupported_media_type"


def _route_module(name: str) -> RouteModule:
    module = importlib.import_module(f"aios_mesh.gateway.routes.{name}")
    routes: RouteModule = module.routes
    return routes


def create_app(mesh: Mesh, *, authenticator: Authenticator,
               settings: GatewaySettings | None = None,
               modules: Sequence[RouteModule] | None = None,
               close_mesh: bool = True, state: SharedState | None = None) -> Starlette:
    """The gateway app for ``mesh``.

    Args:
        authenticator: proves who calls (see :mod:`aios_mesh.gateway.identity`).
        modules: route modules to serve (default: every area in :data:`ROUTE_MODULES`).
        close_mesh: flush and close the mesh when the app shuts down (graceful shutdown:
            the server finishes in-flight requests first, then the outbox is flushed).
        state: the shared state of the gateway's stores (default: the mesh's sqlite state;
            ``aios_mesh_postgres.PostgresState`` for replicas).
    """
    settings = settings or GatewaySettings(max_body_bytes=mesh.config.max_payload_bytes)
    gateway = Gateway(mesh, authenticator, settings, state)
    chosen = modules if modules is not None else [_route_module(n) for n in ROUTE_MODULES]
    routes = [route for module in chosen for route in module(gateway)]

    async def on_mesh_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MeshError)
        from aios_mesh.gateway.problems import status_for

        status = 415 if isinstance(exc, UnsupportedMediaType) else status_for(exc)
        return problem(exc, status=status, record_id=exc.record_id,
                       instance=request.url.path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as running:
            for start in gateway.background:
                await running.enter_async_context(start())
            yield
        if close_mesh:
            await mesh.aclose()  # flushes telemetry and stops the relay after a last pass

    app = Starlette(routes=routes, exception_handlers={MeshError: on_mesh_error},
                    lifespan=lifespan)
    app.state.gateway = gateway
    return app
