"""Ports: the typed container of a mesh's adapters, loaded lazily, one accessor per port.

This is where a port's backend is decided (explicit instance or URL > ``AIOS_MESH_<PORT>_URL``
> config file > embedded default), its URL parsed and its adapter class found (built-in table
or the ``aios_mesh.adapters`` entry points). Nothing is imported until a port is first used,
so a mesh that never retrieves never imports a vector engine.

    ports = Ports(config)
    audit = ports.audit            # an AuditLog, loaded now (thread-safe)
    label, serving = ports.serving_for("gpu")   # a named serving backend

Steps, processors, the CLI, the worker and the rollout commands all reach backends through
here; none of them needs the :class:`~aios_mesh.mesh.Mesh`.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, cast, overload

from aios_mesh.backends import PORTS, PortName, load_adapter, parse_url
from aios_mesh.config import MeshConfig, UrlSource
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.errors import MeshError, NotFound
from aios_mesh.ports.audit import AuditLog
from aios_mesh.ports.events import EventBus
from aios_mesh.ports.lineage import Lineage
from aios_mesh.ports.orchestrator import Orchestrator
from aios_mesh.ports.policy import Policy
from aios_mesh.ports.quota import QuotaStore
from aios_mesh.ports.registry import ModelRegistry
from aios_mesh.ports.retrieval import Retrieval
from aios_mesh.ports.serving import Serving

__all__ = ["AdapterHook", "Ports"]

#: Called once with each adapter right after it is loaded (e.g. to give a quota store its
#: limits).
AdapterHook = Callable[[PortName, object], None]


class Ports:
    """The adapters of one mesh. Adapters may be given as instances (the test seam, like
    ``httpx.Client(transport=...)``) or URLs in ``explicit``; the rest follow the config.

    Args:
        config: the mesh's configuration (URLs, state folder, named serving backends).
        explicit: per-port adapter instances or URLs that win over everything else.
        on_loaded: called with each adapter when it is loaded.
    """

    def __init__(self, config: MeshConfig, explicit: Mapping[str, object] | None = None, *,
                 on_loaded: AdapterHook | None = None) -> None:
        self.config = config
        given = dict(explicit or {})
        unknown = set(given) - set(PORTS)
        if unknown:
            raise MeshError(f"unknown port(s) {sorted(unknown)}",
                            hint=f"ports are: {', '.join(PORTS)}")
        self._explicit = given
        self._loaded: dict[str, object] = {}
        self._named: dict[str, Serving] = {}
        self._lock = threading.Lock()
        self._serving_label: str | None = None
        self._on_loaded = on_loaded
        #: The in-process serving table: handlers and models registered in this process.
        self.local_serving = InProcessServing()

    # -- where each port's backend comes from ------------------------------------------------
    def url(self, port: PortName) -> tuple[str, UrlSource]:
        """The URL for ``port`` and where it came from (argument, env, config, default)."""
        explicit = self._explicit.get(port)
        return self.config.backend_url(port, explicit if isinstance(explicit, str) else None)

    def given(self, port: PortName) -> object | None:
        """The adapter *instance* given for ``port``, if one was (not a URL)."""
        found = self._explicit.get(port)
        return None if found is None or isinstance(found, str) else found

    def override(self, port: PortName, adapter: object) -> None:
        """Use ``adapter`` (an instance or a URL) for ``port`` from now on. A port that is
        already loaded keeps its adapter until :meth:`aclose`; set overrides first."""
        if port not in PORTS:
            raise MeshError(f"unknown port {port!r}", hint=f"ports are: {', '.join(PORTS)}")
        with self._lock:
            self._explicit[port] = adapter
            self._loaded.pop(port, None)
            if port == "serving":
                self._serving_label = None

    # -- loading -------------------------------------------------------------------------------
    @overload
    def get(self, port: Literal["serving"]) -> Serving: ...
    @overload
    def get(self, port: Literal["registry"]) -> ModelRegistry: ...
    @overload
    def get(self, port: Literal["retrieval"]) -> Retrieval: ...
    @overload
    def get(self, port: Literal["policy"]) -> Policy: ...
    @overload
    def get(self, port: Literal["events"]) -> EventBus: ...
    @overload
    def get(self, port: Literal["orchestrator"]) -> Orchestrator: ...
    @overload
    def get(self, port: Literal["lineage"]) -> Lineage: ...
    @overload
    def get(self, port: Literal["quota"]) -> QuotaStore: ...
    @overload
    def get(self, port: Literal["audit"]) -> AuditLog: ...
    @overload
    def get(self, port: PortName) -> object: ...

    def get(self, port: PortName) -> object:
        """The adapter for ``port``, loaded on first use (thread-safe)."""
        found = self._loaded.get(port)
        if found is not None:
            return found
        with self._lock:
            found = self._loaded.get(port)
            if found is None:
                found = self._load(port)
                if port == "quota":
                    self._set_limits(cast(QuotaStore, found))
                if self._on_loaded is not None:
                    self._on_loaded(port, found)
                self._loaded[port] = found
        return found

    def _load(self, port: PortName) -> object:
        given = self.given(port)
        if given is not None:
            return given
        url, _ = self.url(port)
        if port == "serving" and parse_url(url).scheme == "inprocess":
            return self.local_serving  # one in-process table for handlers and models
        return load_adapter(port, url, base_dir=self.config.state_path)

    def _set_limits(self, quota: QuotaStore) -> None:
        # The tenants' budgets live in the config; the store enforces them.
        for tenant, tconf in self.config.tenants.items():
            if tconf.quota is not None:
                quota.set_limits(tenant, tconf.quota.to_limits())
            for cap, limits in tconf.capabilities.items():
                quota.set_limits(tenant, limits.to_limits(), capability=cap)

    def fresh(self, port: PortName) -> tuple[object, bool]:
        """A new adapter instance for another thread and event loop, and whether the caller
        owns it (and so closes it). An instance given explicitly is shared instead."""
        given = self.given(port)
        if given is not None:
            return given, False
        url, _ = self.url(port)
        return load_adapter(port, url, base_dir=self.config.state_path), True

    # -- one typed accessor per port --------------------------------------------------------
    @property
    def serving(self) -> Serving:
        return self.get("serving")

    @property
    def registry(self) -> ModelRegistry:
        return self.get("registry")

    @property
    def retrieval(self) -> Retrieval:
        return self.get("retrieval")

    @property
    def policy(self) -> Policy:
        return self.get("policy")

    @property
    def events(self) -> EventBus:
        return self.get("events")

    @property
    def orchestrator(self) -> Orchestrator:
        return self.get("orchestrator")

    @property
    def lineage(self) -> Lineage:
        return self.get("lineage")

    @property
    def quota(self) -> QuotaStore:
        return self.get("quota")

    @property
    def audit(self) -> AuditLog:
        return self.get("audit")

    def add_serving(self, name: str, adapter: Serving) -> None:
        """Serve the named backend ``name`` with ``adapter`` (an instance built in code), as
        if declared under ``[backends.serving_named]``; it is closed with the others."""
        with self._lock:
            self._named[name] = adapter

    def serving_for(self, name: str | None) -> tuple[str, Serving]:
        """``(label, adapter)`` of the default serving backend (``name`` None) or of one
        declared under ``[backends.serving_named]``; the label names it in records."""
        if name is None:
            serving = self.serving
            if self._serving_label is None:
                given = self.given("serving")
                self._serving_label = (type(given).__name__ if given is not None
                                       else parse_url(self.url("serving")[0]).scheme)
            return self._serving_label, serving
        found = self._named.get(name)
        if found is None:
            urls = self.config.backends.serving_named
            if name not in urls:
                raise NotFound(f"no serving backend named {name!r}",
                               hint="declare it under [backends.serving_named]")
            with self._lock:
                found = self._named.get(name)
                if found is None:
                    found = self._named[name] = cast(Serving, load_adapter(
                        "serving", urls[name], base_dir=self.config.state_path))
        return name, found

    @property
    def loaded(self) -> dict[str, object]:
        """The adapters loaded so far, by port (named serving backends as ``serving:NAME``)."""
        return {**self._loaded, **{f"serving:{k}": v for k, v in self._named.items()}}

    async def aclose(self, on_error: Callable[[str], None] | None = None) -> None:
        """Close every loaded adapter (each that has ``aclose``); failures are reported to
        ``on_error`` and never stop the others from closing."""
        with self._lock:
            adapters = [*self._loaded.values(), *self._named.values()]
            self._loaded.clear()
            self._named.clear()
        for adapter in adapters:
            close: Callable[[], Awaitable[None]] | None = getattr(adapter, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception:
                if on_error is not None:
                    on_error(f"closing {type(adapter).__name__}")
