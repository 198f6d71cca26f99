"""The demo's capabilities: a registered model, a deterministic fallback, a retrieval handler."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from aios_mesh.capabilities import SLO, CapabilitySpec, Price, capability
from aios_mesh.context import CallContext
from aios_mesh.ports.retrieval import Point
from aios_mesh.ports.serving import Usage

__all__ = ["CLASSIFY", "KB_ARTICLES", "RETRIEVE", "Passages", "Query", "TicketIn",
           "TicketRoute", "index_kb", "keyword_rules"]

Queue = Literal["billing", "technical", "account", "shipping"]


class TicketIn(BaseModel):
    text: str = Field(min_length=1, max_length=4000)


class TicketRoute(BaseModel):
    label: Queue


class Query(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(3, ge=1, le=20)


class Passages(BaseModel):
    ids: list[str]
    titles: list[str]
    scores: list[float]


_KEYWORDS: dict[str, Queue] = {"invoice": "billing", "refund": "billing", "card": "billing",
                               "parcel": "shipping", "delivery": "shipping",
                               "password": "account", "user": "account"}


def keyword_rules(payload: TicketIn) -> TicketRoute:
    """The deterministic fallback when the model backend is down."""
    text = payload.text.lower()
    for word, queue in _KEYWORDS.items():
        if word in text:
            return TicketRoute(label=queue)
    return TicketRoute(label="technical")


CLASSIFY = CapabilitySpec(
    name="classify-ticket", version="1",
    description="Route a support ticket to the queue that should handle it.",
    input=TicketIn, output=TicketRoute, model="ticket-classifier@champion",
    policy="demo/tickets", slo=SLO(timeout_s=5, p95_ms=50), review_threshold=0.55,
    fallbacks=("function:aios_mesh.demo.capabilities:keyword_rules", "human"),
    price=Price(per_call=0.002), estimate=Usage(calls=1), data_classification="confidential")

KB_ARTICLES = {
    "acme": [("kb-a1", "Duplicate invoice charges", "billing"),
             ("kb-a2", "Resetting a password", "account"),
             ("kb-a3", "Tracking a delayed parcel", "shipping"),
             ("kb-a4", "Export errors after the update", "technical")],
    "globex": [("kb-g1", "Refund policy for cards", "billing"),
               ("kb-g2", "Adding users to a workspace", "account"),
               ("kb-g3", "Customs holds on shipments", "shipping")],
    "initech": [("kb-i1", "Login crashes on mobile", "technical")],
}


async def index_kb(retrieval: object) -> None:
    """Index each tenant's articles in its own scope of the ``kb`` collection."""
    from aios_mesh.demo.model import embed

    for tenant, articles in KB_ARTICLES.items():
        vectors = embed([title for _, title, _ in articles])
        points = [Point(id=aid, vector=vec, payload={"title": title, "queue": queue})
                  for (aid, title, queue), vec in zip(articles, vectors, strict=True)]
        await retrieval.upsert("kb", points, tenant=tenant)  # type: ignore[attr-defined]


@capability("retrieve-context", version="1", policy="demo/tickets", indexes=("kb",),
            price=Price(per_call=0.0005), slo=SLO(timeout_s=2))
async def retrieve_context(query: Query, ctx: CallContext) -> Passages:
    """Find the tenant's help articles closest to the ticket (Qdrant, tenant-scoped)."""
    from aios_mesh.demo.model import embed

    retrieval = ctx.ports.retrieval
    hits = await retrieval.query("kb", embed([query.text])[0], tenant=ctx.tenant,
                                 limit=query.top_k)
    ctx.note_index("kb", await retrieval.snapshot("kb"))
    return Passages(ids=[str(h.id) for h in hits], titles=[h.payload["title"] for h in hits],
                    scores=[round(h.score, 4) for h in hits])


RETRIEVE = retrieve_context
