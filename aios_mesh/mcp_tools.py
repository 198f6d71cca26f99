"""Capabilities as MCP tools: any MCP client (an IDE assistant, an agent framework) calls
governed capabilities — each call through the full pipeline, with its own policy, quota,
redaction and decision record — as tools with their JSON schemas.

Two transports, one server (the ``mcp`` SDK's low-level :class:`~mcp.server.lowlevel.Server`,
whose tools are declared with the capabilities' own JSON schemas):

* **stdio**, for local use (``aios-mesh mcp --tenant acme --caller ide``): the process runs
  for one person, as the CLI does, so its identity is given on the command line;
* **streamable HTTP** with credentials, for shared use (``aios-mesh mcp --transport http``):
  every request carries an API key or a JWT, checked by the gateway's authenticator
  (``[gateway.auth]``); the credential's tenant, caller and scopes apply exactly as on the
  gateway, so a tool outside a key's scopes is neither listed nor callable, and a request
  without a credential is a 401.

A capability's newest version is the tool ``NAME``; an older major served beside it is
``NAME.vMAJOR`` (MCP tool names allow no ``@``). A tool's result is the capability's answer
as structured content (and as JSON text), with the decision record's id; a refused or failed
call is a tool error carrying the problem (type, code, message, hint, record id) — never a
payload value.

    # Python, in process:
    server = mcp_server(mesh, identity=fixed_identity("acme", "ide"))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import mcp_types as types
import orjson
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from aios_mesh import __version__
from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import MeshError, UnknownCapability
from aios_mesh.gateway.identity import Principal, Unauthenticated
from aios_mesh.gateway.problems import problem
from aios_mesh.lifecycle.versions import version_key

if TYPE_CHECKING:
    from aios_mesh.gateway.auth.authenticator import GatewayAuthenticator
    from aios_mesh.mesh import Mesh

__all__ = ["Identity", "authenticated_app", "fixed_identity", "mcp_server", "request_identity",
           "tool_names"]

#: Who is calling, for one MCP request.
Identity = Callable[[ServerRequestContext[Any, Any]], Awaitable[Principal]]

_PRINCIPAL = "aios_mesh.principal"


def fixed_identity(tenant: str, caller: str) -> Identity:
    """The identity of a local (stdio) server: one tenant and caller for every request."""
    principal = Principal(tenant=tenant, caller=caller)

    async def identity(ctx: ServerRequestContext[Any, Any]) -> Principal:
        return principal

    return identity


async def request_identity(ctx: ServerRequestContext[Any, Any]) -> Principal:
    """The principal :func:`authenticated_app` put on the HTTP request of this call."""
    request = ctx.request
    found = getattr(request, "scope", {}).get("state", {}).get(_PRINCIPAL)
    if not isinstance(found, Principal):
        raise Unauthenticated("this MCP request carries no verified credential",
                              hint="serve over HTTP through authenticated_app")
    return found


def tool_names(specs: list[CapabilitySpec]) -> dict[str, CapabilitySpec]:
    """Tool name → capability version: ``NAME`` for the newest, ``NAME.vMAJOR`` for older
    majors served beside it."""
    newest: dict[str, CapabilitySpec] = {}
    for spec in specs:
        if spec.name not in newest or version_key(spec.version) > version_key(
                newest[spec.name].version):
            newest[spec.name] = spec
    return {(spec.name if newest[spec.name] is spec else f"{spec.name}.v{spec.major}"): spec
            for spec in specs}


def _tool(name: str, spec: CapabilitySpec) -> types.Tool:
    text = spec.description or f"The {spec.name} capability (version {spec.version})."
    if spec.deprecated:
        text += f" Deprecated: {spec.deprecated}"
    return types.Tool(name=name, title=spec.name, description=text,
                      input_schema=spec.input.model_json_schema(),
                      output_schema=spec.output.model_json_schema())


def _error(exc: MeshError) -> types.CallToolResult:
    doc = {**exc.to_dict(), "hint": exc.hint, "record_id": exc.record_id}
    return types.CallToolResult(content=[types.TextContent(type="text",
                                                           text=orjson.dumps(doc).decode())],
                                is_error=True)


def mcp_server(mesh: Mesh, *, identity: Identity) -> Server[Any]:
    """An MCP server whose tools are ``mesh``'s capabilities (those ``identity``'s principal
    may call); every tool call is ``mesh.ainvoke`` for that principal's tenant and caller."""

    def visible(principal: Principal) -> dict[str, CapabilitySpec]:
        return {name: spec for name, spec in tool_names(list(mesh.catalog)).items()
                if principal.may_call(spec.key)}

    async def list_tools(ctx: ServerRequestContext[Any, Any],
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        principal = await identity(ctx)
        return types.ListToolsResult(tools=[_tool(name, spec)
                                            for name, spec in visible(principal).items()])

    async def call_tool(ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
                        ) -> types.CallToolResult:
        try:
            principal = await identity(ctx)
            spec = visible(principal).get(params.name)
            if spec is None:  # unknown and not allowed read alike (a key says nothing else)
                raise UnknownCapability(f"no tool named {params.name!r}",
                                        hint="tools/list shows what this credential may call")
            result = await mesh.ainvoke(f"{spec.name}@{spec.version}",
                                        dict(params.arguments or {}),
                                        tenant=principal.tenant, caller=principal.caller)
        except MeshError as exc:
            return _error(exc)
        output = (result.output.model_dump(mode="json") if result.output is not None
                  else None)
        meta = {"record_id": result.record.record_id, "outcome": str(result.record.outcome)}
        if result.needs_review:  # parked for a person: no answer yet
            meta["review_id"] = result.review_id or ""
            body = {"status": "review", **meta}
            return types.CallToolResult(content=[types.TextContent(
                type="text", text=orjson.dumps(body).decode())], meta=meta)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=orjson.dumps(output).decode())],
            structured_content=output, meta=meta)

    return Server("aios-mesh", version=__version__,
                  description="Governed capabilities of an aios-mesh as MCP tools",
                  on_list_tools=list_tools, on_call_tool=call_tool)


def authenticated_app(app: ASGIApp, authenticator: GatewayAuthenticator) -> ASGIApp:
    """``app`` (the server's streamable-HTTP app) behind the gateway's authenticator: a
    request without a valid credential is answered 401 with a problem document; a valid one
    carries its principal to the tool handlers (:func:`request_identity`)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        try:
            principal = await authenticator.authenticate(HTTPConnection(scope))
        except MeshError as exc:
            await problem(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})[_PRINCIPAL] = principal
        await app(scope, receive, send)

    return guarded
