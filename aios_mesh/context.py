"""What an in-process capability handler may know about the call it serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["CallContext"]


@dataclass(slots=True)
class CallContext:
    """Passed as the second argument to handlers that declare one::

        @capability("retrieve-context")
        async def retrieve(q: Query, ctx: CallContext) -> Passages:
            retrieval = ctx.mesh.port("retrieval")
            hits = await retrieval.query("kb", embed(q.text), tenant=ctx.tenant)
            ctx.note_index("kb", await retrieval.snapshot("kb"))
            ...
    """

    tenant: str
    caller: str
    record_id: str
    mesh: Mesh
    index_snapshots: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)

    def note_index(self, collection: str, snapshot: str) -> None:
        """Record which index version answered (it goes into the decision record)."""
        self.index_snapshots[collection] = snapshot
