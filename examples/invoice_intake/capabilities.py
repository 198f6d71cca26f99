"""The invoice-intake capabilities: what business code asks for, never which model or server.

==========================  ==========================================  =====================
capability                  answered by                                 policy
==========================  ==========================================  =====================
``extract-invoice-fields``  ``invoice-extractor@champion`` (MLflow)     ``invoices/extract``
``embed-vendor-name``       ``vendor-embedder@champion`` (MLflow)       ``invoices/match``
``match-vendor``            handler: embed + tenant-scoped vector query  ``invoices/match``
``route-invoice``           handler: approve unless the policy objects   ``invoices/route``
``draft-review-brief``      ``review-writer@champion`` (an LLM: Gemma    ``invoices/brief``
                            3 270M on llama.cpp), constrained to JSON
==========================  ==========================================  =====================

The brief is advice for the human who decides an invoice the classical models and the policy
sent to review: it never decides anything itself.

The extraction model never sees personal data (the policy's ``redact`` obligation), an unsure
extraction goes to a human (``review_threshold``), and the routing policy sends invoices above
the tenant's approval threshold — or whose vendor match is below the policy's minimum
confidence — to human review.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aios_mesh.capabilities import SLO, CapabilitySpec, Price, capability
from aios_mesh.context import CallContext
from aios_mesh.generation import Generation
from aios_mesh.ports.retrieval import Point
from aios_mesh.ports.serving import Usage

__all__ = [
    "ALL",
    "BRIEF",
    "EMBED",
    "EXTRACT",
    "FX_TO_USD",
    "MATCH",
    "ROUTE",
    "ROUTES",
    "VENDOR_INDEX",
    "Embedding",
    "InvoiceFields",
    "InvoiceText",
    "ReviewBrief",
    "ReviewBriefRequest",
    "RouteDecision",
    "RouteRequest",
    "VendorMatch",
    "VendorName",
    "index_vendors",
    "to_usd",
]

#: Where an invoice can end up, in the order reports stack them (see intake.py).
ROUTES: tuple[str, ...] = ("auto", "human", "denied", "exception")

#: The vector collection holding each tenant's vendor master (one scope per tenant).
VENDOR_INDEX = "vendors"

#: Reference rates for the approval threshold (a real deployment reads them from treasury).
FX_TO_USD = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "CHF": 1.13, "JPY": 0.0067}


def to_usd(amount: float, currency: str) -> float:
    """``amount`` in US dollars at the reference rate (unknown currencies count at 1.0)."""
    return round(amount * FX_TO_USD.get(currency, 1.0), 2)


class InvoiceText(BaseModel):
    """An invoice as text (OCR output, an e-mail body, a PDF's text layer)."""

    text: str = Field(min_length=1, max_length=20_000)


class InvoiceFields(BaseModel):
    """What the extraction model read; ``None`` where it found nothing."""

    model_config = ConfigDict(extra="ignore")

    vendor_name: str | None = None
    invoice_number: str | None = None
    invoice_date: str | None = Field(None, description="ISO date, yyyy-mm-dd")
    currency: str | None = Field(None, description="ISO 4217 code")
    total: float | None = None
    confidence: float | None = Field(None, ge=0, le=1)


class VendorName(BaseModel):
    text: str = Field(min_length=1, max_length=300)


class Embedding(BaseModel):
    vector: list[float]


class VendorMatch(BaseModel):
    """The tenant's master-data vendor closest to the printed name."""

    vendor_id: str | None
    name: str | None
    score: float
    runner_up: str | None = None
    confidence: float = Field(ge=0, le=1)


class RouteRequest(BaseModel):
    invoice_id: str
    vendor_id: str | None
    invoice_number: str
    currency: str
    total: float = Field(ge=0)
    amount_usd: float = Field(ge=0)


class RouteDecision(BaseModel):
    action: Literal["approve"]
    invoice_id: str
    amount_usd: float


EXTRACT = CapabilitySpec(
    name="extract-invoice-fields", version="1",
    description="Read vendor, invoice number, date, currency and total from an invoice.",
    input=InvoiceText, output=InvoiceFields, model="invoice-extractor@champion",
    policy="invoices/extract", slo=SLO(timeout_s=10, p95_ms=100), review_threshold=0.35,
    fallbacks=("human",), price=Price(per_call=0.004), estimate=Usage(calls=1),
    data_classification="confidential")

EMBED = CapabilitySpec(
    name="embed-vendor-name", version="1",
    description="Embed a vendor name for matching against the vendor master.",
    input=VendorName, output=Embedding, model="vendor-embedder@champion",
    serving="embedder", policy="invoices/match", slo=SLO(timeout_s=5),
    price=Price(per_call=0.0002),
    estimate=Usage(calls=1), cache_ttl_s=3600)


@capability("match-vendor", version="1", policy="invoices/match", indexes=(VENDOR_INDEX,),
            price=Price(per_call=0.001), slo=SLO(timeout_s=5))
async def match_vendor(query: VendorName, ctx: CallContext) -> VendorMatch:
    """Embed the printed vendor name (``embed-vendor-name``) and find the closest vendor of
    this tenant's master data. Confidence is the cosine score, lowered when the runner-up is
    nearly as close (near-duplicate vendor names are where mistakes happen)."""
    vector = (await ctx.invoke("embed-vendor-name", {"text": query.text})).output.vector
    retrieval = ctx.ports.retrieval
    hits = await retrieval.query(VENDOR_INDEX, vector, tenant=ctx.tenant, limit=2)
    ctx.note_index(VENDOR_INDEX, await retrieval.snapshot(VENDOR_INDEX))
    if not hits:
        return VendorMatch(vendor_id=None, name=None, score=0.0, confidence=0.0)
    top = hits[0]
    margin = top.score - hits[1].score if len(hits) > 1 else top.score
    confidence = max(0.0, min(1.0, top.score)) * min(1.0, 0.75 + 5 * margin)
    return VendorMatch(vendor_id=str(top.payload["vendor_id"]), name=str(top.payload["name"]),
                       score=round(top.score, 4),
                       runner_up=str(hits[1].payload["vendor_id"]) if len(hits) > 1 else None,
                       confidence=round(confidence, 4))


@capability("route-invoice", version="1", policy="invoices/route", price=Price(per_call=0.0005),
            slo=SLO(timeout_s=2))
def route_invoice(request: RouteRequest) -> RouteDecision:
    """Approve for payment. The policy decides whether that needs a human first (amount over
    the tenant's threshold, unmatched vendor) or is refused (a currency the tenant does not
    accept); this handler only runs when the policy allows it."""
    return RouteDecision(action="approve", invoice_id=request.invoice_id,
                         amount_usd=request.amount_usd)


class ReviewBriefRequest(BaseModel):
    """What the reviewer will see, as the brief's prompt reads it."""

    vendor: str = Field(max_length=300)
    invoice_number: str = Field(max_length=100)
    total: str = Field(max_length=40)
    currency: str = Field(max_length=10)
    why: str = Field(max_length=300, description="why the invoice needs a human")
    missing: str = Field(max_length=200, description="fields the extractor did not find")


#: The fields a brief may call missing or doubtful.
FieldName = Literal["vendor_name", "invoice_number", "invoice_date", "currency", "total"]


class ReviewBrief(BaseModel):
    """A reviewer's brief: why a human, what is missing, what to ask the vendor."""

    reason: str = Field(max_length=160)
    missing_fields: list[FieldName] = Field(max_length=5)
    question_to_vendor: str = Field(max_length=160)


BRIEF_PROMPT = (
    "An invoice needs a human reviewer. Write a short review brief as JSON.\n"
    "Vendor: {{vendor}}\nInvoice number: {{invoice_number}}\nTotal: {{total}} {{currency}}\n"
    "Why a human: {{why}}\nMissing fields: {{missing}}\n"
    "Give the reason in one sentence, the missing fields, and one question to ask the vendor.")

BRIEF = CapabilitySpec(
    name="draft-review-brief", version="1",
    description="Draft a structured brief for the human reviewing an invoice (advice only).",
    input=ReviewBriefRequest, output=ReviewBrief, model="review-writer@champion",
    serving="llm", policy="invoices/brief", slo=SLO(timeout_s=60),
    generate=Generation(prompt=BRIEF_PROMPT, max_tokens=120),
    price=Price(per_1k_input_tokens=0.0002, per_1k_output_tokens=0.0008))

MATCH: CapabilitySpec = match_vendor
ROUTE: CapabilitySpec = route_invoice
ALL: tuple[CapabilitySpec, ...] = (EXTRACT, EMBED, MATCH, ROUTE, BRIEF)


async def index_vendors(retrieval: object, vendors: dict[str, list[tuple[str, str]]],
                        vectors: dict[str, list[list[float]]]) -> int:
    """Index each tenant's vendor master (``{tenant: [(vendor_id, name)]}``) in its own scope
    of :data:`VENDOR_INDEX`; returns the number of vendors indexed."""
    count = 0
    for tenant, rows in vendors.items():
        points = [Point(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{vid}")), vector=vec,
                        payload={"vendor_id": vid, "name": name})
                  for (vid, name), vec in zip(rows, vectors[tenant], strict=True)]
        await retrieval.upsert(VENDOR_INDEX, points, tenant=tenant)  # type: ignore[attr-defined]
        count += len(points)
    return count
