"""``aios-mesh serve rayserve NAME@ALIAS``: deploy a registered model on Ray Serve.

Resolves the alias on the registry *here* (prints name, version and source), connects to
the Ray cluster at ``--address`` (or starts a local one), starts Ray Serve's HTTP proxy on
``--port`` and runs the application ``--app`` (default: the model's name) at ``--route``
(default ``/NAME``), pinned to the resolved version, with ``@serve.batch`` batching
(``--max-batch-size``, ``--batch-wait-timeout-s``) and either ``--num-replicas`` or
autoscaling (``--min-replicas``/``--max-replicas``/``--target-ongoing-requests``). Point a
mesh at it with ``serving = "rayserve+http://HOST:PORT/ROUTE"`` (or, inside the cluster,
``rayserve+handle://APP``). Runs until interrupted, then deletes the application (and stops
the Ray instance it started).

Reaches the CLI through the entry point ``serve.rayserve`` of ``aios_mesh.cli``; also runs as
``python -m aios_mesh_rayserve.serve NAME@ALIAS --port 8123``.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from aios_mesh.backends import DEFAULT_URLS
from aios_mesh.errors import BackendUnavailable, MeshError
from aios_mesh.ports.registry import ModelRef
from aios_mesh.resolver import resolve_on

__all__ = ["Deployed", "command", "deploy_registered", "main", "serve_rayserve"]


@dataclass(frozen=True, slots=True)
class Deployed:
    """What :func:`deploy_registered` put on Ray Serve."""

    ref: ModelRef
    app: str
    route: str
    url: str  # the mesh's serving URL (rayserve+http://...)


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Connect this process to the Ray cluster at ``address`` (``None``: start a local one);
    returns whether this call started Ray. A cluster that does not answer is
    :class:`BackendUnavailable` naming the address."""
    import ray

    host, sep, port = (address or "").rpartition(":")
    if address and sep and host and port.isdigit() and "://" not in address:  # GCS host:port
        try:  # Ray itself waits a minute and more on an address nobody listens on
            socket.create_connection((host, int(port)), timeout=3.0).close()
        except OSError as exc:
            raise BackendUnavailable(f"no Ray cluster answers at {address}: {exc}",
                                     hint="start it (ray start --head --port PORT) or leave "
                                          "--address out to start a local one") from exc
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, num_cpus=None if address else num_cpus,
                 include_dashboard=False, log_to_driver=False)
    except (ConnectionError, TimeoutError, RuntimeError) as exc:
        raise BackendUnavailable(f"no Ray cluster answers at {address!r}: {exc}",
                                 hint="start it (ray start --head) or leave --address out "
                                      "to start a local one") from exc
    return True


def deploy_registered(spec: str, *, port: int, registry: str = "", app: str | None = None,
                      route: str | None = None, options: Any = None, host: str = "127.0.0.1",
                      base_dir: Path | None = None) -> Deployed:
    """Resolve ``spec`` and run it as a Ray Serve application in the cluster this process is
    connected to (Serve's proxy on ``host:port``); returns once the replicas are ready."""
    from ray import serve

    from aios_mesh_rayserve.deployment import DeploymentOptions, build_app

    base = (base_dir or Path(".aios-mesh")).absolute()
    ref = resolve_on(registry or DEFAULT_URLS["registry"], spec, base_dir=base)
    name = app or ref.name
    prefix = route or f"/{ref.name}"
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(registered=[ref], options=options or DeploymentOptions()),
              name=name, route_prefix=prefix)
    return Deployed(ref, name, prefix, f"rayserve+http://{host}:{port}{prefix}")


def serve_rayserve(spec: str, *, port: int, registry: str = "", address: str | None = None,
                   app: str | None = None, route: str | None = None, options: Any = None,
                   host: str = "127.0.0.1", base_dir: Path | None = None,
                   stop: threading.Event | None = None) -> int:
    """Deploy ``spec`` (see :func:`deploy_registered`) and serve until SIGINT/SIGTERM (or
    ``stop`` is set); returns 0."""
    import ray
    from ray import serve

    started = connect(address)
    try:
        done = deploy_registered(spec, port=port, registry=registry, app=app, route=route,
                                 options=options, host=host, base_dir=base_dir)
        ref = done.ref
        print(f"model    {ref.name}", flush=True)
        print(f"version  {ref.version}" + (f"  (alias {ref.alias})" if ref.alias else ""),
              flush=True)
        print(f"source   {ref.source}", flush=True)
        print(f"serving  {done.url}  (application {done.app!r}; in the cluster: "
              f"rayserve+handle://{done.app})", flush=True)
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        serve.delete(done.app)
        return 0
    finally:
        if started:
            serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
            ray.shutdown()


def command(
    spec: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION to serve.")],
    registry: Annotated[str, typer.Option(help="Registry URL (default: embedded).")] = "",
    port: Annotated[int, typer.Option(help="Ray Serve's HTTP port.")] = 8123,
    address: Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional
        help="Ray cluster address (default: start a local Ray).")] = None,
    app: Annotated[Optional[str], typer.Option(help="Application name (default: NAME).")] = None,  # noqa: UP045
    route: Annotated[Optional[str], typer.Option(help="Route prefix (default: /NAME).")] = None,  # noqa: UP045
    max_batch_size: Annotated[int, typer.Option(help="@serve.batch max_batch_size.")] = 64,
    batch_wait_timeout_s: Annotated[float, typer.Option(help="@serve.batch wait.")] = 0.005,
    num_replicas: Annotated[int, typer.Option(help="Fixed replica count.")] = 1,
    min_replicas: Annotated[int, typer.Option(help="Autoscaling minimum.")] = 1,
    max_replicas: Annotated[Optional[int], typer.Option(  # noqa: UP045
        help="Autoscaling maximum (turns autoscaling on).")] = None,
    target_ongoing_requests: Annotated[float, typer.Option(
        help="Autoscaling target per replica.")] = 2.0,
    num_cpus: Annotated[float, typer.Option(help="CPUs per replica.")] = 0.25,
) -> None:
    """Serve a registry model on Ray Serve (batching on) until interrupted.

    Point a mesh at it with serving = "rayserve+http://127.0.0.1:PORT/ROUTE".
    """
    from aios_mesh_rayserve.deployment import DeploymentOptions

    opts = DeploymentOptions(max_batch_size=max_batch_size,
                             batch_wait_timeout_s=batch_wait_timeout_s,
                             num_replicas=num_replicas, min_replicas=min_replicas,
                             max_replicas=max_replicas,
                             target_ongoing_requests=target_ongoing_requests, num_cpus=num_cpus)
    code = serve_rayserve(spec, port=port, registry=registry, address=address, app=app,
                          route=route, options=opts)
    raise typer.Exit(code=code)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aios_mesh_rayserve.serve NAME@ALIAS [--port P] [--registry URL] ...``."""
    from aios_mesh_rayserve.deployment import DeploymentOptions

    parser = argparse.ArgumentParser(prog="aios-mesh serve rayserve")
    parser.add_argument("spec", help="name@alias, name/version or name")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--registry", default="")
    parser.add_argument("--address", default=None, help="Ray cluster (default: local)")
    parser.add_argument("--app", default=None)
    parser.add_argument("--route", default=None)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.005)
    parser.add_argument("--num-replicas", type=int, default=1)
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=None)
    parser.add_argument("--target-ongoing-requests", type=float, default=2.0)
    parser.add_argument("--num-cpus", type=float, default=0.25)
    parser.add_argument("--state-dir", type=Path, default=None)
    a = parser.parse_args(argv)
    opts = DeploymentOptions(max_batch_size=a.max_batch_size,
                             batch_wait_timeout_s=a.batch_wait_timeout_s,
                             num_replicas=a.num_replicas, min_replicas=a.min_replicas,
                             max_replicas=a.max_replicas,
                             target_ongoing_requests=a.target_ongoing_requests,
                             num_cpus=a.num_cpus)
    try:
        return serve_rayserve(a.spec, port=a.port, registry=a.registry, address=a.address,
                              app=a.app, route=a.route, options=opts, host=a.host,
                              base_dir=a.state_dir)
    except MeshError as exc:
        print(exc.cli_text(), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
