"""Real gateway processes for tests: :func:`running_gateway` starts ``aios-mesh gateway`` under
uvicorn on a free port and stops it (the whole process group) afterwards.

    with running_gateway(config_path, workers=2) as gw:
        httpx.get(f"{gw.url}/healthz")
        gw.process.popen.send_signal(signal.SIGTERM)  # graceful shutdown, in a test

No pytest import here: other test helpers and benchmarks use it too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from aios_mesh.processes import LocalProcess
from aios_mesh.testing.processes import free_port, start_process, wait_until

__all__ = ["RunningGateway", "running_gateway"]


@dataclass(frozen=True, slots=True)
class RunningGateway:
    """A started gateway: where it answers and its process (log in ``process.log``)."""

    url: str
    port: int
    process: LocalProcess


def _healthy(url: str) -> bool:
    return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200


@contextlib.contextmanager
def running_gateway(config_path: str | Path | None, *, workers: int = 1,
                    env: Mapping[str, str] | None = None, app: str | None = None,
                    authenticator: str | None = None, port: int | None = None,
                    args: Sequence[str] = (), cwd: str | Path | None = None,
                    timeout: float = 60.0) -> Iterator[RunningGateway]:
    """Run ``aios-mesh gateway`` in a subprocess until the block ends.

    Args:
        config_path: the mesh config (``--config``); ``None`` for ``--app`` naming a Mesh.
        workers: ``--workers``; the gateway is ready when ``/healthz`` answers.
        env: extra environment variables (e.g. backend URLs).
        app: ``--app module:attr`` (the working directory ``cwd`` is on the import path).
        authenticator: ``--authenticator module:factory`` (default: ``[gateway.auth]``).
        port: the port (default: a free one).
        args: more command-line arguments (``--graceful 5``, ``--head-timeout 1``, ...).
        cwd: the working directory (default: the current one), also put on ``PYTHONPATH``.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    here = str(Path(cwd or os.getcwd()).resolve())
    cmd = [sys.executable, "-m", "aios_mesh.cli", "gateway", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers)]
    if config_path is not None:
        cmd += ["--config", str(config_path)]
    if app is not None:
        cmd += ["--app", app]
    if authenticator is not None:
        cmd += ["--authenticator", authenticator]
    cmd += list(args)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    full_env = {"PYTHONPATH": path, **(env or {})}
    with start_process(cmd, name="gateway", env=full_env, cwd=here,
                       ready=lambda: wait_until(lambda: _healthy(url), timeout=timeout,
                                                what=f"gateway on {url}")) as proc:
        yield RunningGateway(url, port, proc)
