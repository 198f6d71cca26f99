"""Audit port: an append-only, tamper-evident log of decision records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from aios_mesh.ports.base import Feature

__all__ = ["AuditEntry", "AuditLog", "VerifyProblem", "VerifyReport"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    hash: str
    prev_hash: str
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    seq: int
    kind: Literal["changed", "deleted", "inserted", "reordered", "malformed", "truncated"]
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    records: int
    problems: tuple[VerifyProblem, ...] = field(default_factory=tuple)


@runtime_checkable
class AuditLog(Protocol):
    features: frozenset[Feature]

    async def append(self, record: Mapping[str, Any]) -> AuditEntry:
        """Chain and persist the record before returning; raises ``IntegrityError`` when it
        cannot (the call then fails rather than losing its record)."""
        ...

    async def verify(self) -> VerifyReport: ...

    async def read(self, since: int = 0, limit: int | None = None) -> list[AuditEntry]: ...

    async def aclose(self) -> None: ...
