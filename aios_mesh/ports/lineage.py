"""Lineage port: emit OpenLineage run events (documents following the OpenLineage spec)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from aios_mesh.ports.base import Feature

__all__ = ["Lineage"]


@runtime_checkable
class Lineage(Protocol):
    features: frozenset[Feature]

    async def emit(self, event: Mapping[str, Any]) -> None:
        """Send one OpenLineage RunEvent document; raises ``BackendUnavailable`` on failure
        (the mesh treats lineage as fail-soft and retries it from the outbox)."""
        ...

    async def aclose(self) -> None: ...
