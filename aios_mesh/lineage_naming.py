"""OpenLineage dataset names of the backends a mesh reads and writes.

OpenLineage names a dataset by a *namespace* — its datasource, ``scheme://authority`` — and a
*name* unique within it (https://openlineage.io/docs/spec/naming). This module is the one place
that turns a backend URL into that pair; :func:`dataset_name` does it for one URL and
:class:`DatasetNames` for the ports of one mesh (what the recorder writes into each decision
record's ``datasets``, and :mod:`aios_mesh.lineage` turns into run inputs and outputs):

backend URL → namespace, name:

* ``postgresql://u:pw@h:5432/db?table=s.audit`` → ``postgres://h:5432``, ``db.s.audit``
* ``kafka://h:9092`` → ``kafka://h:9092``, the topic
* ``nats://h:4222?prefix=aios`` → ``nats://h:4222``, the subject ``aios.<topic>``
* ``qdrant://h:6333`` → ``qdrant://h:6333``, the collection
* ``mlflow+http://h:5000`` → ``mlflow://h:5000``, the registered model
* a file (``mlflow+sqlite:///registry/mlflow.db``, ``qdrant-edge:///qdrant``,
  ``qdrant+local:///x``, ``sqlite:///events.db``, ``jsonl:///audit.jsonl``) → ``file``,
  ``/abs/path`` (plus ``/<model | collection | topic>`` for what lives inside it)
* ``memory://``, ``qdrant+local:///:memory:`` → ``inmemory://``, the name

Rules: the namespace's scheme is the system (the URL scheme before ``+``; ``postgresql`` is
the spec's ``postgres``), its authority ``host:port`` with the system's default port filled
in when the URL leaves it out (so ``kafka://h`` and ``kafka://h:9092`` are one datasource).
The user name, password and options never appear: a namespace is safe to log. A backend
with no host keeps its data in a file under the mesh's state folder: the spec's local file
system (namespace ``file``, name the absolute path; what lives inside the file — a model, a
collection, a topic — is a path segment below it).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aios_mesh.backends import BackendURL, PortName, parse_url
from aios_mesh.errors import MeshError
from aios_mesh.redaction.scrub import default_scrubber

if TYPE_CHECKING:
    from aios_mesh.pipeline.call import Call
    from aios_mesh.ports.container import Ports

__all__ = ["FILE_NAMESPACE", "MEMORY_NAMESPACE", "DatasetName", "DatasetNames",
           "dataset_name"]

#: The spec's namespace of a local file system.
FILE_NAMESPACE: Final = "file"
#: The spec's namespace of in-memory datasets (no persistence backend).
MEMORY_NAMESPACE: Final = "inmemory://"

#: URL scheme (before ``+``) → the spec's scheme, where they differ.
_SYSTEM: Final[Mapping[str, str]] = {"postgresql": "postgres"}
#: Ports a server listens on when its URL names none (``mlflow`` by its HTTP driver).
_DEFAULT_PORT: Final[Mapping[str, int]] = {
    "postgres": 5432, "kafka": 9092, "nats": 4222, "qdrant": 6333, "redis": 6379,
    "mlflow+http": 80, "mlflow+https": 443,
}
#: The PostgreSQL audit log's default table (``aios_mesh_postgres.PostgresAuditLog``).
_AUDIT_TABLE: Final = "audit_log"
#: The NATS bus's default subject prefix (``aios_mesh_nats.NatsEventBus``).
_NATS_PREFIX: Final = "aios"
#: The path of an in-memory store (``qdrant+local:///:memory:``).
_MEMORY_PATH: Final = ":memory:"


@dataclass(frozen=True, slots=True)
class DatasetName:
    """One dataset's OpenLineage identity: ``namespace`` (the datasource) and ``name``."""

    namespace: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return {"namespace": self.namespace, "name": self.name}


def _authority(url: BackendURL, system: str) -> str:
    host = str(url.host)
    if ":" in host:  # an IPv6 literal keeps its brackets in a URL's authority
        host = f"[{host}]"
    port = url.port or _DEFAULT_PORT.get(url.scheme) or _DEFAULT_PORT.get(system)
    return f"{host}:{port}" if port else host


def _server_name(url: BackendURL, system: str, inner: str) -> str:
    if system == "postgres":
        # {database}.{schema}.{table}; libpq's default database is the user's name
        database = url.path.strip("/").split("/", 1)[0] or url.username or "postgres"
        # a PostgreSQL backend of the mesh is its audit log (table= option, as the adapter)
        table = url.option("table") or inner or _AUDIT_TABLE
        schema, _, bare = table.rpartition(".")
        return f"{database}.{schema or 'public'}.{bare}"
    if system == "nats":  # what NATS tools see is the subject (the bus's ``prefix`` + topic)
        return f"{url.option('prefix') or _NATS_PREFIX}.{inner}" if inner else ""
    return inner


def dataset_name(url: BackendURL | str, inner: str = "", *, base_dir: Path) -> DatasetName:
    """The OpenLineage identity of ``inner`` (a model, collection, topic or table name; empty
    for a backend that is one dataset, like an audit log) in the backend at ``url``.

    Args:
        url: the backend's URL (as configured; secrets in it never reach the result).
        inner: the dataset inside the backend.
        base_dir: the folder relative file paths are under (the mesh's state folder).

    Raises:
        ConfigError: ``url`` is not a backend URL, or a file URL names no path.
    """
    parsed = parse_url(url) if isinstance(url, str) else url
    system = _SYSTEM.get(parsed.scheme.split("+", 1)[0], parsed.scheme.split("+", 1)[0])
    if parsed.host:
        return DatasetName(f"{system}://{_authority(parsed, system)}",
                           _server_name(parsed, system, inner))
    if system == "memory" or parsed.path.strip("/") == _MEMORY_PATH:
        return DatasetName(MEMORY_NAMESPACE, inner)
    path = parsed.resolve_path(base_dir).absolute().as_posix()
    return DatasetName(FILE_NAMESPACE, f"{path.rstrip('/')}/{inner}" if inner else path)


class DatasetNames:
    """What a mesh's calls read and write, named by the spec: one per mesh, cached per port.

    A port given as an adapter *instance* has no URL to name it by: its datasets are left out
    (the record says nothing rather than something wrong).

    Args:
        ports: the mesh's ports (their URLs, the state folder).
        decision_topic: where each record's decision event is published, or None when
            decision events are off.
    """

    def __init__(self, ports: Ports, *, decision_topic: str | None = None) -> None:
        self._ports = ports
        self._topic = decision_topic
        self._urls: dict[str, BackendURL | None] = {}
        self._names: dict[tuple[str, str], DatasetName | None] = {}
        self._lock = threading.Lock()

    def name(self, port: PortName, inner: str = "") -> DatasetName | None:
        """The identity of ``inner`` in ``port``'s backend (None when it cannot be told)."""
        key = (port, inner)
        try:
            return self._names[key]
        except KeyError:
            pass
        with self._lock:
            try:
                if port not in self._urls:
                    given = self._ports.given(port)
                    self._urls[port] = None if given is not None else parse_url(
                        self._ports.url(port)[0])
                url = self._urls[port]
                found = None if url is None else dataset_name(
                    url, inner, base_dir=self._ports.config.state_path)
            except MeshError:  # a bad URL fails its adapter, never the record of a call
                found = None
            if found is not None:
                # Scrubbed here, once per name (declared names: patterns, not the randomness
                # guess), not in every record: the names do not change between calls.
                clean = default_scrubber().name
                found = DatasetName(clean(found.namespace), clean(found.name))
            self._names[key] = found
        return found

    def _entry(self, port: PortName, inner: str, kind: str, version: str | None = None
               ) -> dict[str, Any] | None:
        found = self.name(port, inner)
        if found is None:
            return None
        entry: dict[str, Any] = {"namespace": found.namespace, "name": found.name,
                                 "type": kind}
        if version is not None:
            entry["version"] = version
        return entry

    def of(self, call: Call) -> dict[str, list[dict[str, Any]]]:
        """The record's ``datasets``: ``inputs`` (the model version and the index snapshots
        the call read) and ``outputs`` (the audit log its record went to, the topic its
        decision event goes to, the indexes its handler wrote), each
        ``{"namespace", "name", "type", "version"?}``."""
        inputs: list[dict[str, Any] | None] = []
        ref = call.model_ref
        # a handler ("function:<capability>") is code, not a dataset the call read
        if ref is not None and not ref.name.startswith("function:"):
            inputs.append(self._entry("registry", ref.name, "MODEL", ref.version))
        inputs.extend(self._entry("retrieval", c, "TABLE", s)
                      for c, s in call.index_snapshots.items())
        audit = self.name("audit")
        outputs: list[dict[str, Any] | None] = [None if audit is None else {
            **audit.to_dict(), "type": "FILE" if audit.namespace == FILE_NAMESPACE
            else "TABLE"}]
        if self._topic is not None:
            outputs.append(self._entry("events", self._topic, "TOPIC"))
        outputs.extend(self._entry("retrieval", c, "TABLE", s)
                       for c, s in call.index_writes.items())
        return {"inputs": [d for d in inputs if d is not None],
                "outputs": [d for d in outputs if d is not None]}
