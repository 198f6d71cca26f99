"""Start real backends as local processes on free ports, and always stop them.

Example::

    port = free_port()
    with start_process(["mlflow", "server", "--host", "127.0.0.1", "--port", str(port)],
                       ready=lambda: wait_for_port(port), name="mlflow") as proc:
        ...  # talk to http://127.0.0.1:{port}
    # the process group is gone here, even if the body raised
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from aios_mesh.errors import BackendUnavailable
from aios_mesh.processes import LocalProcess

__all__ = ["LocalProcess", "docker_engine_answers", "free_port", "start_process",
           "wait_for_port", "wait_until"]


def docker_engine_answers() -> bool:
    """Whether ``docker info`` reaches a Docker engine: tests that need one skip without it
    (the only skip allowed), and fail when it is there but their service is not."""
    docker = shutil.which("docker")
    return docker is not None and subprocess.run([docker, "info"], capture_output=True,
                                                 check=False).returncode == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], *, timeout: float = 30.0,
               interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``check`` until it returns True or raise :class:`BackendUnavailable`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    raise BackendUnavailable(f"{what} not ready after {timeout:.0f}s")


def wait_for_port(port: int, host: str = "127.0.0.1", *, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on ``host:port``."""

    def _open() -> bool:
        with socket.create_connection((host, port), timeout=0.5):
            return True

    wait_until(_open, timeout=timeout, what=f"{host}:{port}")


@contextlib.contextmanager
def start_process(cmd: Sequence[str], *, ready: Callable[[], None], name: str | None = None,
                  env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                  log_dir: str | Path | None = None) -> Iterator[LocalProcess]:
    """Run ``cmd`` in its own process group, call ``ready()`` (which blocks until the server
    answers or raises), yield it, and stop it on exit. If ``ready`` fails the error includes the
    tail of the process log, so a failed start explains itself."""
    label = name or Path(cmd[0]).name
    log_path = Path(tempfile.mkstemp(prefix=f"{label}-", suffix=".log",
                                     dir=str(log_dir) if log_dir else None)[1])
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log:
        popen = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                                 env=full_env, cwd=cwd, start_new_session=True)
    proc = LocalProcess(label, popen, log_path)
    try:
        try:
            ready()
        except Exception as exc:
            raise BackendUnavailable(
                f"{label} did not become ready (exit code {popen.poll()})",
                hint=f"its log ends with:\n{proc.tail()}") from exc
        yield proc
    finally:
        proc.stop()
