"""The triage steps — the business code. It names capabilities, never models or servers, so it
runs unchanged on every profile. A ticket ends in exactly one route
(:data:`~examples.support_triage.capabilities.ROUTES`):

``auto``    the drafted answer (or the agent's reply) goes to the customer;
``human``   a person sees it first: the category was unsure, the draft weakly grounded, the
            tenant does not auto-send the category, or the agent run escalated (its refund
            request waits for approval, or a budget ended it);
``denied``  the routing policy refused to answer (spam).

Per ticket: ``classify-ticket``; then ``draft-answer`` (retrieval + the LLM writer) for an
answerable category, or the ``exception-agent`` (tools ``lookup-order``, ``open-refund``) for a
ticket about an order; then ``route-ticket``, whose policy decides the route from the
category, the classifier's confidence, the draft's groundedness and the agent's status.
"""

from __future__ import annotations

import re
from typing import Any

from aios_mesh.agents import AgentBudgetExceeded
from aios_mesh.errors import MeshError, PolicyDenied
from aios_mesh.ports.events import Event
from examples.support_triage.capabilities import AGENT, ANSWER, CLASSIFY, ROUTE
from examples.support_triage.corpus import ANSWERABLE, EXCEPTIONS, Ticket

__all__ = ["CALLER", "ORDER_ID", "TOPICS", "agent_status", "agent_task", "gate_score",
           "publish", "resume_approved", "triage"]

CALLER = "support-triage"
#: Where each route's event goes.
TOPICS = {"auto": "support.sent", "human": "support.review", "denied": "support.denied"}

Item = dict[str, Any]


def agent_status(output: Any) -> str:
    """``answered`` or ``awaiting_approval`` (the run parked before a tool that needs a
    human, ``open-refund``)."""
    return str(output.status)


def gate_score(record: Any) -> float | None:
    """The groundedness score the RAG gate handed the policy (``policy.checks[]``)."""
    for check in (record.policy or {}).get("checks") or []:
        found = check.get("groundedness") if isinstance(check, dict) else None
        if isinstance(found, dict) and found.get("score") is not None:
            return float(found["score"])
    return None


def _draft(mesh: Any, ticket: Ticket, item: Item) -> None:
    try:
        result = mesh.invoke(ANSWER.name, {"question": ticket.text}, tenant=ticket.tenant,
                             caller=CALLER)
    except MeshError as exc:  # recorded; the ticket goes to a human without a draft
        item.update(draft_error=exc.code, groundedness=0.0)
        if exc.record_id:
            item["records"].append(exc.record_id)
        return
    item["records"].append(result.record.record_id)
    if result.output is None:  # the answer's policy parked it: weakly grounded
        item.update(groundedness=gate_score(result.record) or 0.0,
                    draft_review=result.review_id)
        return
    answer = result.output
    item.update(answer=answer.answer, citations=list(answer.citations),
                retrieved=list(answer.retrieved), groundedness=float(answer.groundedness))


#: An order id as the shops print them (``AC-10037``).
ORDER_ID = re.compile(r"\b[A-Z]{2}-\d{5}\b")


def agent_task(text: str) -> str:
    """The agent's task: the ticket, and the order id it names on a line of its own (found by
    a pattern, not the LLM: a small model copies an id from a labelled line reliably)."""
    found = ORDER_ID.search(text)
    return f"Ticket: {text}\nOrder id: {found.group(0)}" if found else f"Ticket: {text}"


def _agent(mesh: Any, ticket: Ticket, item: Item) -> None:
    try:
        result = mesh.invoke(AGENT.name, {"task": agent_task(ticket.text)},
                             tenant=ticket.tenant, caller=CALLER)
    except AgentBudgetExceeded as exc:  # a small model that never says "final"
        item.update(agent_status="escalated", agent_stop=exc.budget, agent_run=exc.record_id)
    except MeshError as exc:
        item.update(agent_status="escalated", agent_stop=exc.code, agent_run=exc.record_id)
    else:
        output = result.output
        item.update(agent_status=agent_status(output), agent_run=result.record.record_id,
                    answer=output.answer,
                    tools=[{"tool": c.tool, "outcome": c.outcome, "record_id": c.record_id}
                           for c in output.tool_calls])
        if output.review_id is not None:
            item["approval"] = output.review_id
    if item.get("agent_run"):
        item["records"].append(item["agent_run"])


def triage(mesh: Any, ticket: Ticket) -> Item:
    """Classify, answer (draft or agent), route one ticket; the item says what happened."""
    item: Item = {"ticket": ticket.id, "tenant": ticket.tenant, "records": []}
    step = mesh.invoke(CLASSIFY.name, {"text": ticket.text}, tenant=ticket.tenant,
                       caller=CALLER)
    item["records"].append(step.record.record_id)
    category, confidence = step.output.category, float(step.output.confidence)
    item.update(category=category, confidence=round(confidence, 4), groundedness=0.0,
                agent_status="none")
    if category in ANSWERABLE:
        item["handled_by"] = "draft"
        _draft(mesh, ticket, item)
        if item.get("draft_review"):  # a human sees the draft already: that is its route
            item.update(route="human", reason="not_grounded",
                        review={"id": item["draft_review"], "status": "pending"})
            return item
    elif category in EXCEPTIONS:
        item["handled_by"] = "agent"
        _agent(mesh, ticket, item)
    else:
        item["handled_by"] = "none"
    attributes = {"category": category, "confidence": confidence,
                  "handled_by": item["handled_by"],
                  "groundedness": float(item["groundedness"]),
                  "agent_status": item["agent_status"]}
    try:
        routed = mesh.invoke(ROUTE.name, {"ticket_id": ticket.id, "category": category,
                                          "handled_by": item["handled_by"]},
                             tenant=ticket.tenant, caller=CALLER, attributes=attributes)
    except PolicyDenied as exc:
        item.update(route="denied", reason=exc.reason_code or exc.code)
        if exc.record_id:
            item["records"].append(exc.record_id)
        return item
    item["records"].append(routed.record.record_id)
    if routed.review_id is not None:
        item.update(route="human", review={"id": routed.review_id, "status": "pending"})
    else:
        item["route"] = "auto"
    return item


def resume_approved(mesh: Any, items: list[Item]) -> int:
    """Continue every agent run whose parked tool call a reviewer decided: ``{"resume":
    review_id}`` (the approved tool runs as a child call of the same run; a rejected one is
    shown to the planner as refused). Returns the number of runs resumed."""
    queue = mesh.review_queue()
    resumed = 0
    for item in items:
        review_id = item.get("approval")
        if not review_id or queue.get(review_id).status == "pending":
            continue
        try:
            result = mesh.invoke(AGENT.name, {"resume": review_id}, tenant=item["tenant"],
                                 caller=CALLER)
        except AgentBudgetExceeded as exc:
            item["resumed"] = {"status": "escalated", "stop": exc.budget,
                               "record_id": exc.record_id}
        except MeshError as exc:
            item["resumed"] = {"status": "escalated", "stop": exc.code,
                               "record_id": exc.record_id}
        else:
            item["resumed"] = {"status": str(result.output.status),
                               "record_id": result.record.record_id,
                               "tools": [c.tool for c in result.output.tool_calls]}
        resumed += 1
    return resumed


def publish(mesh: Any, items: list[Item]) -> None:
    """One event per ticket on its route's topic, through the durable outbox (keyed by ticket,
    with an idempotency key)."""
    events = []
    for item in items:
        data = {k: item.get(k) for k in ("ticket", "route", "category", "handled_by",
                                          "groundedness", "citations", "agent_status",
                                          "records")}
        events.append((TOPICS[item["route"]], Event(
            type=f"com.aios-mesh.support.{item['route']}", source=CALLER,
            tenant=item["tenant"], subject=item["ticket"], key=item["ticket"], data=data,
            idempotency_key=f"{item['ticket']}:{item['route']}")))
    mesh.publish_many(events)
