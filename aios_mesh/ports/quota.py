"""Quota port: reserve an estimate before a call, settle the actual after, refund on failure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Protocol, runtime_checkable

from aios_mesh.errors import ConfigError
from aios_mesh.ports.base import Feature
from aios_mesh.ports.serving import Usage

__all__ = ["LIMIT_FIELDS", "QuotaLimits", "QuotaStore", "Reservation"]


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

    @classmethod
    def from_mapping(cls, value: QuotaLimits | Mapping[str, Any], where: str) -> QuotaLimits:
        """Limits from a mapping of strings or numbers (URL options, config tables); every
        store parses them this way. Empty values mean unlimited; anything else wrong is a
        :class:`ConfigError` naming ``where``."""
        if isinstance(value, QuotaLimits):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"quota limits for {where} must be a mapping, got {value!r}",
                              hint="write e.g. {'calls': 1000, 'cost': 25.0}; fields: "
                                   f"{', '.join(LIMIT_FIELDS)}")
        unknown = sorted(set(value) - set(LIMIT_FIELDS))
        if unknown:
            raise ConfigError(f"unknown quota limit {unknown[0]!r} for {where}",
                              hint=f"quota limit fields are: {', '.join(LIMIT_FIELDS)}")
        parsed: dict[str, Any] = {}
        for name, raw in value.items():
            if raw is None or raw == "":
                continue
            try:
                parsed[name] = int(raw) if name in _INT_FIELDS else float(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"quota limit {name}={raw!r} for {where} is not a number",
                                  hint=f"write {name}=<number>") from exc
        return cls(**parsed)

    def check(self) -> QuotaLimits:
        """Raise :class:`ConfigError` unless every limit is a finite number >= 0, the rate is
        positive and a burst comes with a rate; returns ``self``."""
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float)
                                      or not 0 <= value < math.inf):
                raise ConfigError(f"quota limit {name}={value!r} is not a finite number >= 0",
                                  hint=f"set {name} to a non-negative number, or None for "
                                       "unlimited")
        if self.rate_per_s is not None and self.rate_per_s <= 0:
            raise ConfigError(f"quota limit rate_per_s={self.rate_per_s!r} must be > 0",
                              hint="leave rate_per_s unset for no rate limit")
        if self.burst is not None and self.rate_per_s is None:
            raise ConfigError("quota limit burst is set without rate_per_s",
                              hint="set rate_per_s too (burst is the bucket size of the "
                                   "rate limit)")
        return self


#: The limit names, in declaration order (also the URL option names of quota stores).
LIMIT_FIELDS: Final = tuple(f.name for f in fields(QuotaLimits))
_INT_FIELDS: Final = frozenset({"calls", "tokens", "burst"})


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
