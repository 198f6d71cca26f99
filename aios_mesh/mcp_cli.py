"""``aios-mesh mcp``: serve the capabilities as MCP tools (see :mod:`aios_mesh.mcp_tools`).

    aios-mesh mcp --tenant acme --caller ide               # stdio, for a local MCP client
    aios-mesh mcp --transport http --port 8765             # shared: API keys / JWTs required
"""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args

import typer

from aios_mesh.errors import ConfigError, MeshError

__all__ = ["mcp_command"]


def mcp_command(make_mesh: Callable[..., Any], fail: Callable[[MeshError], None],
                config_option: Any, app_option: Any) -> Callable[..., None]:
    """The ``mcp`` command; ``make_mesh``, ``fail`` and the ``--config``/``--app`` options'
    ``Annotated`` types are the main CLI's."""
    config_opt = get_args(config_option)[1]
    app_opt = get_args(app_option)[1]

    def mcp(
        transport: Annotated[str, typer.Option(
            help="stdio (a local client starts this command) or http (streamable HTTP, "
                 "every request with an API key or JWT, as on the gateway).")] = "stdio",
        tenant: Annotated[Optional[str], typer.Option(  # noqa: UP045
            help="stdio only: the tenant every call is made for.", show_default=False)] = None,
        caller: Annotated[str, typer.Option(help="stdio only: the caller recorded on each "
                                                 "call.")] = "mcp",
        host: Annotated[str, typer.Option(help="http only: address to listen on.")
                        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="http only: TCP port.")] = 8765,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
        app_ref: Annotated[Optional[str], app_opt] = None,  # noqa: UP045
    ) -> None:
        """Serve the capabilities as MCP tools: each tool call is a governed capability call
        (policy, quota, redaction, decision record) for the client's tenant and caller.

        Example (a local client's server entry): command "aios-mesh", args ["mcp",
        "--tenant", "acme", "--caller", "ide", "--config", "/srv/mesh/aios-mesh.toml"]
        """
        chosen: Literal["stdio", "http"]
        if transport not in ("stdio", "http"):
            fail(ConfigError(f"unknown transport {transport!r}", hint="use stdio or http"))
            return
        chosen = "stdio" if transport == "stdio" else "http"
        try:
            if chosen == "stdio" and not tenant:
                raise ConfigError("a stdio MCP server serves one tenant",
                                  hint="pass --tenant (and --caller), or use --transport http "
                                       "with credentials")
            _serve(make_mesh(config, app_ref), chosen, tenant or "", caller, host, port)
        except MeshError as exc:
            fail(exc)

    return mcp


def _serve(mesh: Any, transport: str, tenant: str, caller: str, host: str, port: int) -> None:
    import anyio

    from aios_mesh.mcp_tools import (
        authenticated_app,
        fixed_identity,
        mcp_server,
        request_identity,
    )

    with mesh:
        if transport == "stdio":
            from mcp.server.stdio import stdio_server

            if tenant not in mesh.config.tenants:
                from aios_mesh.errors import UnknownTenant

                raise UnknownTenant(f"tenant {tenant!r} is not declared",
                                    hint="add it under [tenants] in the config")
            server = mcp_server(mesh, identity=fixed_identity(tenant, caller))

            async def run() -> None:
                async with stdio_server() as (read, write):
                    await server.run(read, write, server.create_initialization_options())

            anyio.run(run)
            return
        import uvicorn

        from aios_mesh.gateway.auth.authenticator import authenticator_from_config

        server = mcp_server(mesh, identity=request_identity)
        app = authenticated_app(server.streamable_http_app(host=host),
                                authenticator_from_config(mesh))
        uvicorn.run(app, host=host, port=port, log_level="warning")
