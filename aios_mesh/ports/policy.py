"""Policy port: decide whether a call may run, and with which obligations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from aios_mesh.errors import InvalidOutput
from aios_mesh.ports.base import Feature

__all__ = ["POLICY_INPUT_VERSION", "Decision", "Obligations", "Policy", "PolicyInput",
           "decision_from_result"]

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


_OBLIGATION_KEYS: Final = frozenset({"redact", "require_human", "max_cost"})


def decision_from_result(result: Mapping[str, Any], *, package: str, path: str,
                         bundle_hash: str, where: str) -> Decision:
    """The policy contract, the same on every engine: a package's evaluated document
    (``allow``, optional ``reason`` and ``obligations``) → :class:`Decision`.

    ``allow`` undefined is a default deny; a non-boolean ``allow``, a non-string ``reason`` or
    malformed obligations raise :class:`InvalidOutput` naming ``package`` and ``where`` (the
    files or server that hold it).
    """

    def bad(what: str, hint: str) -> InvalidOutput:
        return InvalidOutput(f"policy {package} ({where}): {what}", hint=hint, policy=path)

    allow = result.get("allow")
    reason = result.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise bad(f"reason must be a string, got {type(reason).__name__}",
                  'define it as a string, e.g. reason := "tenant not allowed"')
    obligations = _obligations(result.get("obligations"), bad)
    if "allow" not in result:
        return Decision(False, f"default deny: {package}.allow is undefined", obligations,
                        policy=path, bundle_hash=bundle_hash)
    if not isinstance(allow, bool):
        raise bad(f"allow must be a boolean, got {type(allow).__name__}",
                  "define allow as true/false, e.g. 'default allow := false'")
    if not allow and reason is None:
        reason = f"{package}.allow is false"
    return Decision(allow, reason, obligations, policy=path, bundle_hash=bundle_hash)


def _obligations(raw: Any, bad: Any) -> Obligations:
    if raw is None:
        return Obligations()
    if not isinstance(raw, dict):
        raise bad(f"obligations must be an object, got {type(raw).__name__}",
                  'write obligations := {"redact": [...], "require_human": false}')
    unknown = sorted(set(raw) - _OBLIGATION_KEYS)
    if unknown:
        raise bad(f"unknown obligation(s) {', '.join(unknown)}",
                  f"the mesh enforces only {', '.join(sorted(_OBLIGATION_KEYS))}")
    redact = raw.get("redact", [])
    if not isinstance(redact, list) or not all(isinstance(r, str) for r in redact):
        raise bad("obligations.redact must be a list (or set) of strings",
                  'write "redact": ["email", "iban"]')
    require_human = raw.get("require_human", False)
    if not isinstance(require_human, bool):
        raise bad("obligations.require_human must be a boolean", 'write "require_human": true')
    max_cost = raw.get("max_cost")
    if max_cost is not None and (isinstance(max_cost, bool)
                                 or not isinstance(max_cost, int | float)):
        raise bad("obligations.max_cost must be a number", 'write "max_cost": 0.5')
    return Obligations(redact=tuple(redact), require_human=require_human,
                       max_cost=None if max_cost is None else float(max_cost))
