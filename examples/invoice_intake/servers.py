"""Start the real servers a profile's backend URLs point at, on this machine (no Docker).

:func:`local_stack` reads a profile's ``[backends]`` and, by URL scheme:

==========================  =============================================================
``mlflow+http://``          an MLflow tracking server + registry (sqlite store)
``kafka://``,               one tansu broker (Kafka protocol) for every URL naming the same
``openlineage+kafka://``    port
``nats://``                 the machine's NATS; with ``private``, a nats-server of its own
``redis://``                the machine's Redis; with ``private``, a redis-server of its own
``postgresql://``           the audit log's database on the machine's PostgreSQL (created if
                            missing); with ``private``, a throw-away database. A ``state``
                            URL naming the same database follows it
``bentoml+http://``         a ``bentoml serve`` per serving backend, started by
                            :meth:`LocalStack.start_serving` once the models are registered
``openai+http://``          a llama.cpp server (Gemma 3 270M) per named serving backend: the
                            LLM that drafts review briefs
==========================  =============================================================

``private`` also moves every server it starts to a free port and rewrites the URLs, so tests
and parallel runs never collide. Everything started is stopped when the block ends. Each
server is started by its adapter's launcher (:func:`aios_mesh.testing.launcher`), imported
only when the profile needs it.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aios_mesh.errors import BackendUnavailable
from aios_mesh.testing.processes import free_port, wait_for_port
from aios_mesh.testing.servers import launcher

__all__ = ["LocalStack", "local_stack"]


def _with_port(url: str, port: int, path: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"{parts.hostname or '127.0.0.1'}:{port}"
    netloc[-1] = host
    return urlunsplit(parts._replace(netloc="@".join(netloc),
                                     path=parts.path if path is None else path))


def _port(url: str, default: int) -> int:
    return urlsplit(url).port or default


def _listening(port: int) -> bool:
    try:
        wait_for_port(port, timeout=0.3)
    except Exception:
        return False
    return True


@dataclass
class LocalStack:
    """The servers of one profile; :attr:`backends` holds the URLs they really listen on."""

    backends: dict[str, Any]
    workdir: Path
    stack: contextlib.ExitStack
    private: bool
    started: list[str] = field(default_factory=list)

    def start_serving(self, models: Mapping[str, str]) -> None:
        """Start one ``bentoml serve`` per BentoML serving backend. ``models`` maps a serving
        backend (``"serving"`` or a ``serving_named`` key) to the model spec it serves
        (``invoice-extractor@champion``); the registry must already hold them."""
        targets = {"serving": self.backends.get("serving"),
                   **self.backends.get("serving_named", {})}
        for backend, spec in models.items():
            url = str(targets.get(backend) or "")
            if not url.startswith("bentoml+"):
                continue
            server = self.stack.enter_context(launcher("bentoml")(
                self.workdir / f"bentoml-{backend}", port=_port(url, 3000), model=spec,
                registry=self.backends["registry"], timeout=180.0))
            self.started.append(f"bentoml serve {spec} on :{server.port}")


def _reserve_serving_ports(live: LocalStack) -> None:
    """With ``private``, move BentoML URLs to free ports now: the mesh config is written
    before the models exist, and the servers start on these ports once they do."""
    if not live.private:
        return
    if str(live.backends.get("serving", "")).startswith("bentoml+"):
        live.backends["serving"] = _with_port(live.backends["serving"], free_port())
    named = live.backends.get("serving_named", {})
    for key, url in named.items():
        if str(url).startswith("bentoml+"):
            named[key] = _with_port(url, free_port())


@contextlib.contextmanager
def local_stack(backends: Mapping[str, Any], workdir: Path, *,
                private: bool = False) -> Iterator[LocalStack]:
    """Start what ``backends`` needs (see the module docstring); yield the running stack."""
    workdir.mkdir(parents=True, exist_ok=True)
    urls = copy.deepcopy(dict(backends))
    with contextlib.ExitStack() as stack:
        live = LocalStack(urls, workdir, stack, private)
        _start_registry(live)
        _start_kafka(live)
        _start_or_use(live, "events", "nats://", 4222, "nats",
                      lambda port: launcher("nats")(workdir / "nats", port=port))
        _start_or_use(live, "quota", "redis://", 6379, "redis",
                      lambda port: launcher("redis")(workdir / "redis", port=port))
        _database(live)
        _start_llms(live)
        _reserve_serving_ports(live)
        yield live


def _start_registry(live: LocalStack) -> None:
    url = live.backends.get("registry", "")
    if not url.startswith("mlflow+http"):
        return
    port = free_port() if live.private else _port(url, 5000)
    if not live.private and _listening(port):
        raise BackendUnavailable(f"port {port} is taken; the profile's MLflow server cannot "
                                 "start there", hint="stop what listens there, or run with "
                                                     "--private-servers (free ports)")
    http = live.stack.enter_context(launcher("mlflow")(live.workdir / "mlflow", port=port))
    live.backends["registry"] = "mlflow+" + http
    live.started.append(f"mlflow server on :{port}")


def _start_kafka(live: LocalStack) -> None:
    keys = [k for k in ("events", "lineage")
            if str(live.backends.get(k, "")).split("://")[0] in ("kafka", "openlineage+kafka")]
    ports: dict[int, int] = {}
    for key in keys:
        url = live.backends[key]
        wanted = _port(url, 9092)
        if wanted not in ports:
            port = free_port() if live.private else wanted
            live.stack.enter_context(launcher("kafka")(port=port, log_dir=live.workdir))
            ports[wanted] = port
            live.started.append(f"tansu (Kafka protocol) on :{port}")
        live.backends[key] = _with_port(url, ports[wanted])


def _start_or_use(live: LocalStack, key: str, scheme: str, default: int, label: str,
                  start: Any) -> None:
    url = str(live.backends.get(key, ""))
    if not url.startswith(scheme):
        return
    if live.private:
        server = live.stack.enter_context(start(free_port()))
        live.backends[key] = _with_port(url, server.port)
        live.started.append(f"{label} on :{server.port}")
    elif not _listening(_port(url, default)):
        server = live.stack.enter_context(start(_port(url, default)))
        live.started.append(f"{label} on :{server.port}")
    else:
        live.started.append(f"{label}: the machine's, on :{_port(url, default)}")


def _start_llms(live: LocalStack) -> None:
    """A llama.cpp server for each ``openai+http://`` named serving backend."""
    named = live.backends.get("serving_named", {})
    for key, url in list(named.items()):
        if not str(url).startswith("openai+http://"):
            continue
        port = free_port() if live.private else _port(url, 8080)
        if not live.private and _listening(port):
            live.started.append(f"LLM {key}: the one listening on :{port}")
            continue
        server = live.stack.enter_context(launcher("llamacpp")(live.workdir / f"llm-{key}",
                                                                port=port))
        named[key] = _with_port(url, server.port)
        live.started.append(f"llama.cpp server (Gemma 3 270M) for {key} on :{server.port}")


def _database(live: LocalStack) -> None:
    url = str(live.backends.get("audit", ""))
    if not url.startswith("postgresql://"):
        return
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres", query=""))
    if live.private:
        db = live.stack.enter_context(launcher("postgres")(admin,
                                                           prefix="aios_invoice_intake"))
        name = db.rsplit("/", 1)[1]
        live.backends["audit"] = urlunsplit(parts._replace(path=f"/{name}"))
        if live.backends.get("state") == url:  # one database for the log and the state
            live.backends["state"] = live.backends["audit"]
        live.started.append(f"PostgreSQL database {name} (dropped at the end)")
        return
    name = parts.path.strip("/")
    psycopg: Any = importlib.import_module("psycopg")
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() \
                is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    live.started.append(f"PostgreSQL database {name}")
