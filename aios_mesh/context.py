"""What an in-process capability handler may know about the call it serves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aios_mesh.lineage import DEFAULT_NAMESPACE
from aios_mesh.ports.container import Ports
from aios_mesh.result import Result
from aios_mesh.review import ReviewQueue
from aios_mesh.state import SharedState

__all__ = ["CallContext", "Invoker"]


class Invoker(Protocol):
    """The part of a mesh a handler can use: its ports and nested calls."""

    @property
    def ports(self) -> Ports: ...

    #: where the mesh's own stores keep state (sqlite folder or PostgreSQL)
    state: SharedState

    def review_queue(self) -> ReviewQueue: ...

    async def ainvoke(self, capability: str, payload: Any, *, tenant: str,
                      caller: str = "anonymous", attributes: Mapping[str, Any] | None = None,
                      parent: Mapping[str, Any] | None = None,
                      traceparent: Mapping[str, str] | None = None,
                      resume: Mapping[str, Any] | None = None) -> Result[Any]: ...


@dataclass(slots=True)
class CallContext:
    """Passed as the second argument to handlers that declare one::

        @capability("retrieve-context")
        async def retrieve(q: Query, ctx: CallContext) -> Passages:
            retrieval = ctx.ports.retrieval
            hits = await retrieval.query("kb", embed(q.text), tenant=ctx.tenant)
            ctx.note_index("kb", await retrieval.snapshot("kb"))
            ...

    A handler that needs another capability calls :meth:`invoke`: the nested call runs the
    whole pipeline (policy, quota, its own decision record) for the same tenant, caller and
    trace, and its record names this call's run as its ``parent`` (the workflow run, if any,
    as the ``root``). A handler that writes an index says so with :meth:`note_index_write`
    (the index becomes an output of the call's lineage run).
    """

    tenant: str
    caller: str
    record_id: str
    mesh: Invoker
    index_snapshots: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    #: the run that made this call (a workflow run, or the capability run of a nested call)
    parent: dict[str, Any] | None = None
    trace_headers: dict[str, str] = field(default_factory=dict)
    #: the capability this call serves (names this run as a nested call's parent)
    capability: str = ""
    index_writes: dict[str, str | None] = field(default_factory=dict)

    @property
    def ports(self) -> Ports:
        """The mesh's adapters (``ctx.ports.retrieval``, ``ctx.ports.registry``, ...)."""
        return self.mesh.ports

    @property
    def review(self) -> ReviewQueue:
        """The mesh's human-review queue (an agent parks a tool call there for approval)."""
        return self.mesh.review_queue()

    @property
    def state(self) -> SharedState:
        """The mesh's shared state, for a handler's own durable store (see
        :class:`~aios_mesh.state.Database`)."""
        return self.mesh.state

    def note_index(self, collection: str, snapshot: str) -> None:
        """Record which index version answered (it goes into the decision record)."""
        self.index_snapshots[collection] = snapshot

    def note_index_write(self, collection: str, snapshot: str | None = None) -> None:
        """Record that this call wrote ``collection`` (and the snapshot it left, if known):
        the decision record lists it among the call's output datasets."""
        self.index_writes[collection] = snapshot

    def as_parent(self) -> dict[str, Any]:
        """This call's run as the ``parent`` of a call it makes: ``run_id``, ``namespace``,
        ``name`` (the capability) and ``root``, the run at the top of the chain (the
        workflow run, else the outermost capability run)."""
        me = {"run_id": self.record_id, "namespace": DEFAULT_NAMESPACE,
              "name": self.capability}
        parent = self.parent
        if not parent:
            return {**me, "root": me}
        root = parent.get("root") or {k: parent.get(k) for k in ("run_id", "namespace", "name")}
        return {**me, "root": dict(root)}

    async def invoke(self, capability: str, payload: Any, *,
                     attributes: Mapping[str, Any] | None = None) -> Result[Any]:
        """Call another capability on behalf of this call (same tenant, caller and trace;
        this call's run is its parent, see :meth:`as_parent`). Raises its
        :class:`~aios_mesh.errors.MeshError` like :meth:`Mesh.ainvoke
        <aios_mesh.mesh.Mesh.ainvoke>`.

        Example::

            vector = (await ctx.invoke("embed-vendor-name", {"text": q.name})).output.vector
        """
        return await self.mesh.ainvoke(capability, payload, tenant=self.tenant,
                                       caller=self.caller, attributes=attributes,
                                       parent=self.as_parent(),
                                       traceparent=self.trace_headers or None)
