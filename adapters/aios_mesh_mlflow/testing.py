"""Start a real ``mlflow server`` for tests: 127.0.0.1, a free port, always stopped.

Example::

    with mlflow_server(tmp_path) as url:          # sqlite backend store in tmp_path
        registry = MlflowRegistry.from_url(parse_url(f"mlflow+{url}"), base_dir=tmp_path)

Pass ``backend_store_uri="postgresql+psycopg://postgres@127.0.0.1:5432/DB"`` for a
PostgreSQL-backed server (the ``+psycopg`` driver: psycopg 3; MLflow defaults to psycopg2).
Startup takes 6-9 s on an idle machine (the server runs its database migrations, then
imports its app again in the worker), several times that on a loaded one. Test suites that
need servers in several modules share them with :func:`shared_mlflow_servers`: started once
per process (concurrently), stopped and their databases dropped when the process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from aios_mesh.testing.processes import free_port, start_process, wait_until
from aios_mesh.testing.servers import launcher

__all__ = [
    "POSTGRES_ADMIN_URL",
    "StoreKind",
    "mlflow_server",
    "prestart_mlflow_servers",
    "shared_mlflow_servers",
    "stop_shared_mlflow_servers",
]

#: Where :func:`shared_mlflow_servers` creates its throw-away PostgreSQL database.
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
StoreKind = Literal["sqlite", "postgresql"]


@contextlib.contextmanager
def mlflow_server(workdir: Path, *, backend_store_uri: str | None = None,
                  port: int | None = None, timeout: float = 180.0) -> Iterator[str]:
    """Run ``mlflow server --workers 1`` and yield its ``http://127.0.0.1:PORT`` URL.

    Artifacts are served by the server itself (``mlflow-artifacts:/``) from
    ``workdir/artifacts``; the sqlite store (default) is ``workdir/mlflow.db``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    store = backend_store_uri or f"sqlite:///{(workdir / 'mlflow.db').absolute()}"
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
            return bool(resp.status == 200)

    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", store,
           "--artifacts-destination", str((workdir / "artifacts").absolute()),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}
    with start_process(cmd, name="mlflow-server", env=env, cwd=workdir, log_dir=workdir,
                       ready=lambda: wait_until(healthy, timeout=timeout, interval=0.1,
                                                what=f"mlflow server on {url}")) as proc:
        try:
            yield url
        finally:
            proc.stop(timeout=3)  # graceful shutdown buys a test nothing; SIGKILL after 3 s


_futures: dict[str, Future[str]] = {}
_shared_lock = threading.Lock()
_stack = contextlib.ExitStack()
_pool: ThreadPoolExecutor | None = None


@contextlib.contextmanager
def _postgres_database(admin_url: str) -> Iterator[str]:
    # the PostgreSQL adapter's launcher (needs psycopg; the sqlite store does not)
    with launcher("postgres")(admin_url, prefix="aios_mesh_mlflow") as url:
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)


def _start(kind: StoreKind) -> str:
    stack = contextlib.ExitStack()
    with _shared_lock:
        _stack.push(stack)  # stopped at exit whatever happens below
    workdir = Path(tempfile.mkdtemp(prefix=f"aios-mesh-mlflow-{kind}-"))
    stack.callback(shutil.rmtree, workdir, True)
    try:
        store = None
        if kind == "postgresql":
            store = stack.enter_context(_postgres_database(POSTGRES_ADMIN_URL))
        return stack.enter_context(mlflow_server(workdir, backend_store_uri=store))
    except BaseException:
        stack.close()
        raise


def stop_shared_mlflow_servers() -> None:
    """Stop every server :func:`shared_mlflow_servers` started (and drop their databases).
    Runs at exit anyway; call it from a test session's teardown to stop them sooner
    (``request.session.addfinalizer(stop_shared_mlflow_servers)``). Idempotent."""
    with _shared_lock:
        _futures.clear()
    _stack.close()


def prestart_mlflow_servers(*kinds: StoreKind) -> None:
    """Start the servers :func:`shared_mlflow_servers` would, in background threads, and
    return at once (so they boot while other tests run)."""
    global _pool
    with _shared_lock:
        for kind in dict.fromkeys(kinds):
            if kind not in _futures:
                if _pool is None:
                    _pool = ThreadPoolExecutor(4, thread_name_prefix="mlflow-server")
                    atexit.register(stop_shared_mlflow_servers)
                _futures[kind] = _pool.submit(_start, kind)


def shared_mlflow_servers(*kinds: StoreKind) -> dict[str, str]:
    """``{kind: "http://127.0.0.1:PORT"}`` for each requested backend store, starting the
    missing servers concurrently and waiting until they answer. They live until the process
    exits (``atexit``) so every test module of a run shares them; models in them must have
    unique names. A server that failed to start raises its error again on every call.

    ``"postgresql"`` uses a fresh database on :data:`POSTGRES_ADMIN_URL` (needs psycopg 3),
    dropped on exit.
    """
    prestart_mlflow_servers(*kinds)
    with _shared_lock:
        futures = {k: _futures[k] for k in kinds}
    return {k: f.result() for k, f in futures.items()}
