"""Quota port: reserve an estimate before a call, settle the actual after, refund on failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from aios_mesh.ports.base import Feature
from aios_mesh.ports.serving import Usage

__all__ = ["QuotaLimits", "QuotaStore", "Reservation"]


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """Budgets for one tenant (optionally one capability of it). ``None`` = unlimited.
    ``rate_per_s``/``burst`` add a token-bucket limit on calls."""

    calls: int | None = None
    tokens: int | None = None
    cost: float | None = None
    gpu_seconds: float | None = None
    rate_per_s: float | None = None
    burst: int | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    tenant: str
    capability: str
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0


@runtime_checkable
class QuotaStore(Protocol):
    features: frozenset[Feature]

    def set_limits(self, tenant: str, limits: QuotaLimits, *,
                   capability: str | None = None) -> None: ...

    async def reserve(self, tenant: str, capability: str, usage: Usage,
                      cost: float) -> Reservation:
        """Atomically admit the estimate or raise ``QuotaExceeded``."""
        ...

    async def settle(self, reservation: Reservation, usage: Usage, cost: float) -> None:
        """Replace the reserved estimate by the actual usage."""
        ...

    async def refund(self, reservation: Reservation) -> None: ...

    async def used(self, tenant: str, capability: str | None = None) -> tuple[Usage, float]:
        """What is drawn now (settled plus outstanding reservations): ``(usage, cost)``."""
        ...

    async def aclose(self) -> None: ...
