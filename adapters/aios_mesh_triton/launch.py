"""How to start the aios-mesh Triton server: which interpreter, which script, which
environment, and a context manager that runs it until every model is ready.

Used by ``aios-mesh serve triton`` (:mod:`aios_mesh_triton.serve`) and by tests and
benchmarks (:mod:`aios_mesh_triton.testing`). Imports no Triton package: the server is the
PyTriton app :file:`app/pytriton_app.py` shipped in this package, run as a script by the
Triton environment's Python — never this one: PyTriton 0.7 needs numpy<2 and brings its own
protobuf. The interpreter is, in order: the ``python`` argument, ``$AIOS_MESH_TRITON_PYTHON``,
``.nox/triton/bin/python`` in the working folder or one above it, then in a folder above this
package (a source checkout installed in editable mode). ``LD_LIBRARY_PATH`` gets
that Python's ``LIBDIR`` (else Triton's Python backend fails with ``'_thread.RLock' object
has no attribute '_recursion_count'``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from aios_mesh.errors import BackendUnavailable, ConfigError
from aios_mesh.processes import LocalProcess

__all__ = ["CREATE_ENV_HINT", "TritonProcess", "server_env", "server_script",
           "start_triton_server", "triton_python", "wait_triton_ready"]

#: How to create the Triton environment (the requirements are in serving/triton/ of the
#: source repository).
CREATE_ENV_HINT = ("create it: python3 -m venv .nox/triton && .nox/triton/bin/pip install "
                   "'nvidia-pytriton==0.7.0' 'numpy>=1.26,<2' scikit-learn 'pandas>=2,<3' "
                   "pyyaml cloudpickle skops  (in a source checkout: `make servers`; or point "
                   "AIOS_MESH_TRITON_PYTHON at an interpreter that has them)")


def _nearest_env() -> Path | None:
    """``.nox/triton/bin/python`` in the working folder or the nearest one above it, else
    above this package's folder."""
    for start in (Path.cwd().absolute(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            candidate = folder / ".nox" / "triton" / "bin" / "python"
            if candidate.exists():
                return candidate
    return None


def triton_python(python: str | None = None) -> str:
    """The Triton environment's interpreter (argument > ``AIOS_MESH_TRITON_PYTHON`` >
    ``.nox/triton/bin/python`` in the working folder or above, or above this package);
    :class:`ConfigError` when there is none."""
    given = python or os.environ.get("AIOS_MESH_TRITON_PYTHON")
    found = Path(given) if given else _nearest_env()
    if found is None:
        raise ConfigError("no Triton Python environment found (looked for "
                          f".nox/triton/bin/python from {Path.cwd()} upwards)",
                          hint=CREATE_ENV_HINT)
    if not found.exists():
        raise ConfigError(f"no Triton Python at {found}", hint=CREATE_ENV_HINT)
    return str(found)


def server_script() -> Path:
    """The PyTriton app shipped in this package (``AIOS_MESH_TRITON_SERVER`` overrides)."""
    path = Path(os.environ.get("AIOS_MESH_TRITON_SERVER")
                or Path(__file__).resolve().parent / "app" / "pytriton_app.py")
    if not path.is_file():
        raise ConfigError(f"no Triton server app at {path}",
                          hint="reinstall aios-mesh (the app ships in aios_mesh_triton/app/) "
                               "or point AIOS_MESH_TRITON_SERVER at it")
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


#: The running server (its own process group; ``stop`` ends tritonserver with it).
TritonProcess = LocalProcess


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
                        log_dir: str | Path | None = None) -> Iterator[TritonProcess]:
    """Run the PyTriton app (echo model, and ``model`` = ``(name, version, artifact folder)``
    if given) in its own process group; yield once every model is ready; stop the whole group
    (tritonserver included) on exit. ``echo_max_batch`` overrides the echo model's
    max_batch_size (16). ``pytriton_home`` replaces ``~/.cache/pytriton`` as the parent of
    PyTriton's per-run workspace."""
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
    proc = TritonProcess("tritonserver", popen, log_path)
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
