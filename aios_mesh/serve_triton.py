"""``aios-mesh serve triton NAME@ALIAS``: serve a registered model from a real Triton server.

The registry resolves ``NAME@ALIAS`` to a pinned version; the PyTriton app
``serving/triton/server.py`` then serves it as Triton model ``NAME``, ``model_version`` =
that registry version (plus the conformance echo model), on 127.0.0.1. The server runs with
the Triton environment's Python — never this one: PyTriton 0.7 needs numpy<2 and brings its
own protobuf — found as ``python=`` > ``AIOS_MESH_TRITON_PYTHON`` > ``.nox/triton/bin/python``
of this checkout. ``LD_LIBRARY_PATH`` gets that Python's ``LIBDIR`` (else Triton's Python
backend fails with ``'_thread.RLock' object has no attribute '_recursion_count'``).

Nothing here imports a backend SDK at import time; the registry adapter is loaded on call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from aios_mesh.errors import BackendUnavailable, ConfigError, MeshError
from aios_mesh.testing.processes import LocalProcess

__all__ = ["serve_triton", "server_env", "server_script", "start_triton_server",
           "triton_python", "wait_triton_ready"]

_ROOT = Path(__file__).resolve().parent.parent


def triton_python(python: str | None = None) -> str:
    """The Triton environment's interpreter (argument > ``AIOS_MESH_TRITON_PYTHON`` >
    ``<checkout>/.nox/triton/bin/python``); :class:`ConfigError` when it does not exist."""
    found = python or os.environ.get("AIOS_MESH_TRITON_PYTHON") \
        or str(_ROOT / ".nox" / "triton" / "bin" / "python")
    if not Path(found).exists():
        raise ConfigError(f"no Triton Python at {found}",
                          hint="build the environment: python3 -m venv .nox/triton && "
                               ".nox/triton/bin/pip install -r serving/triton/requirements.txt "
                               "(or set AIOS_MESH_TRITON_PYTHON)")
    return found


def server_script() -> Path:
    """``serving/triton/server.py`` of this checkout (``AIOS_MESH_TRITON_SERVER`` overrides)."""
    path = Path(os.environ.get("AIOS_MESH_TRITON_SERVER")
                or _ROOT / "serving" / "triton" / "server.py")
    if not path.is_file():
        raise ConfigError(f"no Triton server app at {path}",
                          hint="run from a source checkout or set AIOS_MESH_TRITON_SERVER")
    return path


def server_env(python: str, **extra: str) -> dict[str, str]:
    """Environment for the server process: ``LD_LIBRARY_PATH`` = ``python``'s LIBDIR first."""
    libdir = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
        capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    current = os.environ.get("LD_LIBRARY_PATH", "")
    env = {"LD_LIBRARY_PATH": ":".join(p for p in (libdir, current) if p),
           "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1"}
    env.update(extra)
    return env


def _ready(http_port: int, models: Sequence[tuple[str, str | None]]) -> bool:
    base = f"http://127.0.0.1:{http_port}/v2"
    urls = [f"{base}/health/ready"] + [
        f"{base}/models/{name}/versions/{version}/ready" if version
        else f"{base}/models/{name}/ready" for name, version in models]
    for url in urls:
        with urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status != 200:
                return False
    return True


def wait_triton_ready(http_port: int, models: Sequence[tuple[str, str | None]] = (), *,
                      timeout: float = 120.0,
                      alive: Callable[[], bool] | None = None) -> None:
    """Block until the server and each ``(name, version)`` model answer ready over HTTP."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            raise BackendUnavailable("the Triton server process exited",
                                     hint="see its log for the reason")
        with contextlib.suppress(Exception):
            if _ready(http_port, models):
                return
        if time.monotonic() > deadline:
            raise BackendUnavailable(f"Triton on 127.0.0.1:{http_port} not ready after "
                                     f"{timeout:.0f}s", hint="see its log")
        time.sleep(0.2)


@contextlib.contextmanager
def start_triton_server(*, http_port: int, grpc_port: int, python: str | None = None,
                        model: tuple[str, str, str] | None = None,
                        echo: str | None = "echo-upper",
                        echo_max_batch: int | None = None,
                        pytriton_home: str | Path | None = None,
                        timeout: float = 120.0,
                        log_dir: str | Path | None = None) -> Iterator[LocalProcess]:
    """Run ``serving/triton/server.py`` (echo model, and ``model`` = ``(name, version,
    artifact folder)`` if given) in its own process group; yield once every model is ready;
    stop the whole group (tritonserver included) on exit. ``echo_max_batch`` overrides the
    echo model's max_batch_size (16). ``pytriton_home`` replaces ``~/.cache/pytriton`` as the
    parent of PyTriton's per-run workspace."""
    py = triton_python(python)
    extra: dict[str, str] = {"AIOS_MESH_TRITON_ECHO": echo or ""}
    if echo_max_batch is not None:
        extra["AIOS_MESH_TRITON_ECHO_MAX_BATCH"] = str(echo_max_batch)
    waits: list[tuple[str, str | None]] = [(echo, "1")] if echo else []
    if model is not None:
        name, version, source = model
        extra.update(AIOS_MESH_MODEL=name, AIOS_MESH_MODEL_VERSION=version,
                     AIOS_MESH_MODEL_SOURCE=source)
        waits.append((name, version))
    if pytriton_home is not None:  # PyTriton's workspaces (model store, sockets) go here
        extra["PYTRITON_HOME"] = str(pytriton_home)
    cmd = [py, str(server_script()), "--http-port", str(http_port),
           "--grpc-port", str(grpc_port)]
    log_path = Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log",
                                     dir=str(log_dir) if log_dir else None)[1])
    with log_path.open("wb") as log:
        popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, **server_env(py, **extra)},
                                 start_new_session=True)
    proc = LocalProcess("tritonserver", popen, log_path)
    try:
        try:
            wait_triton_ready(http_port, waits, timeout=timeout,
                              alive=lambda: popen.poll() is None)
        except Exception as exc:
            raise BackendUnavailable(
                f"tritonserver did not become ready (exit code {popen.poll()})",
                hint=f"its log ends with:\n{proc.tail()}") from exc
        yield proc
    finally:
        proc.stop(timeout=5)


def _artifact_folder(ref: Any) -> str:
    """A local folder with the version's ``MLmodel`` (fetched from the registry if remote)."""
    try:
        from aios_mesh_mlflow.loading import _fetch
    except ImportError as exc:
        raise ConfigError("resolving registered models needs MLflow",
                          hint='pip install "aios-mesh[mlflow]"') from exc
    return str(_fetch(ref))


def serve_triton(spec: str, *, http_port: int, grpc_port: int, registry: str,
                 python: str | None) -> int:
    """Resolve ``spec`` (``NAME@ALIAS`` or ``NAME/VERSION``) through ``registry`` (a registry
    URL, e.g. ``mlflow+sqlite:///registry/mlflow.db`` — relative to the working folder), print
    the pinned name/version/source, serve it from Triton on 127.0.0.1 (``http_port``,
    ``grpc_port``) and block until interrupted. Returns the exit code: 0 after Ctrl-C/SIGTERM,
    1 when resolution or start-up fails, the server's own code if it dies."""
    from aios_mesh.backends import load_adapter

    async def resolve() -> Any:
        adapter = load_adapter("registry", registry, base_dir=Path.cwd())
        try:
            return await adapter.resolve(spec)
        finally:
            await adapter.aclose()

    try:
        ref = asyncio.run(resolve())
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


def _block(proc: LocalProcess) -> int:
    import signal

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        return proc.popen.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aios_mesh.serve_triton NAME@ALIAS --registry URL [--http-port P] ...``."""
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
