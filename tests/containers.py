"""Containers for the Docker-gated tests, started with testcontainers.

Every Docker-gated test (marker ``docker``) asks for its server through :func:`http_container`
or :func:`compose_stack`. Where no Docker engine answers (``docker info``, the probe in
:func:`aios_mesh.testing.processes.docker_engine_answers`) they skip with "needs a Docker
engine (...)": the only skip the suite allows. Where one answers, a container that does not
come up fails the test, with testcontainers' reason.

Ports are published on 127.0.0.1 only (never on every interface), on a port the engine picks
unless the server needs a fixed one (the Flyte sandbox). Containers are removed when the
``with`` block ends, even if it raised; testcontainers' reaper (Ryuk) removes them if the test
process dies first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from aios_mesh.testing.processes import docker_engine_answers

if TYPE_CHECKING:
    from testcontainers.compose import DockerCompose
    from testcontainers.core.container import DockerContainer

__all__ = ["LOOPBACK", "compose_stack", "http_container", "require_docker_engine"]

LOOPBACK = "127.0.0.1"


def require_docker_engine(what: str) -> None:
    """Skip the calling test or fixture unless a Docker engine answers."""
    if not docker_engine_answers():
        pytest.skip(f"needs a Docker engine ({what}): `docker info` reaches none here")


@contextlib.contextmanager
def http_container(image: str, port: int, *, what: str, health: str = "/",
                   command: Sequence[str] | None = None, fixed_ports: Sequence[int] = (),
                   env: Mapping[str, str] | None = None, tmpfs: Sequence[str] = (),
                   timeout: timedelta = timedelta(minutes=2),
                   **docker_options: Any) -> Iterator[str]:
    """Run ``image`` until ``GET http://127.0.0.1:<port><health>`` answers 200; yield that base
    URL (no trailing slash), then remove the container.

    Args:
        image: a pinned image reference.
        port: the container port that serves HTTP (published on a free loopback port).
        what: what the container is, for the skip reason ("Qdrant server").
        health: the path that answers 200 once the server is ready.
        command: the container command, if not the image's default.
        fixed_ports: container ports published on the same port number of 127.0.0.1 (for
            servers that hand out URLs with their own port in them).
        env: environment variables of the container.
        tmpfs: container paths to mount as tmpfs.
        timeout: how long the server may take to become ready.
        docker_options: further ``docker`` SDK ``containers.create`` options
            (``privileged=True``, ``cgroupns="host"`` ...).
    """
    require_docker_engine(what)
    from testcontainers.core.wait_strategies import HttpWaitStrategy

    container = _loopback_container(image)
    if port not in fixed_ports:
        container.with_exposed_ports(port)
    for fixed in fixed_ports:
        container.with_bind_ports(fixed, fixed)
    if command is not None:
        container.with_command(list(command))
    container.with_envs(**dict(env or {}))
    for path in tmpfs:
        container.with_tmpfs_mount(path)
    if docker_options:
        container.with_kwargs(**docker_options)
    container.waiting_for(HttpWaitStrategy(port, health).for_status_code(200)
                          .with_startup_timeout(timeout))
    with container:
        yield f"http://{LOOPBACK}:{container.get_exposed_port(port)}"


def _loopback_container(image: str) -> DockerContainer:
    """A testcontainers ``DockerContainer`` that publishes its ports on 127.0.0.1 only."""
    from testcontainers.core.container import DockerContainer

    class LoopbackContainer(DockerContainer):
        def _configure(self) -> None:
            super()._configure()
            # The docker SDK's ``(host_ip, host_port)`` binding (``None``: the engine picks);
            # testcontainers types its port map as bare host ports, hence the cast.
            bindings = {spec: (LOOPBACK, host) for spec, host in self.ports.items()}
            self.ports = cast("dict[str, int | None]", bindings)

    return LoopbackContainer(image)


@contextlib.contextmanager
def compose_stack(context: Path, compose_file: str, *, what: str,
                  env: Mapping[str, str] | None = None,
                  env_dir: Path | None = None) -> Iterator[DockerCompose]:
    """``docker compose up --wait`` of ``compose_file`` (relative to ``context``); yields the
    testcontainers ``DockerCompose``; ``down --volumes`` afterwards.

    ``env`` is written to an env file in ``env_dir`` (for interpolation in the compose file),
    so the test process's environment is left as it is.
    """
    require_docker_engine(what)
    from testcontainers.compose import DockerCompose

    env_file: list[str] | None = None
    if env:
        if env_dir is None:
            raise ValueError("compose_stack: env needs env_dir (a temporary folder)")
        path = env_dir / "compose.env"
        path.write_text("".join(f"{key}={value}\n" for key, value in env.items()),
                        encoding="utf-8")
        env_file = [str(path)]
    with DockerCompose(context, compose_file_name=compose_file, wait=True,
                       env_file=env_file) as stack:
        yield stack
