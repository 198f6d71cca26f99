"""Event routes: which topic's events become calls of which capability."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aios_mesh.ports.events import Event

__all__ = ["Route"]


@dataclass(frozen=True, slots=True)
class Route:
    """Events on ``topic`` become calls of ``capability``; answers go to ``result_topic``."""

    topic: str
    capability: str
    result_topic: str | None = None
    group: str | None = None
    payload: Callable[[Event], Any] = field(default=lambda event: event.data)

    @property
    def consumer_group(self) -> str:
        return self.group or f"aios-mesh.{self.capability}"
