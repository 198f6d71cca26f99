"""Capabilities as LangChain tools, and a LangChain retriever over a retrieval capability.

Needs ``langchain-core`` (the ``interop`` extra); importing this module without it raises an
``ImportError`` that names the extra. Every tool call and every retrieval is one governed
call through the mesh's pipeline (policy, quota, redaction, one decision record): the
coroutine is :meth:`Mesh.ainvoke <aios_mesh.mesh.Mesh.ainvoke>`, the sync function
:meth:`Mesh.invoke <aios_mesh.mesh.Mesh.invoke>` — no second client.

    from aios_mesh.interop.langchain import MeshRetriever, capability_tool, capability_tools

    lookup = capability_tool(mesh, "lookup-order", tenant="acme", caller="support-bot")
    lookup.invoke({"order_id": "A-17"})            # {"order_id": "A-17", "status": "shipped"}
    await lookup.ainvoke({"order_id": "A-17"})
    tools = capability_tools(mesh, ["lookup-order", "open-refund"], tenant="acme")
    docs = MeshRetriever(mesh=mesh, capability="search-kb", tenant="acme").invoke("refunds")

**Why the retriever calls a capability, not the Retrieval port.** A retriever that queried
``mesh.ports.retrieval`` itself would be a side door: no policy decision, no quota, no
redaction and no decision record — nothing would say which index snapshot informed the
answer. A retrieval *capability* (its handler embeds the query and reads the tenant-scoped
Retrieval port through ``ctx.ports.retrieval``, noting the snapshot with ``ctx.note_index``)
runs the whole pipeline, and its record names the index snapshot and the caller. Each
document carries that record's id in ``metadata["record_id"]``.

**Bad arguments.** ``args_schema`` is the capability's input model, so LangChain checks the
arguments before the call: arguments that fail it raise pydantic's ``ValidationError``
(nothing reaches the mesh, so no record). Arguments the schema accepts but the capability's
pipeline refuses raise the call's typed :class:`~aios_mesh.errors.MeshError`
(``PolicyDenied``, ``QuotaExceeded``, ...) with its ``record_id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aios_mesh.interop import governed_call, missing_framework, passages_from
from aios_mesh.mesh import Mesh
from aios_mesh.result import Result

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.tools import StructuredTool
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_framework("langchain-core", exc) from exc

from pydantic import ConfigDict

__all__ = ["MeshRetriever", "capability_tool", "capability_tools", "documents_from"]


def _description(mesh: Mesh, name: str) -> str:
    spec = mesh.capability(name)
    text = spec.description.strip()
    return text or f"The governed capability {name!r} (input: {spec.input.__name__})."


def capability_tool(mesh: Mesh, name: str, *, tenant: str, caller: str | None = None,
                    attributes: Mapping[str, Any] | None = None) -> StructuredTool:
    """One capability as a LangChain ``StructuredTool``.

    The tool's name is the capability's, its ``args_schema`` the capability's input model,
    its description the spec's. ``tool.invoke`` runs :meth:`Mesh.invoke`, ``tool.ainvoke``
    :meth:`Mesh.ainvoke`, for ``tenant`` and ``caller`` (default: ``"langchain"``); both
    return the output as JSON-like data (``{"review_id": ...}`` while a human reviews the
    call) and raise the call's :class:`~aios_mesh.errors.MeshError`.

    Raises:
        UnknownCapability: the mesh has no capability ``name`` (naming the closest).

    Example::

        tool = capability_tool(mesh, "lookup-order", tenant="acme", caller="support-bot")
        tool.invoke({"order_id": "A-17"})
        # {'order_id': 'A-17', 'status': 'shipped'}
    """
    spec = mesh.capability(name)
    governed = governed_call(mesh, name, tenant=tenant, caller=caller or "langchain",
                             attributes=attributes)

    return StructuredTool(name=name, description=_description(mesh, name),
                          args_schema=spec.input, func=governed.call, coroutine=governed.acall,
                          metadata={"aios_mesh_capability": name, "tenant": tenant})


def capability_tools(mesh: Mesh, names: Iterable[str], *, tenant: str,
                     caller: str | None = None) -> list[StructuredTool]:
    """Several capabilities as LangChain tools (see :func:`capability_tool`), in order.

    Example::

        tools = capability_tools(mesh, ["lookup-order", "open-refund"], tenant="acme")
        {t.name for t in tools}   # {'lookup-order', 'open-refund'}
    """
    return [capability_tool(mesh, name, tenant=tenant, caller=caller) for name in names]


def documents_from(result: Result[Any], *, capability: str, results_field: str = "passages",
                   text_field: str = "text") -> list[Document]:
    """The documents a retrieval capability answered: one per item of the output's
    ``results_field``; ``text_field`` becomes ``page_content``, every other field goes into
    ``metadata`` together with the call's ``record_id``, ``capability`` and the index
    snapshots its record names (:func:`aios_mesh.interop.passages_from`).

    Example::

        documents_from(mesh.invoke("search-kb", {"query": "refund"}, tenant="acme"),
                       capability="search-kb")
    """
    return [Document(page_content=p.text, metadata=p.metadata, id=p.id)
            for p in passages_from(result, capability=capability,
                                   results_field=results_field, text_field=text_field)]


class MeshRetriever(BaseRetriever):
    """A LangChain retriever whose every query is one governed call of a retrieval
    capability (its record names the tenant, the caller and the index snapshot read).

    Args:
        mesh: the mesh.
        capability: a capability whose input has ``query_field`` (the query text) and whose
            output has a list ``results_field`` of items with ``text_field``.
        tenant: the tenant the Retrieval port is scoped to (never another's data).
        caller: who asks (default ``"langchain"``).
        query_field / results_field / text_field: the names in the capability's models.
        payload: further input fields sent with every query (``{"limit": 4}``).

    Example::

        retriever = MeshRetriever(mesh=mesh, capability="search-kb", tenant="acme",
                                  payload={"limit": 4})
        for doc in retriever.invoke("How do refunds work?"):
            print(doc.page_content, doc.metadata["score"], doc.metadata["record_id"])
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    mesh: Mesh
    capability: str
    tenant: str
    caller: str = "langchain"
    query_field: str = "query"
    results_field: str = "passages"
    text_field: str = "text"
    payload: dict[str, Any] = {}

    def _request(self, query: str) -> dict[str, Any]:
        return {**self.payload, self.query_field: query}

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        result = self.mesh.invoke(self.capability, self._request(query), tenant=self.tenant,
                                  caller=self.caller)
        return documents_from(result, capability=self.capability,
                              results_field=self.results_field, text_field=self.text_field)

    async def _aget_relevant_documents(
            self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        result = await self.mesh.ainvoke(self.capability, self._request(query),
                                         tenant=self.tenant, caller=self.caller)
        return documents_from(result, capability=self.capability,
                              results_field=self.results_field, text_field=self.text_field)
