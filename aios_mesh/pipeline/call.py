"""The mutable state of one call as it moves through the pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from aios_mesh.capabilities import CapabilitySpec, Price
from aios_mesh.errors import MeshError
from aios_mesh.ports.policy import Decision, PolicyCheck
from aios_mesh.ports.quota import Reservation
from aios_mesh.ports.registry import ModelRef, PromptRef
from aios_mesh.ports.serving import Prediction, Usage
from aios_mesh.record import CallMode
from aios_mesh.redaction import Redaction

__all__ = ["Call", "Emit", "Release"]

#: Hands one streamed chunk to the consumer; raises CallCancelled once the consumer is gone.
Emit = Callable[[dict[str, Any]], Awaitable[None]]
#: Gives back what an admission controller granted (a slot, a ticket); never raises.
Release = Callable[[], None]

_NOTHING_USED = Usage(calls=0)  # frozen: one instance serves every call


@dataclass(slots=True)
class Call:
    """One call's state, filled in by the steps. ``mode`` says how it is made: ``invoke``
    (one answer), ``stream`` (chunks go to ``emit`` as the backend produces them; the steps
    and the record are the same) or ``bulk`` (one row of :meth:`Mesh.invoke_many`)."""

    spec: CapabilitySpec
    tenant: str
    caller: str
    raw: Any
    record_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    span: Any = None  # the call's OpenTelemetry span (None when tracing is off)
    resume: dict[str, Any] | None = None  # where a reviewer's answer is published
    parent: dict[str, Any] | None = None  # the run that made this call (workflow, capability)
    mode: CallMode = "invoke"
    emit: Emit | None = None  # set in stream mode
    # filled by the steps
    input: BaseModel | None = None
    payload: dict[str, Any] | None = None
    input_sha256: str | None = None
    decision: Decision | None = None
    policy_input: dict[str, Any] | None = None
    policy_cached: bool = False
    policy_checks: tuple[PolicyCheck, ...] = ()  # one per policy asked (default, own)
    reservation: Reservation | None = None
    redaction: Redaction | None = None
    model_ref: ModelRef | None = None
    prompt: PromptRef | None = None  # the registered prompt version a generation rendered
    estimate: Usage | None = None  # what to reserve, when a step knows better than the spec
    prompt_tokens: int = 0  # a generation's prompt, counted (or estimated) before the call
    variables: dict[str, Any] | None = None  # the (redacted) input fields a prompt rendered
    serving: str | None = None
    #: the serving backend the SLO router chose, its price there and the route's record
    #: entry (None: the capability's own backend and price)
    backend: str | None = None
    price: Price | None = None
    route: dict[str, Any] | None = None
    prediction: Prediction | None = None
    output: BaseModel | None = None
    output_sha256: str | None = None
    attempts: int = 0
    fallback: str | None = None
    usage: Usage = _NOTHING_USED
    cost: float = 0.0
    review_id: str | None = None
    review_reason: str | None = None
    index_snapshots: dict[str, str] = field(default_factory=dict)
    index_writes: dict[str, str | None] = field(default_factory=dict)  # collection → snapshot
    # the live alias's version of each model spec the lock file pinned (model_drift)
    live_versions: dict[str, str] = field(default_factory=dict)
    cache: str | None = None  # "hit" / "miss" when the capability caches answers
    variant: str | None = None  # "primary" / "canary" when a canary is configured
    chunks: int = 0  # chunks streamed to the consumer
    admitted: list[Release] = field(default_factory=list)  # held until the call ends
    error: MeshError | None = None
    primary_error: MeshError | None = None  # why the primary did not answer (fallback did)
    # an operator paused the capability (aios_mesh.lifecycle.pause): the invoke step skips
    # the primary and parks the call ("human") or runs the fallback chain ("fallback")
    paused: Literal["human", "fallback"] | None = None
    done: bool = False

    @property
    def trace_headers(self) -> dict[str, str]:
        """W3C trace headers for the call's span, built on first use (most calls never send
        them anywhere: the span is also the active context while the call runs)."""
        from aios_mesh.telemetry import Telemetry

        return Telemetry.inject(self.span)

    @property
    def confidence(self) -> float | None:
        if self.prediction is not None and self.prediction.confidence is not None:
            return self.prediction.confidence
        value = getattr(self.output, "confidence", None)
        return float(value) if isinstance(value, int | float) else None
