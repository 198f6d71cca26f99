"""Backend lookup: a URL's scheme picks the adapter.

``"triton+grpc://127.0.0.1:8001"`` → the Triton adapter, ``"rego:///policies"`` → in-process
Rego. Adapters come from the entry-point group ``aios_mesh.adapters`` (names are
``"<port>:<scheme>"``, values ``"module:Class"``) and from the built-in lazy table below, which
also knows the extra to install. Nothing is imported until an adapter is asked for.

Paths follow SQLAlchemy's rule: ``scheme:///rel/path`` is relative to the config file's
folder, ``scheme:////abs/path`` is absolute.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import parse_qsl, unquote, urlsplit

from aios_mesh.errors import ConfigError

__all__ = [
    "BUILTIN_ADAPTERS",
    "DEFAULT_URLS",
    "ENTRY_POINT_GROUP",
    "PORTS",
    "AdapterTarget",
    "BackendURL",
    "PortName",
    "adapter_class",
    "known_schemes",
    "load_adapter",
    "parse_url",
]

ENTRY_POINT_GROUP: Final = "aios_mesh.adapters"
PortName = Literal["serving", "registry", "retrieval", "policy", "events", "orchestrator",
                   "lineage", "quota", "audit"]
PORTS: Final[tuple[PortName, ...]] = get_args(PortName)


@dataclass(frozen=True, slots=True)
class AdapterTarget:
    """Where an adapter class lives and which extra installs what it needs."""

    target: str  # "module:Class"
    extra: str | None = None


def _t(target: str, extra: str | None = None) -> AdapterTarget:
    return AdapterTarget(target, extra)


BUILTIN_ADAPTERS: Final[Mapping[str, Mapping[str, AdapterTarget]]] = {
    "serving": {
        "inprocess": _t("aios_mesh.embedded.serving:InProcessServing"),
        "bentoml+http": _t("aios_mesh_bentoml:BentoMLServing", "bentoml"),
        "bentoml+https": _t("aios_mesh_bentoml:BentoMLServing", "bentoml"),
        "triton+http": _t("aios_mesh_triton:TritonServing", "triton"),
        "triton+grpc": _t("aios_mesh_triton:TritonServing", "triton"),
    },
    "registry": {
        "memory": _t("aios_mesh.embedded.registry:MemoryRegistry"),
        "mlflow+sqlite": _t("aios_mesh_mlflow:MlflowRegistry", "mlflow"),
        "mlflow+http": _t("aios_mesh_mlflow:MlflowRegistry", "mlflow"),
        "mlflow+https": _t("aios_mesh_mlflow:MlflowRegistry", "mlflow"),
    },
    "retrieval": {
        "qdrant-edge": _t("aios_mesh_qdrant_edge:EdgeRetrieval", "retrieval-embedded"),
        "qdrant": _t("aios_mesh_qdrant:QdrantRetrieval", "qdrant"),
        "qdrant+local": _t("aios_mesh_qdrant:QdrantRetrieval", "qdrant"),
    },
    "policy": {
        "rego": _t("aios_mesh_regopy:RegoPolicy", "policy-embedded"),
        "opa+http": _t("aios_mesh_opa:OpaPolicy", "opa"),
    },
    "events": {
        "sqlite": _t("aios_mesh.embedded.events:SqliteEventBus"),
        "kafka": _t("aios_mesh_kafka:KafkaEventBus", "kafka"),
        "nats": _t("aios_mesh_nats:NatsEventBus", "nats"),
    },
    "orchestrator": {
        "flyte-local": _t("aios_mesh_flyte:FlyteLocalOrchestrator", "flyte"),
        "flyte": _t("aios_mesh_flyte:FlyteRemoteOrchestrator", "flyte"),
    },
    "lineage": {
        "openlineage+file": _t("aios_mesh_openlineage:OpenLineageEmitter", "openlineage"),
        "openlineage+http": _t("aios_mesh_openlineage:OpenLineageEmitter", "openlineage"),
        "openlineage+kafka": _t("aios_mesh_openlineage:OpenLineageEmitter", "openlineage"),
    },
    "quota": {
        "memory": _t("aios_mesh.embedded.quota:InProcessQuota"),
        "redis": _t("aios_mesh_redis:RedisQuota", "redis"),
    },
    "audit": {
        "jsonl": _t("aios_mesh.embedded.audit:JsonlAuditLog"),
        "postgresql": _t("aios_mesh_postgres:PostgresAuditLog", "postgres"),
    },
}

#: The embedded default of every port: no server, relative to the mesh's state folder.
DEFAULT_URLS: Final[Mapping[PortName, str]] = {
    "serving": "inprocess://",
    "registry": "mlflow+sqlite:///registry/mlflow.db",
    "retrieval": "qdrant-edge:///qdrant",
    "policy": "rego:///policies",
    "events": "sqlite:///events.db",
    "orchestrator": "flyte-local://",
    "lineage": "openlineage+file:///lineage",
    "quota": "memory://",
    "audit": "jsonl:///audit.jsonl",
}


@dataclass(frozen=True, slots=True, repr=False)
class BackendURL:
    """A parsed backend URL. ``options`` holds the query string (``?timeout=2&external=true``)."""

    raw: str
    scheme: str
    host: str | None = None
    port: int | None = None
    path: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def driver(self) -> str | None:
        """The part after ``+`` in ``dialect+driver``, e.g. ``grpc`` in ``triton+grpc``."""
        return self.scheme.split("+", 1)[1] if "+" in self.scheme else None

    @property
    def address(self) -> str:
        """``host:port`` of a server URL."""
        if not self.host:
            raise ConfigError(f"{self.redacted()} names no host",
                              hint="write scheme://HOST:PORT, e.g. qdrant://127.0.0.1:6333")
        return f"{self.host}:{self.port}" if self.port else self.host

    def resolve_path(self, base_dir: Path) -> Path:
        """The URL's path as a filesystem path (relative paths are under ``base_dir``)."""
        if not self.path:
            raise ConfigError(f"{self.redacted()} names no path",
                              hint=f"write {self.scheme}:///relative/path or "
                                   f"{self.scheme}:////absolute/path")
        if self.path.startswith("//"):
            return Path(self.path[1:])
        return base_dir / self.path.lstrip("/")

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.options.get(name)
        if value is None:
            return default
        if value.lower() in {"1", "true", "yes", "on"}:
            return True
        if value.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"option {name}={value!r} in {self.redacted()} is not a boolean",
                          hint=f"write {name}=true or {name}=false")

    def __repr__(self) -> str:
        return f"BackendURL({self.redacted()!r})"

    def redacted(self) -> str:
        """The URL with any password masked, for messages and logs."""
        if self.password is None:
            return self.raw
        return self.raw.replace(f":{self.password}@", ":***@")


def parse_url(raw: str) -> BackendURL:
    """Parse a backend URL or raise :class:`ConfigError` saying how to write it."""
    if not isinstance(raw, str) or "://" not in raw:
        raise ConfigError(f"{raw!r} is not a backend URL",
                          hint="write scheme://..., e.g. 'rego:///policies' or "
                               "'triton+grpc://127.0.0.1:8001'")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"malformed backend URL {raw!r}: {exc}",
                          hint="check the host and port, e.g. qdrant://127.0.0.1:6333") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise ConfigError(f"{raw!r} has no scheme", hint="start it with e.g. 'qdrant://'")
    # urlsplit leaves 'scheme:///x' with netloc '' and path '/x'; we keep that leading slash
    # so resolve_path can tell relative ('/x') from absolute ('//x').
    path = raw.split("://", 1)[1]
    path = path[len(parts.netloc):].split("?", 1)[0].split("#", 1)[0]
    return BackendURL(
        raw=raw,
        scheme=scheme,
        host=parts.hostname,
        port=port,
        path=unquote(path),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        options=dict(parse_qsl(parts.query, keep_blank_values=True)),
    )


@cache
def _entry_point_targets() -> dict[str, dict[str, AdapterTarget]]:
    table: dict[str, dict[str, AdapterTarget]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        port, _, scheme = ep.name.partition(":")
        if port in PORTS and scheme:
            table.setdefault(port, {})[scheme.lower()] = AdapterTarget(ep.value)
    return table


def known_schemes(port: PortName) -> list[str]:
    """Every scheme that resolves for ``port`` (built-in and entry points)."""
    return sorted({*BUILTIN_ADAPTERS.get(port, {}), *_entry_point_targets().get(port, {})})


def _lookup(port: PortName, scheme: str) -> AdapterTarget:
    if port not in PORTS:
        raise ConfigError(f"unknown port {port!r}", hint=f"ports are: {', '.join(PORTS)}")
    found = _entry_point_targets().get(port, {}).get(scheme)
    if found is None:
        found = BUILTIN_ADAPTERS.get(port, {}).get(scheme)
    if found is None:
        schemes = known_schemes(port)
        close = difflib.get_close_matches(scheme, schemes, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"no {port} adapter for scheme {scheme!r}",
                          hint=f"{hint}known {port} schemes: {', '.join(schemes)}",
                          port=port, scheme=scheme)
    return found


def adapter_class(port: PortName, scheme: str) -> type[Any]:
    """Import and return the adapter class for ``port`` and ``scheme``."""
    target = _lookup(port, scheme.lower())
    module_name, _, attr = target.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = target.extra
        how = (f'pip install "aios-mesh[{extra}]"' if extra
               else f"install the package that provides {module_name}")
        raise ConfigError(f"the {port} adapter for {scheme!r} is not installed ({exc.name})",
                          hint=how, port=port, scheme=scheme) from exc
    try:
        cls: type[Any] = getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"{target.target} names no class {attr!r}",
                          hint="fix the entry point of the adapter's package") from exc
    return cls


def load_adapter(port: PortName, url: str, *, base_dir: Path,
                 **options: Any) -> Any:
    """Instantiate the adapter for ``url`` via its ``from_url(url, base_dir=..., **options)``."""
    parsed = parse_url(url)
    cls = adapter_class(port, parsed.scheme)
    return cls.from_url(parsed, base_dir=base_dir, **options)
