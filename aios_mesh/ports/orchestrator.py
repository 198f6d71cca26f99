"""Orchestrator port: run or submit a workflow and follow its status."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aios_mesh.ports.base import Feature

__all__ = ["Execution", "ExecutionStatus", "Orchestrator"]


class ExecutionStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Execution:
    id: str
    workflow: str
    status: ExecutionStatus
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@runtime_checkable
class Orchestrator(Protocol):
    features: frozenset[Feature]

    async def run(self, workflow: str, inputs: dict[str, Any]) -> Execution:
        """Run ``module:workflow`` to completion."""
        ...

    async def submit(self, workflow: str, inputs: dict[str, Any]) -> str:
        """Start it and return an execution id at once."""
        ...

    async def status(self, execution_id: str) -> Execution: ...

    async def aclose(self) -> None: ...
