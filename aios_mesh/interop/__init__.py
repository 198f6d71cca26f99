"""Governed capabilities inside the agent frameworks teams already use.

Every object here is a thin face over the mesh's one pipeline: a tool call or a retrieval is
a ``Mesh.ainvoke`` / ``Mesh.invoke`` of a capability for a tenant (policy, quota, redaction,
decision record), never a second client or a shortcut to a backend.

* :mod:`aios_mesh.interop.langchain` — capabilities as LangChain ``StructuredTool``s and a
  ``BaseRetriever`` over a retrieval capability (needs ``langchain-core``);
* :mod:`aios_mesh.interop.langgraph` — a LangGraph agent whose decision node asks a mesh
  planner capability for its next action and whose tool node makes governed child calls
  (needs ``langgraph``);
* :mod:`aios_mesh.interop.llamaindex` — capabilities as LlamaIndex ``FunctionTool``s and a
  LlamaIndex retriever (needs ``llama-index-core``).

The framework is imported by the submodule that needs it, so ``import aios_mesh.interop``
works without any of them; importing a submodule without its framework raises
``ImportError`` naming the extra to install (``pip install 'aios-mesh[interop]'``)::

    from aios_mesh.interop.langchain import capability_tool

    tool = capability_tool(mesh, "lookup-order", tenant="acme")
    tool.invoke({"order_id": "A-17"})
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from aios_mesh.mesh import Mesh
from aios_mesh.result import Result

__all__ = ["INTEROP_EXTRA", "GovernedCall", "RetrievedPassage", "governed_call",
           "missing_framework", "passages_from", "plain_output", "plain_payload"]

#: The extra that installs every framework this package faces.
INTEROP_EXTRA = "interop"


def missing_framework(package: str, exc: ImportError) -> ImportError:
    """The ``ImportError`` an interop module raises when its framework is not installed.

    Example::

        try:
            import langgraph
        except ImportError as exc:
            raise missing_framework("langgraph", exc) from exc
    """
    return ImportError(f"aios_mesh.interop needs {package}: pip install "
                       f"'aios-mesh[{INTEROP_EXTRA}]' (or pip install {package}); "
                       f"{exc}")


def plain_payload(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A framework's validated tool arguments as the JSON-like payload the mesh validates
    again (nested pydantic models dumped, ``None`` of an omitted optional kept out).

    Example: ``plain_payload({"order": OrderRef(id="A-17")}) == {"order": {"id": "A-17"}}``.
    """
    return {key: (value.model_dump(mode="json") if isinstance(value, BaseModel) else value)
            for key, value in arguments.items()}


def plain_output(result: Result[Any]) -> dict[str, Any]:
    """What a framework's tool returns for a governed call: the output as JSON-like data, or
    ``{"review_id": ...}`` when the call went to human review (no output yet).

    Example: ``plain_output(mesh.invoke("lookup-order", {...}, tenant="acme"))``.
    """
    if result.output is None:
        return {"review_id": result.record.review_id, "outcome": str(result.record.outcome)}
    output = result.output
    if isinstance(output, BaseModel):
        dumped: dict[str, Any] = output.model_dump(mode="json")
        return dumped
    return {"output": output}


@dataclass(frozen=True, slots=True)
class RetrievedPassage:
    """One item a retrieval capability answered, framework-neutral: its text, id and score
    (when the item has them) and every other field plus the call's provenance
    (``record_id``, ``capability``, ``index_snapshots``) in ``metadata``."""

    text: str
    id: str | None = None
    score: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GovernedCall:
    """A capability as the two plain functions a framework's tool wraps: ``call`` runs
    :meth:`Mesh.invoke`, ``acall`` :meth:`Mesh.ainvoke`, both for one tenant and caller,
    taking the framework's keyword arguments and returning :func:`plain_output`."""

    call: Callable[..., dict[str, Any]]
    acall: Callable[..., Awaitable[dict[str, Any]]]


def governed_call(mesh: Mesh, name: str, *, tenant: str, caller: str,
                  attributes: Mapping[str, Any] | None = None) -> GovernedCall:
    """The sync and async functions of a framework tool for capability ``name`` (one pair
    for every framework, so each tool is a thin wrapper)."""
    attrs = dict(attributes) if attributes else None

    def call(**arguments: Any) -> dict[str, Any]:
        return plain_output(mesh.invoke(name, plain_payload(arguments), tenant=tenant,
                                        caller=caller, attributes=attrs))

    async def acall(**arguments: Any) -> dict[str, Any]:
        return plain_output(await mesh.ainvoke(name, plain_payload(arguments),
                                               tenant=tenant, caller=caller, attributes=attrs))

    return GovernedCall(call, acall)


def passages_from(result: Result[Any], *, capability: str, results_field: str = "passages",
                  text_field: str = "text") -> list[RetrievedPassage]:
    """The passages of one governed retrieval call: one per item of the output's list
    ``results_field``, its ``text_field`` as the text (the seam the LangChain and LlamaIndex
    retrievers share).

    Raises:
        InvalidOutput: the output has no list ``results_field``.

    Example::

        result = await mesh.ainvoke("search-kb", {"query": "refunds"}, tenant="acme")
        [p.text for p in passages_from(result, capability="search-kb")]
    """
    from aios_mesh.errors import InvalidOutput

    items = plain_output(result).get(results_field)
    if not isinstance(items, list):
        raise InvalidOutput(f"the retrieval capability {capability!r} has no list "
                            f"{results_field!r} in its output",
                            hint="name its list and text fields with results_field= and "
                                 "text_field=")
    record = result.record
    passages = []
    for item in items:
        fields = dict(item) if isinstance(item, Mapping) else {text_field: str(item)}
        text = str(fields.pop(text_field, ""))
        ident = fields.get("id")
        score = fields.get("score")
        fields.update({"record_id": record.record_id, "capability": capability,
                       "index_snapshots": dict(record.index_snapshots)})
        passages.append(RetrievedPassage(
            text=text, id=None if ident is None else str(ident),
            score=float(score) if isinstance(score, int | float) else None, metadata=fields))
    return passages
