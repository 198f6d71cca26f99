"""The intake steps — the business code. It names capabilities, never models or servers, so it
runs unchanged on the embedded defaults, on real servers and through the gateway (where each
call goes is configuration: :mod:`examples.invoice_intake.calls`).

Each step takes and returns a list of JSON-safe dicts (one per invoice), so the same functions
are Flyte tasks (workflow.py) and plain Python calls. An invoice ends in exactly one route:

``auto``       extracted, vendor matched, and the routing policy approved it;
``human``      a person decides: the extraction was unsure, or the policy asked for a human
               (amount over the tenant's threshold, vendor not confidently matched);
``denied``     a policy refused it (a tenant not granted, a currency the tenant does not take);
``exception``  the invoice itself is unusable (no total, no invoice number, ...).
"""

from __future__ import annotations

from typing import Any

from aios_mesh_flyte import current_mesh

from aios_mesh.ports.events import Event
from examples.invoice_intake.calls import invoke
from examples.invoice_intake.capabilities import ROUTES, to_usd

__all__ = ["CALLER", "REQUIRED", "ROUTES", "TOPICS", "await_reviews", "extract", "match",
           "publish", "route", "validate"]

CALLER = "invoice-intake"
#: Where each route's event goes.
TOPICS = {"auto": "invoices.approved", "human": "invoices.review",
          "denied": "invoices.denied", "exception": "invoices.exceptions"}
#: Fields an invoice cannot be paid without.
REQUIRED = ("invoice_number", "currency", "total", "vendor_name")

Item = dict[str, Any]


def _close(item: Item, route: str, stage: str, reason: str | None,
           review_id: str | None = None) -> Item:
    item.update(route=route, stage=stage, reason=reason)
    if review_id is not None:
        item["review"] = {"id": review_id, "status": "pending", "reviewer": None}
    return item


def _failed(step: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    """(route, reason, review id) for a call that did not answer ``ok``; None when it did."""
    outcome = step["outcome"]
    if outcome == "ok":
        return None
    error = step.get("error") or {}
    if outcome == "review":
        return "human", f"review {step['review_id']}", step["review_id"]
    if outcome == "denied":
        return "denied", error.get("reason") or error.get("message"), None
    return "exception", f"{outcome}: {error.get('message')}", None


def extract(invoices: list[Item]) -> list[Item]:
    """``extract-invoice-fields`` for each invoice (``{"id", "tenant", "text"}``)."""
    items = []
    for invoice in invoices:
        step = invoke("extract-invoice-fields", {"text": invoice["text"]},
                      tenant=invoice["tenant"], caller=CALLER)
        item: Item = {"invoice": invoice["id"], "tenant": invoice["tenant"],
                      "records": [step["record_id"]], "fields": step["output"]}
        failed = _failed(step)
        if failed:
            _close(item, failed[0], "extract", failed[1], failed[2])
        items.append(item)
    return items


def validate(fields: dict[str, Any]) -> str | None:
    """Why these fields cannot be paid as they are; None when they can."""
    missing = [name for name in REQUIRED if fields.get(name) in (None, "")]
    if missing:
        return "missing " + ", ".join(missing)
    if float(fields["total"]) <= 0:
        return f"total {fields['total']} is not positive"
    return None


def match(items: list[Item]) -> list[Item]:
    """Validate the extracted fields, then ``match-vendor`` against the tenant's master."""
    for item in items:
        if "route" in item:
            continue
        problem = validate(item["fields"])
        if problem is not None:
            _close(item, "exception", "validate", problem)
            continue
        step = invoke("match-vendor", {"text": item["fields"]["vendor_name"]},
                      tenant=item["tenant"], caller=CALLER)
        item["records"].append(step["record_id"])
        item["vendor"] = step["output"]
        failed = _failed(step)
        if failed:
            _close(item, failed[0], "match", failed[1], failed[2])
    return items


def route(items: list[Item]) -> list[Item]:
    """``route-invoice``: the policy approves, asks for a human, or refuses."""
    for item in items:
        if "route" in item:
            continue
        fields, vendor = item["fields"], item["vendor"]
        amount_usd = to_usd(float(fields["total"]), str(fields["currency"]))
        request = {"invoice_id": item["invoice"], "vendor_id": vendor["vendor_id"],
                   "invoice_number": fields["invoice_number"], "currency": fields["currency"],
                   "total": fields["total"], "amount_usd": amount_usd}
        step = invoke("route-invoice", request, tenant=item["tenant"], caller=CALLER,
                      attributes={"amount_usd": amount_usd, "currency": fields["currency"],
                                  "vendor_confidence": vendor["confidence"]})
        item["records"].append(step["record_id"])
        item["amount_usd"] = amount_usd
        route_to, reason, review_id = _failed(step) or ("auto", None, None)
        _close(item, route_to, "route", reason, review_id)
    return items


def await_reviews(items: list[Item], wait_s: float) -> list[Item]:
    """Wait up to ``wait_s`` seconds for the humans: each invoice routed to review gets the
    reviewer's decision (``aios-mesh review approve|reject`` from anywhere that shares the
    state) in ``item["review"]``. ``wait_s`` 0 leaves them pending, for a later run."""
    waiting = [item for item in items if (item.get("review") or {}).get("status") == "pending"]
    if not waiting or wait_s <= 0:
        return items
    decided = current_mesh().review_queue().wait([item["review"]["id"] for item in waiting],
                                                 timeout=wait_s)
    for item, review in zip(waiting, decided, strict=True):
        item["review"] = {"id": review.id, "status": review.status,
                          "reviewer": review.decided_by}
    return items


def publish(items: list[Item]) -> list[Item]:
    """One event per invoice on its route's topic, through the durable outbox (keyed by
    invoice, with an idempotency key, so a redelivery is dropped by consumers)."""
    events = []
    for item in items:
        data = {"invoice": item["invoice"], "route": item["route"], "stage": item["stage"],
                "reason": item["reason"], "fields": item.get("fields"),
                "vendor_id": (item.get("vendor") or {}).get("vendor_id"),
                "amount_usd": item.get("amount_usd"), "records": item["records"],
                "review": item.get("review")}
        events.append((TOPICS[item["route"]], Event(
            type=f"com.aios-mesh.invoice.{item['route']}", source=CALLER,
            tenant=item["tenant"], subject=item["invoice"], key=item["invoice"], data=data,
            idempotency_key=f"{item['invoice']}:{item['route']}")))
    current_mesh().publish_many(events)
    for item in items:
        item["published"] = True
    return items
