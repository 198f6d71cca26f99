"""Serve the gateway with uvicorn: ``aios-mesh gateway`` (see ``docs/guides/gateway.md``).

    serve(ServerSettings(port=8080, workers=4), config=Path("aios-mesh.toml"))

Every worker process builds its own :class:`~aios_mesh.Mesh` from the same config (so
``--workers N`` needs the app as an import string: :func:`app_from_env` is the factory, and
the config path, ``--app`` and the authenticator travel to the workers in environment
variables). Workers share what the configured backends share (Redis quotas, PostgreSQL
state); breakers and response caches stay per process.

Graceful shutdown (SIGTERM or SIGINT): the server stops accepting, lets in-flight requests
finish for up to ``graceful_s`` seconds, then runs the app's shutdown, which closes the mesh
(the relay ships what the outbox and the audit log still hold).

Slow clients: a request's head must arrive within ``head_timeout_s``
(:mod:`aios_mesh.gateway.protocol`), an idle keep-alive connection is closed after
``keep_alive_s``, a head above ``max_head_bytes`` is refused by h11, and a body above the
gateway's limit is refused with 413 while it is read.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from aios_mesh.apps import load_mesh
from aios_mesh.capabilities import import_object
from aios_mesh.config import load_config
from aios_mesh.errors import ConfigError
from aios_mesh.gateway.app import create_app
from aios_mesh.gateway.identity import Authenticator
from aios_mesh.gateway.metrics import MULTIPROC_ENV
from aios_mesh.gateway.protocol import HeadDeadlineH11Protocol

__all__ = ["AUTHENTICATOR_ENV", "DEFAULT_AUTHENTICATOR", "ServerSettings", "app_from_env",
           "run_app", "serve"]

#: The variables a worker builds its app from (the first two are the CLI's own).
CONFIG_ENV = "AIOS_MESH_CONFIG"
APP_ENV = "AIOS_MESH_APP"
AUTHENTICATOR_ENV = "AIOS_MESH_GATEWAY_AUTHENTICATOR"
#: The authenticator ``[gateway.auth]`` describes (API keys, JWT).
DEFAULT_AUTHENTICATOR = "aios_mesh.gateway.auth:authenticator_from_config"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How uvicorn serves the gateway.

    Args:
        host, port: where to listen (behind a TLS-terminating proxy: 127.0.0.1 or a private
            address; see the guide).
        workers: worker processes; each builds its own mesh.
        keep_alive_s: an idle keep-alive connection is closed after this.
        head_timeout_s: a request's line and headers must arrive within this.
        graceful_s: how long in-flight requests may run on after SIGTERM.
        max_head_bytes: the largest request head h11 accepts.
        limit_concurrency: above this many open connections and tasks, answer 503.
        access_log: log one line per request (off: the decision record is the log).
        proxy_headers: trust ``X-Forwarded-For/-Proto`` from ``forwarded_allow_ips``.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    keep_alive_s: int = 5
    head_timeout_s: float = 10.0
    graceful_s: int = 30
    max_head_bytes: int = 16 * 1024
    limit_concurrency: int | None = None
    access_log: bool = False
    proxy_headers: bool = True
    forwarded_allow_ips: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}",
                              hint="use 1 for one process, or the number of CPU cores")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be 1-65535, got {self.port}",
                              hint="pick a free TCP port, e.g. 8080")
        if self.head_timeout_s <= 0 or self.keep_alive_s <= 0 or self.graceful_s < 0:
            raise ConfigError("timeouts must be positive",
                              hint="e.g. head 10 s, keep-alive 5 s, graceful 30 s")


def app_from_env() -> Starlette:
    """The gateway app of one worker: the mesh of ``$AIOS_MESH_CONFIG`` / ``$AIOS_MESH_APP``
    and the authenticator factory ``$AIOS_MESH_GATEWAY_AUTHENTICATOR`` names (a callable
    taking the mesh; default: ``[gateway.auth]``). uvicorn calls it in each worker."""
    config = os.environ.get(CONFIG_ENV)
    mesh = load_mesh(Path(config) if config else None, os.environ.get(APP_ENV) or None)
    ref = os.environ.get(AUTHENTICATOR_ENV) or DEFAULT_AUTHENTICATOR
    authenticator = import_object(ref)(mesh)
    if not isinstance(authenticator, Authenticator):
        raise ConfigError(f"{ref} made a {type(authenticator).__name__}, not an Authenticator",
                          hint="it takes the mesh and returns an object with "
                               "async authenticate(request) -> Principal")
    app = create_app(mesh, authenticator=authenticator)
    # This worker is ours: what it imported and built lives as long as it does, so move it
    # out of the cyclic GC's reach. Full collections then scan only what calls allocate —
    # measured on the pipeline benchmark (async), the default GC's full collections took
    # p99 from ~0.8 ms (GC off) to ~2.4 ms; frozen after start-up, ~1.6 ms.
    gc.collect()
    gc.freeze()
    return app


@contextlib.contextmanager
def _metrics_dir(config: Path | None) -> Iterator[Path]:
    """The folder for the workers' metric files: ``$PROMETHEUS_MULTIPROC_DIR`` when the
    operator set it (emptied first, as prometheus_client asks), else a fresh folder under
    the state folder (when the config names one) that is removed when the server stops. A
    restart starts the counters from zero, as a single process would."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        yield folder
        return
    parent = load_config(config).state_path / "gateway" if config is not None else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"metrics-{os.getpid()}-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def serve(settings: ServerSettings, *, config: Path | None = None, app_ref: str | None = None,
          authenticator: str | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT, then shut down gracefully.

    Args:
        config: the mesh's config file (validated here, before any worker starts).
        app_ref: ``module:attr`` of capabilities declared in Python (as ``--app``).
        authenticator: ``module:factory`` making the Authenticator from the mesh.
    """
    if config is not None:
        config = config.resolve()
        load_config(config)  # a bad config fails here, once, not in every worker
    # The workers read what to serve from these, so each is set *or cleared*: a value this
    # process inherited (a parent that ran a gateway itself) must not leak into them.
    for name, value in ((CONFIG_ENV, config), (APP_ENV, app_ref),
                        (AUTHENTICATOR_ENV, authenticator)):
        if value:
            os.environ[name] = str(value)
        else:
            os.environ.pop(name, None)
    with _metrics_dir(config) as metrics:
        if settings.workers > 1:  # set before the workers start, so before they import it
            os.environ[MULTIPROC_ENV] = str(metrics)
        run_app("aios_mesh.gateway.server:app_from_env", settings, factory=True)


def run_app(target: str, settings: ServerSettings, *, factory: bool = False) -> None:
    """Serve the ASGI app ``target`` (``module:attr``; with ``factory``, a callable making
    it) with the gateway's server stack and settings: what :func:`serve` runs, and what the
    gateway benchmark's bare echo app runs on, so both pay for the same HTTP hop."""
    protocol = functools.partial(HeadDeadlineH11Protocol, head_timeout_s=settings.head_timeout_s)
    uvicorn.run(target, factory=factory, host=settings.host, port=settings.port,
                workers=settings.workers,
                http=protocol,  # type: ignore[arg-type]  # uvicorn accepts a factory
                lifespan="on", timeout_keep_alive=settings.keep_alive_s,
                timeout_graceful_shutdown=settings.graceful_s,
                h11_max_incomplete_event_size=settings.max_head_bytes,
                limit_concurrency=settings.limit_concurrency, access_log=settings.access_log,
                proxy_headers=settings.proxy_headers,
                forwarded_allow_ips=settings.forwarded_allow_ips, server_header=False)
