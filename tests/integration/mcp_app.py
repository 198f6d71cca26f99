"""Capabilities the MCP tests serve (imported by the `aios-mesh mcp` processes they start)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Ticket(BaseModel):
    text: str = Field(min_length=1, description="the customer's message")


class Route(BaseModel):
    queue: str
    urgent: bool


def route(ticket: Ticket) -> Route:
    """Route a support ticket to a queue."""
    text = ticket.text.lower()
    return Route(queue="billing" if "invoice" in text else "general", urgent="!" in text)


class Amount(BaseModel):
    value: float


class Doubled(BaseModel):
    value: float


def double(amount: Amount) -> Doubled:
    return Doubled(value=amount.value * 2)
