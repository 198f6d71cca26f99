"""The declared default list of steps, in order. A mesh builds its pipeline from this list
(or from the one you pass as ``Mesh(steps=...)``); change it later with
:meth:`Pipeline.add <aios_mesh.pipeline.runner.Pipeline.add>` and ``remove``.

    validate_input → policy → redact → resolve_model → prompt → quota → cache → admission
    → guard_output_hold → invoke → guard_output → groundedness_gate → confidence_gate

The admission stage always holds the pause controller first
(:class:`~aios_mesh.lifecycle.pause.PauseControl`: ``aios-mesh pause``), then the
controllers given to the mesh, then the fair scheduler when ``[scheduler]`` enables it.

(``prompt`` renders and counts a generation's prompt, so the quota step can reserve its
tokens; it is in the plan of generation capabilities only. ``guard_output`` applies the
policy's output obligations to the answer; ``guard_output_hold`` holds a stream's chunks
until it has: both only for capabilities a policy covers. ``groundedness_gate`` asks a RAG
capability's policy again with the answer's groundedness: only RAG capabilities,
:mod:`aios_mesh.rag`.)

Steps get the ports and parts they use, never the mesh.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aios_mesh.config import MeshConfig
from aios_mesh.lifecycle.pause import PauseControl, PauseStore
from aios_mesh.lifecycle.slo import SLORouter
from aios_mesh.pipeline.admission import Admission, AdmissionStep
from aios_mesh.pipeline.cache import CacheStep, ResponseCache
from aios_mesh.pipeline.confidence import ConfidenceGate
from aios_mesh.pipeline.fair import FairScheduler
from aios_mesh.pipeline.guard import OutputGuard
from aios_mesh.pipeline.invoke import BreakerBoard, InvokeStep, Targets
from aios_mesh.pipeline.policy import DecisionCache, PolicyStep
from aios_mesh.pipeline.prompt import PromptStep
from aios_mesh.pipeline.quota import QuotaStep
from aios_mesh.pipeline.redact import RedactStep
from aios_mesh.pipeline.resolve import ResolveModel
from aios_mesh.pipeline.runner import Step
from aios_mesh.pipeline.validate import ValidateInput
from aios_mesh.ports.container import Ports
from aios_mesh.ports.events import Event
from aios_mesh.rag.gate import GroundednessGate
from aios_mesh.redaction import Redactor
from aios_mesh.resilience import RetryBudget
from aios_mesh.resolver import AliasResolver
from aios_mesh.review import ReviewQueue
from aios_mesh.state import SharedState, open_state

__all__ = ["DEFAULT_STEP_NAMES", "StepParts", "default_steps"]

DEFAULT_STEP_NAMES = ("validate_input", "policy", "redact", "resolve_model", "prompt", "quota",
                      "cache", "admission", "guard_output_hold", "invoke", "guard_output",
                      "groundedness_gate", "confidence_gate")


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
    breakers: BreakerBoard
    budget: RetryBudget
    response_cache: ResponseCache = field(default_factory=ResponseCache)
    admission: Sequence[Admission] = ()
    #: the mesh's shared state (stores such as the pause table; None: opened from config)
    state: SharedState | None = None
    #: queues an application event durably (the mesh's outbox): SLO alerts go out through it
    publish: Callable[[str, Event], Awaitable[None]] | None = None
    #: a model version's reviewed accuracy, for ``SLO.min_quality`` (the mesh's LiveQuality)
    quality: Callable[[str, str], tuple[float, int] | None] | None = None


def default_steps(parts: StepParts) -> list[Step]:
    """The default pipeline, built from ``parts``."""
    ports = parts.ports
    everywhere = parts.config.policy.default is not None  # obligations on every capability
    # the output guard finds PII with the redactor's own detectors
    guard = OutputGuard(parts.review, default_policy=everywhere,
                        rules=getattr(parts.redactor, "rules", None))
    return [
        ValidateInput(parts.config.max_payload_bytes),
        PolicyStep(lambda: ports.policy, parts.decision_cache, parts.config.policy,
                   parts.redactor),
        RedactStep(parts.redactor, default_policy=everywhere),
        ResolveModel(parts.resolver),
        PromptStep(parts.resolver.resolve_prompt, ports.serving_for),
        QuotaStep(lambda: ports.quota),
        CacheStep(parts.response_cache),
        AdmissionStep(_admission(parts)),
        guard.hold,
        InvokeStep(target=parts.targets, resolver=parts.resolver, breakers=parts.breakers,
                   budget=parts.budget, retry=parts.config.retry, review=parts.review),
        guard,
        GroundednessGate(lambda: ports.policy, parts.review),
        ConfidenceGate(parts.review, default_policy=everywhere),
    ]


def _admission(parts: StepParts) -> list[Admission]:
    """The pause controller, the controllers given to the mesh, the SLO router (for
    capabilities with ``candidates``; a given :class:`SLORouter` replaces it), then the fair
    scheduler
    when ``[scheduler]`` enables it (it queues last: a call a bulkhead refuses never waits
    for a slot). A :class:`PauseControl` among the given ones (another ``refresh_s``) takes
    the default one's place; one without a store gets the mesh's."""
    controllers = list(parts.admission)
    pause = next((c for c in controllers if isinstance(c, PauseControl)), None)
    if pause is None:
        pause = PauseControl()
        controllers.insert(0, pause)

    def store() -> PauseStore:
        state = parts.state if parts.state is not None else open_state(
            parts.config.backends.state, folder=parts.config.state_path)
        return PauseStore(state)

    pause.bind(store)
    if not any(isinstance(c, SLORouter) for c in controllers):
        ports = parts.ports
        controllers.append(SLORouter(lambda: ports.audit, parts.publish,
                                     quality=parts.quality))
    if parts.config.scheduler.enabled:
        controllers.append(FairScheduler.from_config(parts.config))
    return controllers
