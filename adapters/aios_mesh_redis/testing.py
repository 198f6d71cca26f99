"""Start a real redis-server for tests, benchmarks and examples: 127.0.0.1, a free port,
nothing kept on disk, always stopped. Registered as the ``redis`` launcher
(:func:`aios_mesh.testing.launcher`)::

    with redis_server(tmp_path) as redis:
        quota = load_adapter("quota", f"redis://{redis.address}/0", base_dir=tmp_path)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from aios_mesh.testing.processes import free_port, start_process, wait_for_port
from aios_mesh.testing.servers import Server, find_binary

__all__ = ["redis_server"]


@contextlib.contextmanager
def redis_server(log_dir: Path, *, port: int | None = None) -> Iterator[Server]:
    """A redis-server that keeps nothing on disk."""
    binary = find_binary("redis-server", hint="apt-get install redis-server")
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    with start_process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no"], ready=lambda: wait_for_port(port),
                       name="redis", log_dir=log_dir) as proc:
        yield Server(f"127.0.0.1:{port}", port, proc)
