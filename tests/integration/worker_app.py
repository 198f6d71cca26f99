"""Capabilities for the worker tests (importable by a worker subprocess)."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from aios_mesh.capabilities import capability
from aios_mesh.errors import BackendUnavailable


class Ticket(BaseModel):
    text: str


class Route(BaseModel):
    label: str
    confidence: float


@capability("route-ticket", review_threshold=0.5)
async def route_ticket(payload: Ticket) -> Route:
    await asyncio.sleep(0.05)  # a little work, so SIGTERM finds calls in flight
    if "unsure" in payload.text:
        return Route(label="general", confidence=0.2)
    return Route(label="billing" if "invoice" in payload.text else "general", confidence=0.9)


@capability("always-down")
def always_down(payload: Ticket) -> Route:
    raise BackendUnavailable("model server down")
