"""Capabilities as LlamaIndex tools, and a LlamaIndex retriever over a retrieval capability.

Needs ``llama-index-core`` (the ``interop`` extra); importing this module without it raises
an ``ImportError`` that names the extra. The seam is the one :mod:`aios_mesh.interop.langchain`
uses: a tool call or a retrieval is one governed call (``Mesh.ainvoke`` for ``acall`` /
``aretrieve``, ``Mesh.invoke`` for ``call`` / ``retrieve``), and the retriever calls a
retrieval *capability* so that its record names the index snapshot (see the LangChain
module for why not the Retrieval port directly).

    from aios_mesh.interop.llamaindex import MeshLlamaRetriever, capability_function_tool

    tool = capability_function_tool(mesh, "lookup-order", tenant="acme")
    tool.call(order_id="A-17").raw_output          # {"order_id": "A-17", "status": ...}
    nodes = MeshLlamaRetriever(mesh, "search-kb", tenant="acme").retrieve("refunds")

**Bad arguments.** LlamaIndex hands the keyword arguments to the function as given, so the
mesh's pipeline checks them against the capability's input model: arguments that fail it
raise :class:`~aios_mesh.errors.InvalidInput` (a typed ``MeshError``) and leave a
``rejected`` decision record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aios_mesh.interop import governed_call, missing_framework, passages_from
from aios_mesh.mesh import Mesh

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.core.tools import FunctionTool, ToolMetadata
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_framework("llama-index-core", exc) from exc

__all__ = ["MeshLlamaRetriever", "capability_function_tool", "capability_function_tools"]


def capability_function_tool(mesh: Mesh, name: str, *, tenant: str,
                             caller: str | None = None,
                             attributes: Mapping[str, Any] | None = None) -> FunctionTool:
    """One capability as a LlamaIndex ``FunctionTool``: ``fn_schema`` is the capability's
    input model, the description the spec's; ``tool.call(**kwargs)`` runs
    :meth:`Mesh.invoke`, ``await tool.acall(**kwargs)`` :meth:`Mesh.ainvoke`, for ``tenant``
    and ``caller`` (default ``"llamaindex"``). The ``ToolOutput``'s ``raw_output`` is the
    output as JSON-like data; a refused call raises its typed
    :class:`~aios_mesh.errors.MeshError`.

    Example::

        tool = capability_function_tool(mesh, "lookup-order", tenant="acme")
        tool.metadata.name, tool.metadata.fn_schema   # 'lookup-order', OrderQuery
        tool.call(order_id="A-17").raw_output
    """
    spec = mesh.capability(name)
    governed = governed_call(mesh, name, tenant=tenant, caller=caller or "llamaindex",
                             attributes=attributes)

    description = spec.description.strip() or f"The governed capability {name!r}."
    return FunctionTool(fn=governed.call, async_fn=governed.acall,
                        metadata=ToolMetadata(name=name, description=description,
                                              fn_schema=spec.input))


def capability_function_tools(mesh: Mesh, names: Iterable[str], *, tenant: str,
                              caller: str | None = None) -> list[FunctionTool]:
    """Several capabilities as LlamaIndex tools (:func:`capability_function_tool`).

    Example::

        tools = capability_function_tools(mesh, ["lookup-order"], tenant="acme")
    """
    return [capability_function_tool(mesh, n, tenant=tenant, caller=caller) for n in names]


class MeshLlamaRetriever(BaseRetriever):
    """A LlamaIndex retriever whose every query is one governed call of a retrieval
    capability; each node's metadata holds the call's ``record_id`` and index snapshots.

    Args:
        mesh: the mesh.
        capability: input has ``query_field``; output has a list ``results_field`` of items
            with ``text_field`` (and optionally ``id``, ``score``).
        tenant: the tenant whose scope the Retrieval port enforces.
        caller: who asks (default ``"llamaindex"``).
        payload: further input fields sent with every query.

    Example::

        retriever = MeshLlamaRetriever(mesh, "search-kb", tenant="acme",
                                       payload={"limit": 4})
        for hit in retriever.retrieve("How do refunds work?"):
            print(hit.score, hit.node.get_content(), hit.node.metadata["record_id"])
    """

    def __init__(self, mesh: Mesh, capability: str, *, tenant: str,
                 caller: str = "llamaindex", query_field: str = "query",
                 results_field: str = "passages", text_field: str = "text",
                 payload: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.mesh = mesh
        self.capability = capability
        self.tenant = tenant
        self.caller = caller
        self.query_field = query_field
        self.results_field = results_field
        self.text_field = text_field
        self.payload = dict(payload or {})

    def _request(self, query_bundle: QueryBundle) -> dict[str, Any]:
        return {**self.payload, self.query_field: query_bundle.query_str}

    def _nodes(self, result: Any) -> list[NodeWithScore]:
        nodes = []
        for passage in passages_from(result, capability=self.capability,
                                     results_field=self.results_field,
                                     text_field=self.text_field):
            node = TextNode(text=passage.text, metadata=passage.metadata,
                            **({"id_": passage.id} if passage.id is not None else {}))
            nodes.append(NodeWithScore(node=node, score=passage.score))
        return nodes

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(self.mesh.invoke(self.capability, self._request(query_bundle),
                                            tenant=self.tenant, caller=self.caller))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(await self.mesh.ainvoke(self.capability,
                                                   self._request(query_bundle),
                                                   tenant=self.tenant, caller=self.caller))
