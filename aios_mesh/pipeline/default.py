"""The declared default list of steps, in order. A mesh builds its pipeline from this list
(or from the one you pass as ``Mesh(steps=...)``); change it later with
:meth:`Pipeline.add <aios_mesh.pipeline.runner.Pipeline.add>` and ``remove``.

    validate_input → policy → quota → redact → resolve_model → cache → admission → invoke
    → confidence_gate

Steps get the ports and parts they use, never the mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aios_mesh.config import MeshConfig
from aios_mesh.pipeline.admission import Admission, AdmissionStep
from aios_mesh.pipeline.batching import BatcherPool
from aios_mesh.pipeline.cache import CacheStep, ResponseCache
from aios_mesh.pipeline.confidence import ConfidenceGate
from aios_mesh.pipeline.invoke import BreakerBoard, InvokeStep, Targets
from aios_mesh.pipeline.policy import DecisionCache, PolicyStep
from aios_mesh.pipeline.quota import QuotaStep
from aios_mesh.pipeline.redact import RedactStep
from aios_mesh.pipeline.resolve import ResolveModel
from aios_mesh.pipeline.runner import Step
from aios_mesh.pipeline.validate import ValidateInput
from aios_mesh.ports.container import Ports
from aios_mesh.redaction import Redactor
from aios_mesh.resilience import RetryBudget
from aios_mesh.resolver import AliasResolver
from aios_mesh.review import ReviewQueue

__all__ = ["DEFAULT_STEP_NAMES", "StepParts", "default_steps"]

DEFAULT_STEP_NAMES = ("validate_input", "policy", "quota", "redact", "resolve_model", "cache",
                      "admission", "invoke", "confidence_gate")


@dataclass(slots=True)
class StepParts:
    """What the default steps are built from (shared with the rest of the mesh: the rollout
    commands clear the same response cache, the CLI reads the same breakers)."""

    config: MeshConfig
    ports: Ports
    redactor: Redactor
    resolver: AliasResolver
    targets: Targets
    review: Callable[[], ReviewQueue]
    decision_cache: DecisionCache
    response_cache: ResponseCache = field(default_factory=ResponseCache)
    breakers: BreakerBoard | None = None
    budget: RetryBudget | None = None
    batchers: BatcherPool = field(default_factory=BatcherPool)
    admission: Sequence[Admission] = ()


def default_steps(parts: StepParts) -> list[Step]:
    """The default pipeline, built from ``parts``."""
    config = parts.config
    ports = parts.ports
    retry = config.retry
    breakers = parts.breakers or BreakerBoard(config.breaker)
    budget = parts.budget or RetryBudget(retry.budget_ratio, retry.min_retries_per_s)
    return [
        ValidateInput(config.max_payload_bytes),
        PolicyStep(lambda: ports.policy, parts.decision_cache),
        QuotaStep(lambda: ports.quota),
        RedactStep(parts.redactor),
        ResolveModel(parts.resolver),
        CacheStep(parts.response_cache),
        AdmissionStep(parts.admission),
        InvokeStep(target=parts.targets, resolver=parts.resolver, breakers=breakers,
                   budget=budget, retry=retry, review=parts.review),
        ConfidenceGate(parts.review),
    ]
