"""Promotion gates: a candidate model becomes the champion only with evidence.

A capability declares the gates its promotions must pass (config or code)::

    [capabilities.gates]            # under the capability's [[capabilities]] table
    min_quality = 0.9               # candidate's score on the labelled evaluation set
    max_quality_drop = 0.0          # ... and no worse than the champion's on the same set
    min_agreement = 0.95            # agreement with the champion on shadow traffic
    max_latency_ratio = 1.2         # candidate p95 / champion p95 (evaluation run)
    max_cost_ratio = 1.0            # candidate mean cost / champion mean cost
    max_error_rate = 0.02           # live canary calls ending in error (automatic rollback)
    min_samples = 50                # evidence below this fails the gate that needs it

``aios-mesh promote`` then evaluates both versions on the labelled set (the reviewers'
verdicts by default), reads the shadow comparisons, and moves the alias only when every
declared gate passes; the :class:`GateReport` goes to the audit log and onto the candidate's
model version in the registry either way. An unknown gate name is refused where it is
declared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aios_mesh.errors import MeshError

__all__ = [
    "GateFailed",
    "GateReport",
    "GateResult",
    "PromotionGates",
    "VersionEvidence",
    "judge",
]


class PromotionGates(BaseModel):
    """What a candidate must show before it may replace the champion (unset = not checked)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_quality: float | None = Field(None, ge=0, le=1)
    max_quality_drop: float | None = Field(None, ge=0, le=1)
    min_agreement: float | None = Field(None, ge=0, le=1)
    max_latency_ratio: float | None = Field(None, gt=0)
    max_cost_ratio: float | None = Field(None, gt=0)
    #: live traffic only: the canary's share of calls ending in ``error`` (automatic rollback)
    max_error_rate: float | None = Field(None, ge=0, le=1)
    min_samples: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _some(self) -> PromotionGates:
        if all(v is None for v in (self.min_quality, self.max_quality_drop, self.min_agreement,
                                   self.max_latency_ratio, self.max_cost_ratio,
                                   self.max_error_rate)):
            raise ValueError("gates declare at least one of min_quality, max_quality_drop, "
                             "min_agreement, max_latency_ratio, max_cost_ratio, "
                             "max_error_rate")
        return self


class GateFailed(MeshError):
    """A promotion was refused: at least one declared gate did not pass (the report says
    which, with the numbers)."""

    code = "gate_failed"


@dataclass(frozen=True, slots=True)
class VersionEvidence:
    """One model version on the evaluation set."""

    version: str
    samples: int
    quality: float | None
    p95_ms: float | None
    mean_cost: float | None
    errors: int = 0


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate: its threshold, what was observed, and whether it passed (and why not)."""

    gate: str
    threshold: float
    observed: float | None
    passed: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class GateReport:
    """Everything a promotion decision rests on (stored in the audit log and on the
    candidate's model version)."""

    capability: str
    model: str
    champion: VersionEvidence
    candidate: VersionEvidence
    shadow_calls: int
    shadow_agreement: float | None
    results: tuple[GateResult, ...]
    evaluation_set: str
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    def document(self) -> dict[str, Any]:
        """The audit-log entry (``kind: "promotion_gate"``) and the registry document."""
        doc = asdict(self)
        doc["results"] = [asdict(r) for r in self.results]
        return {"kind": "promotion_gate", "passed": self.passed, **doc}


def _ratio(candidate: float | None, champion: float | None) -> float | None:
    if candidate is None or champion is None:
        return None
    if champion == 0:
        return 1.0 if candidate == 0 else math.inf
    return candidate / champion


def judge(gates: PromotionGates, champion: VersionEvidence, candidate: VersionEvidence, *,
          shadow_calls: int, shadow_agreement: float | None) -> tuple[GateResult, ...]:
    """Each declared gate against the evidence. A gate whose evidence is thinner than
    ``min_samples`` fails with that reason: no evidence is not a pass."""
    need = gates.min_samples
    results: list[GateResult] = []
    evaluated = min(champion.samples, candidate.samples)

    def thin(name: str, threshold: float, have: int, where: str) -> GateResult:
        return GateResult(name, threshold, None, False,
                          f"{have} {where} < min_samples {need}")

    if gates.min_quality is not None:
        if candidate.samples < need or candidate.quality is None:
            results.append(thin("min_quality", gates.min_quality, candidate.samples,
                                "labelled examples"))
        else:
            ok = candidate.quality >= gates.min_quality
            results.append(GateResult("min_quality", gates.min_quality, candidate.quality, ok,
                                      "" if ok else "the candidate scores below the minimum"))
    if gates.max_quality_drop is not None:
        if evaluated < need or candidate.quality is None or champion.quality is None:
            results.append(thin("max_quality_drop", gates.max_quality_drop, evaluated,
                                "labelled examples"))
        else:
            drop = round(champion.quality - candidate.quality, 6)
            ok = drop <= gates.max_quality_drop
            results.append(GateResult("max_quality_drop", gates.max_quality_drop, drop, ok,
                                      "" if ok else "the candidate is worse than the champion"))
    if gates.min_agreement is not None:
        if shadow_calls < need or shadow_agreement is None:
            results.append(thin("min_agreement", gates.min_agreement, shadow_calls,
                                "shadow comparisons"))
        else:
            ok = shadow_agreement >= gates.min_agreement
            results.append(GateResult("min_agreement", gates.min_agreement, shadow_agreement,
                                      ok, "" if ok else "it disagrees with the champion on "
                                                        "live traffic too often"))
    for name, limit, observed in (
            ("max_latency_ratio", gates.max_latency_ratio,
             _ratio(candidate.p95_ms, champion.p95_ms)),
            ("max_cost_ratio", gates.max_cost_ratio,
             _ratio(candidate.mean_cost, champion.mean_cost))):
        if limit is None:
            continue
        if evaluated < need or observed is None:
            results.append(thin(name, limit, evaluated, "evaluated calls"))
        else:
            ok = observed <= limit
            results.append(GateResult(name, limit, round(observed, 4), ok,
                                      "" if ok else "over the allowed ratio to the champion"))
    return tuple(results)
