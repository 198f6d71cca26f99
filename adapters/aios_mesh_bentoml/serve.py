"""``aios-mesh serve bentoml NAME@ALIAS``: serve a registered model with BentoML.

Resolves the alias on the registry *here* (prints name, version and source), then runs
``bentoml serve aios_mesh_bentoml.service:MeshModelService`` from the BentoML environment's
interpreter with the model pinned to that version (``AIOS_MESH_MODEL=name/version``), so the
service answers for exactly the version printed even if the alias moves meanwhile. Point a
mesh at it with ``serving = "bentoml+http://HOST:PORT"``.

The command reaches the ``aios-mesh`` CLI through the entry point ``serve.bentoml`` of the
``aios_mesh.cli`` group (:func:`command`); it also runs as
``python -m aios_mesh_bentoml.serve NAME@ALIAS --port 3000 --registry URL``.

Nothing here imports ``bentoml`` (it lives in its own environment, see
:mod:`aios_mesh_bentoml.launch`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Optional

import typer

from aios_mesh.backends import DEFAULT_URLS
from aios_mesh.errors import MeshError
from aios_mesh.resolver import resolve_on
from aios_mesh_bentoml.launch import bentoml_command, bentoml_python, server_env

__all__ = ["command", "main", "serve_bentoml"]


def serve_bentoml(spec: str, *, port: int, registry: str, python: str | None,
                  host: str = "127.0.0.1", base_dir: Path | None = None) -> int:
    """Resolve ``spec`` on ``registry`` and serve that version with BentoML until the server
    exits; returns its exit code.

    Args:
        spec: ``name@alias`` (or ``name/version``, ``name`` for the latest version).
        port: the HTTP port of the service.
        registry: registry URL; ``""`` means the embedded default
            (``mlflow+sqlite:///registry/mlflow.db``). Relative paths resolve against
            ``base_dir``.
        python: the BentoML environment's interpreter; ``None`` finds it
            (``$AIOS_MESH_BENTOML_PYTHON``, ``.nox/bentoml/bin/python``, this interpreter).
        host: the address to bind (``0.0.0.0`` to serve other machines).
        base_dir: the mesh's state folder (default ``./.aios-mesh``).

    Raises:
        MeshError: the alias does not resolve (``NotFound``), the registry is unreachable, or
            no BentoML environment exists (``ConfigError`` with the commands that create it).
    """
    base = (base_dir or Path(".aios-mesh")).absolute()
    registry = registry or DEFAULT_URLS["registry"]
    interpreter = bentoml_python(python)
    ref = resolve_on(registry, spec, base_dir=base)
    pinned = f"{ref.name}/{ref.version}"
    print(f"model    {ref.name}", flush=True)
    print(f"version  {ref.version}" + (f"  (alias {ref.alias})" if ref.alias else ""),
          flush=True)
    print(f"source   {ref.source}", flush=True)
    print(f"serving  http://{host}:{port}  — mesh: serving = \"bentoml+http://{host}:{port}\"",
          flush=True)
    env = server_env(model=pinned, registry=registry, base_dir=base)
    proc = subprocess.Popen(bentoml_command(interpreter, port, host=host),
                            env={**os.environ, **env})
    restore: dict[signal.Signals, Any] = {}

    def forward(signum: int, frame: FrameType | None) -> None:
        proc.send_signal(signum)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            restore[sig] = signal.signal(sig, forward)
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # pragma: no cover - SIGINT is forwarded above
                proc.send_signal(signal.SIGINT)
    finally:
        for sig, handler in restore.items():
            signal.signal(sig, handler)


def command(
    spec: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION to serve.")],
    registry: Annotated[str, typer.Option(
        help="Registry URL, e.g. mlflow+sqlite:///registry/mlflow.db or "
             "mlflow+http://host:5000.")] = "",
    port: Annotated[int, typer.Option(help="HTTP port (bound on 127.0.0.1).")] = 3000,
    python: Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional
        help="Interpreter of the server's own environment (default: .nox/<server>/bin/python; "
             "`make servers` creates it).")] = None,
) -> None:
    """Serve a registry model with BentoML (adaptive batching on) until interrupted.

    Point a mesh at it with serving = "bentoml+http://127.0.0.1:PORT".
    """
    code = serve_bentoml(spec, port=port, registry=registry, python=python)
    raise typer.Exit(code=code)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aios_mesh_bentoml.serve NAME@ALIAS [--port P] [--registry URL]``."""
    parser = argparse.ArgumentParser(prog="aios-mesh serve bentoml",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("spec", help="name@alias, name/version or name")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--registry", default="", help="registry URL (default: embedded)")
    parser.add_argument("--python", default=None, help="the BentoML environment's python")
    parser.add_argument("--state-dir", type=Path, default=None, help="default ./.aios-mesh")
    args = parser.parse_args(argv)
    try:
        return serve_bentoml(args.spec, port=args.port, registry=args.registry,
                             python=args.python, host=args.host, base_dir=args.state_dir)
    except MeshError as exc:
        print(exc.cli_text(), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
