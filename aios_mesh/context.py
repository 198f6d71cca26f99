"""What an in-process capability handler may know about the call it serves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aios_mesh.ports.container import Ports
from aios_mesh.result import Result

__all__ = ["CallContext", "Invoker"]


class Invoker(Protocol):
    """The part of a mesh a handler can use: its ports and nested calls."""

    @property
    def ports(self) -> Ports: ...

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
    whole pipeline (policy, quota, its own decision record) for the same tenant, caller,
    workflow run and trace.
    """

    tenant: str
    caller: str
    record_id: str
    mesh: Invoker
    index_snapshots: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None
    trace_headers: dict[str, str] = field(default_factory=dict)

    @property
    def ports(self) -> Ports:
        """The mesh's adapters (``ctx.ports.retrieval``, ``ctx.ports.registry``, ...)."""
        return self.mesh.ports

    def note_index(self, collection: str, snapshot: str) -> None:
        """Record which index version answered (it goes into the decision record)."""
        self.index_snapshots[collection] = snapshot

    async def invoke(self, capability: str, payload: Any, *,
                     attributes: Mapping[str, Any] | None = None) -> Result[Any]:
        """Call another capability on behalf of this call (same tenant, caller, parent run
        and trace). Raises its :class:`~aios_mesh.errors.MeshError` like
        :meth:`Mesh.ainvoke <aios_mesh.mesh.Mesh.ainvoke>`.

        Example::

            vector = (await ctx.invoke("embed-vendor-name", {"text": q.name})).output.vector
        """
        return await self.mesh.ainvoke(capability, payload, tenant=self.tenant,
                                       caller=self.caller, attributes=attributes,
                                       parent=self.parent,
                                       traceparent=self.trace_headers or None)
