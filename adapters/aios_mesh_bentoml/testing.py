"""Start a real ``bentoml serve`` for tests (127.0.0.1, a free port, always stopped), and the
Python test models it can serve.

The server runs from the BentoML environment's interpreter (``$AIOS_MESH_BENTOML_PYTHON``,
default ``<checkout>/.nox/bentoml/bin/python``; see :mod:`aios_mesh_bentoml.launch`).

Example::

    with bentoml_server(tmp_path, python_models={"echo-upper/1": ECHO_UPPER}) as server:
        serving = BentoMLServing(server.url)

This module imports neither ``bentoml`` nor ``pytest``: the test models are loaded by the
server process too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from aios_mesh.testing.processes import LocalProcess, free_port, start_process, wait_until
from aios_mesh.testing.serving_models import batch_probe, echo_upper, garbage
from aios_mesh_bentoml.launch import SERVICE, bentoml_command, bentoml_python, server_env

__all__ = [
    "BATCH_PROBE",
    "ECHO_UPPER",
    "GARBAGE",
    "SERVICE",
    "BentoMLServer",
    "batch_probe",
    "bentoml_command",
    "bentoml_python",
    "bentoml_server",
    "crash",
    "echo_upper",
    "garbage",
    "is_ready",
    "kill_tree",
    "process_tree",
    "reaping",
]

#: ``AIOS_MESH_PYTHON_MODELS`` targets of the test models below.
ECHO_UPPER = "aios_mesh_bentoml.testing:echo_upper"
GARBAGE = "aios_mesh_bentoml.testing:garbage"
BATCH_PROBE = "aios_mesh_bentoml.testing:batch_probe"


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant (Linux ``/proc``). BentoML starts its workers in sessions
    of their own, so killing the server's process group alone leaves a worker serving."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def kill_tree(pids: list[int]) -> None:
    """SIGKILL every process of ``pids`` that still runs."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def crash(process: LocalProcess) -> None:
    """Kill a server the hard way — the launcher, BentoML's arbiter and its workers — as a
    crashed machine would (for failure tests)."""
    tree = process_tree(process.pid)
    process.kill()
    kill_tree(tree)


@contextlib.contextmanager
def reaping(process: LocalProcess) -> Iterator[LocalProcess]:
    """Yield ``process``; on exit kill whatever of its process tree outlived the stop."""
    tree = process_tree(process.pid)
    try:
        yield process
    finally:
        process.stop()
        kill_tree(tree[1:])


def is_ready(url: str, timeout: float = 1.0) -> bool:
    """True when ``GET {url}/readyz`` answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class BentoMLServer:
    """A running service: its base URL, port and process (``kill()`` for crash tests)."""

    url: str
    port: int
    process: LocalProcess


@contextlib.contextmanager
def bentoml_server(workdir: Path, *, port: int | None = None, model: str | None = None,
                   registry: str | None = None,
                   python_models: Mapping[str, str] | None = None,
                   python: str | os.PathLike[str] | None = None,
                   timeout: float = 90.0) -> Iterator[BentoMLServer]:
    """Run the aios-mesh BentoML service and yield it once ``/readyz`` answers 200.

    ``python_models`` maps ``name/version`` to ``module:callable`` (e.g.
    ``{"echo-upper/1": ECHO_UPPER}``); ``model``/``registry`` serve a registered model.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "bentoml-home"
    home.mkdir(exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env(home=home, model=model, registry=registry, base_dir=workdir,
                     python_models=python_models)
    cmd = bentoml_command(bentoml_python(python), port)
    with start_process(cmd, name="bentoml", env=env, cwd=workdir, log_dir=workdir,
                       ready=lambda: wait_until(lambda: is_ready(url), timeout=timeout,
                                                interval=0.1,
                                                what=f"bentoml serve on {url}")) as proc, \
            reaping(proc):
        yield BentoMLServer(url, port, proc)
