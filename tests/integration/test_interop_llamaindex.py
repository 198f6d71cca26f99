"""Capabilities as real LlamaIndex tools (``llama-index-core``'s ``FunctionTool``) and a real
LlamaIndex retriever, over the same seam as the LangChain faces: one governed call each
(policy, tenant-scoped Qdrant Edge index, one decision record). Bad input: arguments that
fail the capability's input schema reach the mesh's pipeline and raise ``InvalidInput`` with
a ``rejected`` record; a denied call raises ``PolicyDenied``; another tenant's documents
never come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.tools import FunctionTool, ToolOutput

from aios_mesh import InvalidInput, Mesh, PolicyDenied
from aios_mesh.config import config_from_mapping
from aios_mesh.interop.llamaindex import (
    MeshLlamaRetriever,
    capability_function_tool,
    capability_function_tools,
)
from aios_mesh.record import DecisionRecord
from tests.integration.test_interop_langchain import (
    CAPABILITIES,
    OrderQuery,
    load_kb,
    mesh_config,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def sync_mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Mesh(config_from_mapping(mesh_config(tmp_path), base_dir=tmp_path),
              capabilities=CAPABILITIES) as mesh:
        mesh.run_sync(load_kb(mesh))
        yield mesh


@pytest.fixture
async def async_mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    mesh = Mesh(config_from_mapping(mesh_config(tmp_path), base_dir=tmp_path),
                capabilities=CAPABILITIES)
    await load_kb(mesh)
    yield mesh
    await mesh.aclose()


def collect(mesh: Mesh) -> list[DecisionRecord]:
    records: list[DecisionRecord] = []
    mesh.sinks.append(lambda record, _doc: records.append(record))
    return records


def test_a_capability_is_a_function_tool_with_its_schema(sync_mesh: Mesh) -> None:
    records = collect(sync_mesh)
    tool = capability_function_tool(sync_mesh, "lookup-order", tenant="acme", caller="bot")
    assert isinstance(tool, FunctionTool)
    assert tool.metadata.name == "lookup-order"
    assert tool.metadata.description == "Find an order's status by id."
    assert tool.metadata.fn_schema is OrderQuery
    assert "order_id" in tool.metadata.get_parameters_dict()["properties"]
    out = tool.call(order_id="A-17")
    assert isinstance(out, ToolOutput) and out.raw_output == {"order_id": "A-17",
                                                              "status": "shipped"}
    assert tool(order_id="A-18").raw_output["order_id"] == "A-18"
    sync_mesh.flush()
    assert [(r.capability, r.caller, r.outcome) for r in records] == [
        ("lookup-order", "bot", "ok")] * 2
    names = [t.metadata.name for t in capability_function_tools(
        sync_mesh, ["lookup-order", "open-refund"], tenant="acme")]
    assert names == ["lookup-order", "open-refund"]


async def test_async_calls_and_bad_input_are_typed_with_records(async_mesh: Mesh) -> None:
    records = collect(async_mesh)
    refund = capability_function_tool(async_mesh, "open-refund", tenant="acme")
    out = await refund.acall(order_id="A-1", amount=20)
    assert out.raw_output == {"refund_id": "R-A-1"}
    # arguments failing the input schema: the pipeline's validate_input refuses them
    with pytest.raises(InvalidInput) as invalid:
        await refund.acall(order_id="A-1", amount=-5)
    with pytest.raises(PolicyDenied) as denied:
        await capability_function_tool(async_mesh, "open-refund", tenant="globex").acall(
            order_id="A-1", amount=5)
    await asyncio.to_thread(async_mesh.flush)
    assert [r.outcome for r in records] == ["ok", "rejected", "denied"]
    assert records[1].record_id == invalid.value.record_id
    assert records[2].record_id == denied.value.record_id


def test_retriever_is_a_governed_tenant_scoped_call(sync_mesh: Mesh) -> None:
    records = collect(sync_mesh)
    retriever = MeshLlamaRetriever(sync_mesh, "search-kb", tenant="acme", caller="rag",
                                   payload={"limit": 2})
    hits = retriever.retrieve("how long does a refund to my card take?")
    assert all(isinstance(h, NodeWithScore) for h in hits) and len(hits) == 2
    assert hits[0].node.node_id == "k1" and hits[0].score is not None
    assert hits[0].node.get_content().startswith("Refunds are paid")
    sync_mesh.flush()
    (record,) = records
    assert (record.capability, record.tenant, record.caller) == ("search-kb", "acme", "rag")
    assert hits[0].node.metadata["record_id"] == record.record_id
    assert "kb" in record.index_snapshots
    theirs = MeshLlamaRetriever(sync_mesh, "search-kb", tenant="globex")
    assert [h.node.node_id for h in theirs.retrieve("refund")] == ["g1"]


async def test_retriever_async_face(async_mesh: Mesh) -> None:
    retriever = MeshLlamaRetriever(async_mesh, "search-kb", tenant="acme")
    hits = await retriever.aretrieve(QueryBundle(query_str="delivery of my order"))
    assert hits[0].node.node_id == "k2"
