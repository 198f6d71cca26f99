"""A real Ray instance with Ray Serve for tests (127.0.0.1, a free HTTP port, always shut
down), and the Python test models its deployments can serve.

Example::

    with rayserve_cluster(num_cpus=2) as cluster:
        url = cluster.deploy("echo", python_models={"echo-upper/1": ECHO_UPPER})
        serving = RayServeServing(url)

One instance per test module: Ray starts in this process (``ray.init``), so the replicas
(Ray worker processes) get this checkout on their ``PYTHONPATH``. Imports no ``pytest``.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aios_mesh
from aios_mesh.ports.registry import ModelRef
from aios_mesh.testing.processes import free_port
from aios_mesh.testing.serving_models import batch_probe, echo_upper, garbage

__all__ = [
    "BATCH_PROBE",
    "ECHO_UPPER",
    "GARBAGE",
    "SLOW_PID",
    "RayServeCluster",
    "batch_probe",
    "echo_upper",
    "garbage",
    "rayserve_cluster",
    "slow_pid",
]

ECHO_UPPER = "aios_mesh_rayserve.testing:echo_upper"
GARBAGE = "aios_mesh_rayserve.testing:garbage"
BATCH_PROBE = "aios_mesh_rayserve.testing:batch_probe"
SLOW_PID = "aios_mesh_rayserve.testing:slow_pid"


def slow_pid(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sleeps ``max(item["delay"])`` seconds, then answers the replica's process id (for
    kill-a-replica tests: requests are in flight while it sleeps)."""
    time.sleep(max(float(i.get("delay", 0.0)) for i in batch))
    return [{"pid": os.getpid(), "i": i.get("i")} for i in batch]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2.0) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class RayServeCluster:
    """A Ray instance in this process with Serve's HTTP proxy on ``http_port``."""

    http_port: int
    address: str

    def url(self, route: str) -> str:
        """``rayserve+http://127.0.0.1:PORT/route``."""
        return f"rayserve+http://127.0.0.1:{self.http_port}/{route.strip('/')}"

    def http_url(self, route: str) -> str:
        """``http://127.0.0.1:PORT/route``."""
        return f"http://127.0.0.1:{self.http_port}/{route.strip('/')}"

    def deploy(self, app: str, *, route: str | None = None,
               python_models: Mapping[str, str] | None = None,
               registered: Sequence[ModelRef] = (), options: Any = None) -> str:
        """Run an application (route default ``/app``); returns its ``rayserve+http`` URL
        once it answers ``/readyz``."""
        from ray import serve

        from aios_mesh_rayserve.deployment import build_app

        prefix = f"/{(route or app).strip('/')}"
        serve.run(build_app(python_models=python_models, registered=registered,
                            options=options), name=app, route_prefix=prefix)
        deadline = time.monotonic() + 60
        while not _ready(self.http_url(prefix)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray Serve application {app} never became ready")
            time.sleep(0.1)
        return self.url(prefix)

    def delete(self, app: str) -> None:
        """Delete an application (its replicas stop)."""
        from ray import serve

        serve.delete(app)


@contextlib.contextmanager
def rayserve_cluster(*, http_port: int | None = None,
                     num_cpus: int = 2) -> Iterator[RayServeCluster]:
    """Start Ray (``num_cpus``, no dashboard) and Ray Serve's proxy on 127.0.0.1; yield;
    shut Serve and Ray down whatever happened."""
    import ray
    from ray import serve

    port = http_port or free_port()
    roots = {str(Path(aios_mesh.__file__).resolve().parents[1]),
             str(Path(__file__).resolve().parents[1])}
    old = os.environ.get("PYTHONPATH")
    # the replicas are Ray worker processes: they import this checkout's packages
    os.environ["PYTHONPATH"] = os.pathsep.join([*sorted(roots), *([old] if old else [])])
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield RayServeCluster(port, str(ray.get_runtime_context().gcs_address))
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
        ray.shutdown()
