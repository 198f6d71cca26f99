"""Retrieval port: tenant-scoped vector upsert, filtered query, delete and snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from aios_mesh.ports.base import Feature

__all__ = ["Condition", "Filter", "Point", "Retrieval", "ScoredPoint"]


@dataclass(frozen=True, slots=True)
class Point:
    """A vector with an id (int or UUID string) and a JSON payload."""

    id: int | str
    vector: Sequence[float]
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoredPoint:
    id: int | str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Condition:
    """One field condition: ``eq`` (match a value), ``any`` (match one of), ``range``."""

    key: str
    op: Literal["eq", "any", "range"] = "eq"
    value: Any = None
    gte: float | None = None
    lte: float | None = None


@dataclass(frozen=True, slots=True)
class Filter:
    """Conjunction of ``must`` conditions minus ``must_not`` ones. Tenant scoping is added
    by the adapter, never taken from here."""

    must: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()


@runtime_checkable
class Retrieval(Protocol):
    """A vector index. Every call names the caller's tenant; adapters enforce the scope."""

    features: frozenset[Feature]

    async def upsert(self, collection: str, points: Sequence[Point], *, tenant: str) -> None: ...

    async def query(self, collection: str, vector: Sequence[float], *, tenant: str,
                    limit: int = 10, filter: Filter | None = None) -> list[ScoredPoint]: ...

    async def delete(self, collection: str, ids: Sequence[int | str], *, tenant: str) -> None: ...

    async def snapshot(self, collection: str) -> str:
        """An id naming the index's current contents (recorded in decision records)."""
        ...

    async def aclose(self) -> None: ...
