"""``aios-mesh serve triton NAME@ALIAS``: serve a registered model from a real Triton server.

The registry resolves ``NAME@ALIAS`` to a pinned version; the PyTriton app shipped in this
package (:func:`~aios_mesh_triton.launch.server_script`) then serves it as Triton model
``NAME``, ``model_version`` = that registry version (plus the conformance echo model), on
127.0.0.1, from the Triton environment's Python (:func:`~aios_mesh_triton.launch.triton_python`).

The command reaches the ``aios-mesh`` CLI through the entry point ``serve.triton`` of the
``aios_mesh.cli`` group (:func:`command`); it also runs as
``python -m aios_mesh_triton.serve NAME@ALIAS --registry URL [--http-port P] ...``.

Nothing here imports a backend SDK at import time; the registry adapter and MLflow (to fetch
the version's artifacts) are loaded on call.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from aios_mesh.errors import ConfigError, MeshError
from aios_mesh.resolver import resolve_on
from aios_mesh_triton.launch import TritonProcess, start_triton_server

__all__ = ["command", "main", "serve_triton"]


def _artifact_folder(ref: Any) -> str:
    """A local folder with the version's ``MLmodel`` (fetched from the registry if remote)."""
    try:
        from aios_mesh_mlflow.loading import fetch_model_folder
    except ImportError as exc:
        raise ConfigError("resolving registered models needs MLflow",
                          hint='pip install "aios-mesh[mlflow]"') from exc
    return str(fetch_model_folder(ref))


def serve_triton(spec: str, *, http_port: int, grpc_port: int, registry: str,
                 python: str | None) -> int:
    """Resolve ``spec`` (``NAME@ALIAS`` or ``NAME/VERSION``) through ``registry`` (a registry
    URL, e.g. ``mlflow+sqlite:///registry/mlflow.db`` — relative to the working folder), print
    the pinned name/version/source, serve it from Triton on 127.0.0.1 (``http_port``,
    ``grpc_port``) and block until interrupted. Returns the exit code: 0 after Ctrl-C/SIGTERM,
    1 when resolution or start-up fails, the server's own code if it dies."""

    try:
        ref = resolve_on(registry, spec, base_dir=Path.cwd())
        folder = _artifact_folder(ref)
        print(f"model   {ref.name}\nversion {ref.version}"
              + (f" (alias {ref.alias})" if ref.alias else "")
              + f"\nsource  {ref.source or ref.uri}\nfolder  {folder}", flush=True)
        with start_triton_server(http_port=http_port, grpc_port=grpc_port, python=python,
                                 model=(ref.name, str(ref.version), folder)) as proc:
            print(f"pid     {proc.pid}", flush=True)
            print(f"serving {ref.name} version {ref.version} on "
                  f"triton+http://127.0.0.1:{http_port} and "
                  f"triton+grpc://127.0.0.1:{grpc_port} (log: {proc.log}); Ctrl-C stops",
                  flush=True)
            try:
                code = _block(proc)
            except KeyboardInterrupt:
                code = 0
            if code:
                print(f"tritonserver exited with {code}; its log ends with:\n{proc.tail()}",
                      file=sys.stderr, flush=True)
            return code
    except MeshError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""),
              file=sys.stderr, flush=True)
        return 1


def _block(proc: TritonProcess) -> int:
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return proc.popen.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def command(
    spec: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION to serve.")],
    registry: Annotated[str, typer.Option(
        help="Registry URL, e.g. mlflow+sqlite:///registry/mlflow.db or "
             "mlflow+http://host:5000.")] = "mlflow+sqlite:///.aios-mesh/registry/mlflow.db",
    http_port: Annotated[int, typer.Option(help="Triton HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="Triton gRPC port.")] = 8001,
    python: Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional
        help="Interpreter of the server's own environment (default: .nox/<server>/bin/python; "
             "`make servers` creates it).")] = None,
) -> None:
    """Serve a registry model with Triton (via PyTriton, dynamic batching on).

    Point a mesh at it with serving = "triton+grpc://127.0.0.1:GRPC_PORT"; the registry's
    version is Triton's model version, pinned in every request.
    """
    code = serve_triton(spec, http_port=http_port, grpc_port=grpc_port,
                        registry=registry, python=python)
    raise typer.Exit(code=code)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aios_mesh_triton.serve NAME@ALIAS --registry URL [--http-port P] ...``."""
    parser = argparse.ArgumentParser(prog="aios-mesh serve triton")
    parser.add_argument("spec", help="NAME@ALIAS or NAME/VERSION")
    parser.add_argument("--registry", default=os.environ.get(
        "AIOS_MESH_REGISTRY_URL", "mlflow+sqlite:///.aios-mesh/registry/mlflow.db"))
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--python", default=None, help="the Triton environment's python")
    args = parser.parse_args(argv)
    return serve_triton(args.spec, http_port=args.http_port, grpc_port=args.grpc_port,
                        registry=args.registry, python=args.python)


if __name__ == "__main__":
    sys.exit(main())
