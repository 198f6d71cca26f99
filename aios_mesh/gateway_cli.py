"""``aios-mesh gateway``: serve the capabilities over HTTP (see ``docs/guides/gateway.md``).

    aios-mesh gateway --config aios-mesh.toml --port 8080 --workers 4
"""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer

from aios_mesh.errors import MeshError

__all__ = ["gateway_command"]


def gateway_command(fail: Callable[[MeshError], None], config_option: Any,
                    app_option: Any) -> Callable[..., None]:
    """The ``gateway`` command; ``fail`` and the ``--config``/``--app`` options' ``Annotated``
    types are the main CLI's, so the gateway finds its config like every other command."""
    config_opt = get_args(config_option)[1]
    app_opt = get_args(app_option)[1]

    def gateway(
        host: Annotated[str, typer.Option(help="Address to listen on (behind a TLS proxy: "
                                               "127.0.0.1 or a private address).")
                        ] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
        workers: Annotated[int, typer.Option(help="Worker processes, each with its own "
                                                  "mesh.")] = 1,
        graceful: Annotated[int, typer.Option(help="Seconds in-flight requests may run on "
                                                   "after SIGTERM.")] = 30,
        keep_alive: Annotated[int, typer.Option(help="Seconds an idle keep-alive connection "
                                                     "stays open.")] = 5,
        head_timeout: Annotated[float, typer.Option(help="Seconds a request's line and "
                                                         "headers may take to arrive.")] = 10.0,
        authenticator: Annotated[Optional[str], typer.Option(  # noqa: UP045
            help="'module:factory' making the Authenticator from the mesh (default: "
                 "\\[gateway.auth] of the config).", envvar="AIOS_MESH_GATEWAY_AUTHENTICATOR",
            show_default=False)] = None,
        config: Annotated[Optional[Path], config_opt] = None,  # noqa: UP045
        app_ref: Annotated[Optional[str], app_opt] = None,  # noqa: UP045
    ) -> None:
        """Serve the capabilities over HTTP (/v1, OpenAPI at /v1/openapi.json) until SIGTERM,
        then finish in-flight calls and flush the outbox."""
        try:
            from aios_mesh.gateway.server import ServerSettings, serve

            settings = ServerSettings(host=host, port=port, workers=workers,
                                      graceful_s=graceful, keep_alive_s=keep_alive,
                                      head_timeout_s=head_timeout)
            serve(settings, config=config, app_ref=app_ref, authenticator=authenticator)
        except MeshError as exc:
            fail(exc)

    return gateway
