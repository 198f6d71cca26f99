"""Capabilities as real LangChain tools and a real LangChain retriever (``langchain-core``):
every tool call and every retrieval is one governed call through the mesh (Rego policy on the
embedded engine, tenant-scoped Qdrant Edge index), leaving exactly one decision record; the
sync face goes through ``Mesh.invoke``, the async one through ``Mesh.ainvoke``. Bad input: a
tool call whose arguments fail the input schema raises a typed error before any call is
made; one the policy refuses raises ``PolicyDenied`` with its record; another tenant's
documents never come back.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, ValidationError

from aios_mesh import Mesh, PolicyDenied
from aios_mesh.capabilities import capability
from aios_mesh.config import config_from_mapping
from aios_mesh.context import CallContext
from aios_mesh.interop.langchain import MeshRetriever, capability_tool, capability_tools
from aios_mesh.ports.retrieval import Point
from aios_mesh.record import DecisionRecord

pytestmark = pytest.mark.integration

POLICIES = {
    "tools/open": "package tools.open\nimport rego.v1\ndefault allow := true\n",
    # only acme may open refunds: the policy denies anyone else with a reason code
    "tools/refunds": ("package tools.refunds\nimport rego.v1\ndefault allow := false\n"
                      'allow if input.tenant == "acme"\n'
                      'reason := "refunds are for acme" if not allow\n'
                      'reason_code := "tenant_not_allowed" if not allow\n'),
}
VOCABULARY = ("refund", "shipping", "password", "invoice", "order", "delivery", "card",
              "account")
KB = {
    "acme": [("k1", "Refunds are paid to the card within five days of the refund request."),
             ("k2", "Shipping takes two days; delivery is tracked by order number."),
             ("k3", "Reset your password from the account page.")],
    "globex": [("g1", "Globex refund secret: refunds need the manager's code 7731.")],
}


class OrderQuery(BaseModel):
    order_id: str = Field(min_length=2, description="the order's id, e.g. A-17")


class Order(BaseModel):
    order_id: str
    status: str


class RefundRequest(BaseModel):
    order_id: str
    amount: float = Field(gt=0)


class Refund(BaseModel):
    refund_id: str


class Search(BaseModel):
    query: str = Field(min_length=1)
    limit: int = Field(3, ge=1, le=10)


class Passage(BaseModel):
    id: str
    text: str
    score: float


class Passages(BaseModel):
    passages: list[Passage]


def embed(text: str) -> list[float]:
    """A deterministic keyword embedding (the index is real; the embedder need not be)."""
    words = text.lower().replace(";", " ").replace(".", " ").split()
    counts = [float(sum(w.startswith(v) for w in words)) for v in VOCABULARY]
    norm = math.sqrt(sum(c * c for c in counts)) or 1.0
    return [c / norm + 1e-3 for c in counts]


@capability("lookup-order", policy="tools/open", description="Find an order's status by id.")
def lookup_order(q: OrderQuery) -> Order:
    return Order(order_id=q.order_id, status="shipped")


@capability("open-refund", policy="tools/refunds",
            description="Open a refund request for an order.")
def open_refund(r: RefundRequest) -> Refund:
    return Refund(refund_id=f"R-{r.order_id}")


@capability("search-kb", policy="tools/open", indexes=("kb",),
            description="Search the tenant's knowledge base.")
async def search_kb(q: Search, ctx: CallContext) -> Passages:
    retrieval = ctx.ports.retrieval
    hits = await retrieval.query("kb", embed(q.query), tenant=ctx.tenant, limit=q.limit)
    ctx.note_index("kb", await retrieval.snapshot("kb"))
    return Passages(passages=[Passage(id=str(h.payload["doc"]), text=h.payload["text"],
                                      score=h.score) for h in hits])


CAPABILITIES = [lookup_order, open_refund, search_kb]


def mesh_config(tmp_path: Path) -> dict[str, Any]:
    for name, text in POLICIES.items():
        path = tmp_path / "policies" / f"{name}.rego"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"state_dir": str(tmp_path / "state"), "tenants": {"acme": {}, "globex": {}},
            "backends": {"policy": f"rego:///{tmp_path}/policies",
                         "retrieval": f"qdrant-edge:///{tmp_path}/qdrant?dim={len(VOCABULARY)}"}}


async def load_kb(mesh: Mesh) -> None:
    for tenant, docs in KB.items():
        await mesh.ports.retrieval.upsert("kb", [
            Point(id=i + 1 + 100 * (tenant == "globex"), vector=embed(text),
                  payload={"doc": doc, "text": text}) for i, (doc, text) in enumerate(docs)],
            tenant=tenant)


def audit_records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "audit.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [row["record"] for row in rows if "record" in row]


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


def test_a_capability_is_a_structured_tool_with_its_schema_and_description(
        sync_mesh: Mesh) -> None:
    tool = capability_tool(sync_mesh, "lookup-order", tenant="acme", caller="bot")
    assert isinstance(tool, BaseTool)
    assert tool.name == "lookup-order"
    assert tool.description == "Find an order's status by id."
    assert tool.args_schema is OrderQuery
    assert tool.args["order_id"]["description"] == "the order's id, e.g. A-17"
    tools = capability_tools(sync_mesh, ["lookup-order", "open-refund"], tenant="acme")
    assert [t.name for t in tools] == ["lookup-order", "open-refund"]


def test_sync_tool_calls_go_through_the_pipeline_one_record_each(
        sync_mesh: Mesh, tmp_path: Path) -> None:
    records: list[DecisionRecord] = []
    sync_mesh.sinks.append(lambda record, _doc: records.append(record))
    tool = capability_tool(sync_mesh, "lookup-order", tenant="acme", caller="bot")
    assert tool.invoke({"order_id": "A-17"}) == {"order_id": "A-17", "status": "shipped"}
    # the way a LangChain agent calls it: a tool call in, a ToolMessage out
    message = tool.invoke({"name": "lookup-order", "args": {"order_id": "B-2"},
                           "id": "call-1", "type": "tool_call"})
    assert isinstance(message, ToolMessage) and message.tool_call_id == "call-1"
    assert "B-2" in str(message.content)
    sync_mesh.flush()
    assert [(r.capability, r.tenant, r.caller, r.outcome) for r in records] == [
        ("lookup-order", "acme", "bot", "ok")] * 2
    assert records[0].policy is not None  # the policy step ran for the tool call
    assert len(audit_records(tmp_path)) == 2


async def test_async_tool_calls_go_through_ainvoke(async_mesh: Mesh) -> None:
    records: list[DecisionRecord] = []
    async_mesh.sinks.append(lambda record, _doc: records.append(record))
    tool = capability_tool(async_mesh, "open-refund", tenant="acme")
    answers = await asyncio.gather(*(tool.ainvoke({"order_id": f"A-{i}", "amount": 20})
                                     for i in range(3)))
    assert sorted(a["refund_id"] for a in answers) == ["R-A-0", "R-A-1", "R-A-2"]
    await asyncio.to_thread(async_mesh.flush)
    assert len(records) == 3 and {r.caller for r in records} == {"langchain"}


async def test_bad_input_is_a_typed_error(async_mesh: Mesh, tmp_path: Path) -> None:
    records: list[DecisionRecord] = []
    async_mesh.sinks.append(lambda record, _doc: records.append(record))
    refund = capability_tool(async_mesh, "open-refund", tenant="acme")
    # arguments failing the input schema: LangChain's check against args_schema, no call
    with pytest.raises(ValidationError) as invalid:
        await refund.ainvoke({"order_id": "A-1", "amount": -5})
    assert invalid.value.errors()[0]["loc"] == ("amount",)
    with pytest.raises(ValidationError):
        await refund.ainvoke({"amount": 5})
    await asyncio.to_thread(async_mesh.flush)
    assert records == []
    # arguments the schema accepts, a call the policy refuses: PolicyDenied with its record
    theirs = capability_tool(async_mesh, "open-refund", tenant="globex")
    with pytest.raises(PolicyDenied) as denied:
        await theirs.ainvoke({"order_id": "A-1", "amount": 50})
    assert denied.value.reason_code == "tenant_not_allowed"
    await asyncio.to_thread(async_mesh.flush)
    (record,) = records
    assert (record.record_id, record.outcome) == (denied.value.record_id, "denied")


def test_retriever_is_a_governed_tenant_scoped_call(sync_mesh: Mesh) -> None:
    records: list[DecisionRecord] = []
    sync_mesh.sinks.append(lambda record, _doc: records.append(record))
    retriever = MeshRetriever(mesh=sync_mesh, capability="search-kb", tenant="acme",
                              caller="rag", payload={"limit": 2})
    docs = retriever.invoke("how long does a refund to my card take?")
    assert all(isinstance(d, Document) for d in docs) and len(docs) == 2
    assert docs[0].id == "k1" and docs[0].page_content.startswith("Refunds are paid")
    sync_mesh.flush()
    (record,) = records
    assert (record.capability, record.tenant, record.caller) == ("search-kb", "acme", "rag")
    assert docs[0].metadata["record_id"] == record.record_id
    assert "kb" in record.index_snapshots  # the record names the index snapshot read
    assert docs[0].metadata["index_snapshots"] == record.index_snapshots
    # another tenant's knowledge base never answers: the port's scope holds
    theirs = MeshRetriever(mesh=sync_mesh, capability="search-kb", tenant="globex")
    assert [d.id for d in theirs.invoke("refund")] == ["g1"]
    assert "g1" not in {d.id for d in retriever.invoke("refund manager code secret")}


async def test_retriever_async_face(async_mesh: Mesh) -> None:
    retriever = MeshRetriever(mesh=async_mesh, capability="search-kb", tenant="acme")
    docs = await retriever.ainvoke("delivery of my order")
    assert docs[0].id == "k2" and docs[0].metadata["score"] > 0.5
