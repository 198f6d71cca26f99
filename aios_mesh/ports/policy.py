"""Policy port: decide whether a call may run, and with which obligations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aios_mesh.ports.base import Feature

__all__ = ["POLICY_INPUT_VERSION", "Decision", "Obligations", "Policy", "PolicyInput"]

#: Version of the policy input document; bump on any incompatible change.
POLICY_INPUT_VERSION = "1"


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """The documented, versioned input every policy sees (``input`` in Rego)."""

    tenant: str
    caller: str
    capability: str
    capability_version: str
    data_classification: str = "internal"
    model: str | None = None
    cost_estimate: float = 0.0
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_document(self) -> dict[str, Any]:
        return {
            "version": POLICY_INPUT_VERSION,
            "tenant": self.tenant,
            "caller": self.caller,
            "capability": {"name": self.capability, "version": self.capability_version},
            "data_classification": self.data_classification,
            "model": self.model,
            "cost_estimate": self.cost_estimate,
            "attributes": self.attributes,
        }


@dataclass(frozen=True, slots=True)
class Obligations:
    """What an allow may require of the pipeline."""

    redact: tuple[str, ...] = ()
    require_human: bool = False
    max_cost: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: str | None = None
    obligations: Obligations = field(default_factory=Obligations)
    policy: str = ""
    bundle_hash: str = ""


@runtime_checkable
class Policy(Protocol):
    """Evaluates a policy package (e.g. ``mesh/invoices``) against a :class:`PolicyInput`."""

    features: frozenset[Feature]

    @property
    def bundle_hash(self) -> str:
        """Content hash of the loaded policies; part of the decision-cache key."""
        ...

    async def decide(self, path: str, input: PolicyInput) -> Decision: ...

    async def aclose(self) -> None: ...
