"""The catalog: ``GET /v1/capabilities`` (what this credential may call: every version
served, with schemas, SLO and price), ``GET /v1/capabilities/{name}`` (``name``,
``name@major`` or ``name@version``) and ``GET /v1/openapi.json``.

A capability outside the credential's scopes is not listed, and asking for it by name is a
404 like a name that does not exist (a key's scopes say nothing about the rest)."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import NotFound
from aios_mesh.gateway.app import Gateway
from aios_mesh.gateway.identity import Principal
from aios_mesh.gateway.openapi import describe, openapi_document

__all__ = ["routes"]


def _visible(gateway: Gateway, principal: Principal) -> list[CapabilitySpec]:
    return [s for s in gateway.mesh.catalog if principal.may_call(s.name)]  # every version


def routes(gateway: Gateway) -> Sequence[BaseRoute]:
    """The catalog routes."""

    async def list_capabilities(request: Request) -> Response:
        principal = await gateway.principal(request)
        return JSONResponse([describe(s) for s in _visible(gateway, principal)])

    async def one_capability(request: Request) -> Response:
        principal = await gateway.principal(request)
        name = request.path_params["name"]
        if not principal.may_call(name) or name not in gateway.mesh.catalog:
            raise NotFound(f"no capability {name!r}",
                           hint="GET /v1/capabilities lists what this credential may call")
        return JSONResponse(describe(gateway.mesh.capability(name)))

    async def openapi(request: Request) -> Response:
        principal = await gateway.principal(request)
        doc = openapi_document(_visible(gateway, principal),
                               server_url=str(request.base_url).rstrip("/"))
        return JSONResponse(doc)

    return [Route("/v1/capabilities", list_capabilities, methods=["GET"]),
            Route("/v1/capabilities/{name}", one_capability, methods=["GET"]),
            Route("/v1/openapi.json", openapi, methods=["GET"])]
