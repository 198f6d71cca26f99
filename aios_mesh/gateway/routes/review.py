"""``/v1/review``: the human-review queue over HTTP — list, read one, approve, reject, correct.

Every route needs the ``reviewer`` role (``admin`` holds it). A reviewer sees and decides only
their own tenant's items; an item of another tenant is answered exactly like one that does
not exist (404), so nothing leaks. An admin sees every tenant (``?tenant=`` narrows it).

A decision goes through :meth:`aios_mesh.Mesh.aresolve_review`: it is kept in the queue and
the audit log, kept as a label (approved, corrected or rejected) for quality tracking, and
the workflow waiting on the item resumes (the answer is published to the event route's
result topic). Of two reviewers deciding the same item at once, one wins; the other gets 422.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from aios_mesh.errors import InvalidInput, NotFound
from aios_mesh.gateway.app import Gateway
from aios_mesh.gateway.identity import ADMIN, REVIEWER, Principal
from aios_mesh.redaction import RuleRedactor
from aios_mesh.review import ReviewItem, ReviewStatus

__all__ = ["Decision", "decide", "item_json", "reason_kind", "routes", "visible_item",
           "visible_items"]

#: What a reviewer may do with an item.
Decision = Literal["approve", "reject", "correct"]

_STATUSES: frozenset[str] = frozenset({"pending", "approved", "rejected", "all"})
_DISPLAY = RuleRedactor()  # what a reviewer sees of the input has every PII kind masked


def reason_kind(reason: str) -> str:
    """Why an item came to a human, as one word: ``policy`` (an obligation), ``confidence``
    (below the capability's threshold) or ``fallback`` (the chain ended in human review)."""
    if reason.startswith("policy"):
        return "policy"
    if reason.startswith("confidence"):
        return "confidence"
    return "fallback" if "fallback" in reason else "other"


def item_json(item: ReviewItem) -> dict[str, Any]:
    """The item as the API shows it: the input redacted, never the resume target."""
    return {"id": item.id, "record_id": item.record_id, "tenant": item.tenant,
            "capability": item.capability, "status": item.status,
            "reason": item.reason, "reason_kind": reason_kind(item.reason),
            "confidence": item.confidence, "created_at": item.created_at,
            "input": _DISPLAY.redact(item.payload, tenant=item.tenant).payload,
            "proposed": item.proposed, "decided_by": item.decided_by,
            "decided_at": item.decided_at, "final_output": item.final_output,
            "note": item.note}


def _status(value: str | None) -> ReviewStatus | None:
    value = value or "pending"
    if value not in _STATUSES:
        raise InvalidInput(f"unknown review status {value!r}",
                           hint="use pending, approved, rejected or all")
    return None if value == "all" else value  # type: ignore[return-value]


def visible_items(gateway: Gateway, principal: Principal, *, status: str | None = None,
                  capability: str | None = None, tenant: str | None = None,
                  limit: int = 200) -> list[ReviewItem]:
    """The items ``principal`` may see: their tenant's (an admin: every tenant's, or
    ``tenant``'s), newest last."""
    principal.require_role(REVIEWER)
    if ADMIN not in principal.roles:
        tenant = principal.tenant  # a reviewer's own tenant, whatever was asked
    return gateway.mesh.review_queue().list(_status(status), tenant or None,
                                            capability or None, limit=limit)


def visible_item(gateway: Gateway, principal: Principal, item_id: str) -> ReviewItem:
    """One item, if ``principal`` may see it; otherwise ``NotFound`` as for a missing one."""
    principal.require_role(REVIEWER)
    try:
        item = gateway.mesh.review_queue().get(item_id)
    except NotFound:
        item = None
    if item is None or (item.tenant != principal.tenant and ADMIN not in principal.roles):
        raise NotFound(f"no review item {item_id!r}",
                       hint="GET /v1/review lists the items your credential may decide")
    return item


async def decide(gateway: Gateway, principal: Principal, item_id: str, decision: Decision,
                 *, output: Mapping[str, Any] | None = None, note: str = "") -> ReviewItem:
    """Approve, reject or correct one item as ``principal`` (the reviewer is its caller)."""
    visible_item(gateway, principal, item_id)
    if decision == "correct":
        if not isinstance(output, Mapping):
            raise InvalidInput("a correction needs the corrected output as a JSON object",
                               hint='send {"output": {...}} matching the capability\'s '
                                    "output schema")
    else:
        output = None
    if len(note) > 2000:
        raise InvalidInput("the note is over 2,000 characters", hint="shorten the note")
    return await gateway.mesh.aresolve_review(item_id, approve=decision != "reject",
                                              reviewer=principal.caller, output=output,
                                              note=note)


def _limit(value: str | None) -> int:
    if value is None:
        return 200
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise InvalidInput(f"limit={value!r} is not a number from 1 to 1000",
                           hint="use e.g. ?limit=100")
    return int(value)


def routes(gateway: Gateway) -> Sequence[BaseRoute]:
    """The review routes."""

    async def listing(request: Request) -> Response:
        principal = await gateway.principal(request)
        q = request.query_params
        items = visible_items(gateway, principal, status=q.get("status"),
                              capability=q.get("capability"), tenant=q.get("tenant"),
                              limit=_limit(q.get("limit")))
        return JSONResponse({"items": [item_json(i) for i in items]})

    async def one(request: Request) -> Response:
        principal = await gateway.principal(request)
        return JSONResponse(item_json(visible_item(gateway, principal,
                                                   request.path_params["item_id"])))

    def deciding(decision: Decision) -> Any:
        async def handler(request: Request) -> Response:
            principal = await gateway.principal(request)
            item_id = request.path_params["item_id"]
            visible_item(gateway, principal, item_id)  # 404 before the body is read
            body: Any = {}
            if decision == "correct" or int(request.headers.get("content-length") or 0):
                body = await gateway.json_body(request)
            if not isinstance(body, dict):
                raise InvalidInput("the body must be a JSON object",
                                   hint='send {"note": "..."} (and "output" to correct)')
            note = body.get("note", "")
            if not isinstance(note, str):
                raise InvalidInput("note must be a string", hint='send {"note": "why"}')
            item = await decide(gateway, principal, item_id, decision,
                                output=body.get("output"), note=note)
            return JSONResponse(item_json(item))
        return handler

    return [Route("/v1/review", listing, methods=["GET"]),
            Route("/v1/review/{item_id}", one, methods=["GET"]),
            *(Route(f"/v1/review/{{item_id}}/{d}", deciding(d), methods=["POST"])
              for d in ("approve", "reject", "correct"))]
