"""Policy port: decide whether a call may run, and with which obligations."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, runtime_checkable

from aios_mesh.errors import InvalidOutput
from aios_mesh.policy_bundle import InputSchemas
from aios_mesh.ports.base import Feature

__all__ = ["OUTPUT_ACTIONS", "POLICY_INPUT_VERSION", "REASON_CODE_PATTERN", "Decision",
           "DeclaresInputSchemas", "Obligations", "OutputAction", "OutputObligations", "Policy",
           "PolicyCheck", "PolicyInput", "decision_from_result"]

#: What a ``reason_code`` looks like: a short identifier a program can switch on.
REASON_CODE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")

#: Version of the policy input document; bump on any incompatible change.
POLICY_INPUT_VERSION = "1"


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """The documented, versioned input every policy sees (``input`` in Rego).

    ``payload`` (the call's payload, redacted) is set only for a policy whose input schema
    declares a ``payload`` property; every other policy sees no ``payload`` key, so its
    decisions stay cacheable across payloads.
    """

    tenant: str
    caller: str
    capability: str
    capability_version: str
    data_classification: str = "internal"
    model: str | None = None
    cost_estimate: float = 0.0
    attributes: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] | None = None

    def to_document(self) -> dict[str, Any]:
        """The ``input`` document (JSON values only)."""
        doc: dict[str, Any] = {
            "version": POLICY_INPUT_VERSION,
            "tenant": self.tenant,
            "caller": self.caller,
            "capability": {"name": self.capability, "version": self.capability_version},
            "data_classification": self.data_classification,
            "model": self.model,
            "cost_estimate": self.cost_estimate,
            "attributes": self.attributes,
        }
        if self.payload is not None:
            doc["payload"] = self.payload
        return doc


#: What the output guard does with an answer an output obligation catches.
OutputAction = Literal["mask", "deny", "review"]
#: The actions, mildest first: when two apply, the later (stricter) one wins.
OUTPUT_ACTIONS: Final[tuple[OutputAction, ...]] = ("mask", "review", "deny")
_SCHEMA_ACTIONS: Final = ("review", "deny")
#: At most this many blocked terms per policy, each at most this long (a term list is a
#: policy's short list of words, not a dictionary: it becomes one pattern per call).
_MAX_TERMS: Final = 256
_MAX_TERM_LEN: Final = 100


def _stricter(a: OutputAction | None, b: OutputAction | None) -> OutputAction | None:
    if a is None or b is None:
        return a if b is None else b
    return a if OUTPUT_ACTIONS.index(a) >= OUTPUT_ACTIONS.index(b) else b


@dataclass(frozen=True, slots=True)
class OutputObligations:
    """What a policy requires of a call's *answer* (``obligations.output`` in Rego), enforced
    by the ``guard_output`` step after the backend answered (:mod:`aios_mesh.pipeline.guard`).

    ``pii``: what to do when the answer holds PII or a secret (of ``pii_kinds``; empty: every
    kind the mesh's detectors know). ``blocked_terms``: words or phrases that must not appear
    (whole words, any case); ``on_blocked`` says what to do when one does. ``schema``: what an
    answer that misses the capability's output model gets (``deny``, the default, or
    ``review``; enforced by the invoke step).
    """

    pii: OutputAction | None = None
    pii_kinds: tuple[str, ...] = ()
    blocked_terms: tuple[str, ...] = ()
    on_blocked: OutputAction = "deny"
    schema: Literal["deny", "review"] | None = None

    @property
    def checks_content(self) -> bool:
        """Whether the guard has to look at the answer at all (PII or blocked terms)."""
        return self.pii is not None or bool(self.blocked_terms)

    @classmethod
    def merge(cls, items: Iterable[OutputObligations]) -> OutputObligations:
        """The obligations of several policies (the default and the capability's own) in
        one: the stricter action wins (``deny`` > ``review`` > ``mask``), blocked terms and
        PII kinds are joined (a policy that names no kinds asks for every kind)."""
        pii: OutputAction | None = None
        kinds: dict[str, None] | None = {}
        terms: dict[str, None] = {}
        on_blocked: OutputAction | None = None
        schema: Literal["deny", "review"] | None = None
        for o in items:
            if o.pii is not None:
                pii = _stricter(pii, o.pii)
                kinds = None if kinds is None or not o.pii_kinds else \
                    kinds | dict.fromkeys(o.pii_kinds)
            if o.blocked_terms:
                terms |= dict.fromkeys(o.blocked_terms)
                on_blocked = _stricter(on_blocked, o.on_blocked)
            if o.schema is not None:
                schema = "deny" if "deny" in (schema, o.schema) else "review"
        return cls(pii=pii, pii_kinds=() if kinds is None else tuple(kinds),
                   blocked_terms=tuple(terms), on_blocked=on_blocked or "deny", schema=schema)

    def to_record(self) -> dict[str, Any]:
        """The obligations as a record shows them: actions and kinds; the terms only
        counted (a term list can itself be confidential: a competitor, a project name)."""
        return {"pii": self.pii, "pii_kinds": list(self.pii_kinds),
                "blocked_terms": len(self.blocked_terms), "on_blocked": self.on_blocked,
                "schema": self.schema}


#: No output obligations (frozen: one instance serves every decision).
NO_OUTPUT_OBLIGATIONS: Final = OutputObligations()


@dataclass(frozen=True, slots=True)
class Obligations:
    """What an allow may require of the pipeline: before the call (``redact``,
    ``max_cost``) and of its answer (``require_human``, ``output``)."""

    redact: tuple[str, ...] = ()
    require_human: bool = False
    max_cost: float | None = None
    output: OutputObligations = NO_OUTPUT_OBLIGATIONS


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer: ``reason`` in the policy's words, ``reason_code`` for programs
    (the policy's own ``reason_code`` rule, or one the mesh sets, e.g. ``allow_undefined``)."""

    allow: bool
    reason: str | None = None
    obligations: Obligations = field(default_factory=Obligations)
    policy: str = ""
    bundle_hash: str = ""
    reason_code: str | None = None


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


@dataclass(frozen=True, slots=True)
class PolicyCheck:
    """What one policy said about one call, as the mesh records it.

    ``schema``: ``"valid"``/``"invalid"`` when the package declares an input schema, else
    None; ``schema_errors`` say where the input missed it (schema-side words only: paths
    and expectations, never the values sent). ``payload``: the input held the redacted
    payload. ``cached``: the decision came from the decision cache. ``guard``: what the
    output guard did under this policy's output obligations (``action``, ``kinds``,
    ``count``: never the values found); None when the policy has none.
    """

    decision: Decision
    schema: Literal["valid", "invalid"] | None = None
    schema_errors: tuple[str, ...] = ()
    payload: bool = False
    cached: bool = False
    guard: dict[str, Any] | None = None

    def to_record(self) -> dict[str, Any]:
        """The check as the decision record's ``policy.checks[]`` entry (``output`` and
        ``guard`` only for a policy with output obligations)."""
        d = self.decision
        doc = {"path": d.policy, "allow": d.allow, "reason": d.reason,
               "reason_code": d.reason_code, "require_human": d.obligations.require_human,
               "schema": self.schema, "schema_errors": list(self.schema_errors),
               "payload": self.payload, "cached": self.cached}
        output = d.obligations.output
        if output is not NO_OUTPUT_OBLIGATIONS and output != NO_OUTPUT_OBLIGATIONS:
            doc["output"] = output.to_record()
            doc["guard"] = self.guard
        return doc


@runtime_checkable
class DeclaresInputSchemas(Protocol):
    """A policy adapter that reads the bundle folder, and so its packages' input schemas
    (``<name>.schema.json`` beside ``<name>.rego``; see :mod:`aios_mesh.policy_bundle`)."""

    @property
    def input_schemas(self) -> InputSchemas | None:
        """The schemas; None when the adapter cannot see the bundle's files."""
        ...


_OBLIGATION_KEYS: Final = frozenset({"redact", "require_human", "max_cost", "output"})
_OUTPUT_KEYS: Final = frozenset({"pii", "pii_kinds", "blocked_terms", "on_blocked", "schema"})


def decision_from_result(result: Mapping[str, Any], *, package: str, path: str,
                         bundle_hash: str, where: str) -> Decision:
    """The policy contract, the same on every engine: a package's evaluated document
    (``allow``, optional ``reason``, ``reason_code`` and ``obligations``) → :class:`Decision`.

    ``allow`` undefined is a default deny (``reason_code`` ``allow_undefined``); a deny
    without a ``reason_code`` gets ``unspecified``. A non-boolean ``allow``, a non-string
    ``reason``, a ``reason_code`` that is not a short identifier (:data:`REASON_CODE_PATTERN`)
    or malformed obligations raise :class:`InvalidOutput` naming ``package`` and ``where``
    (the files or server that hold it).
    """

    def bad(what: str, hint: str) -> InvalidOutput:
        return InvalidOutput(f"policy {package} ({where}): {what}", hint=hint, policy=path)

    allow = result.get("allow")
    reason = result.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise bad(f"reason must be a string, got {type(reason).__name__}",
                  'define it as a string, e.g. reason := "tenant not allowed"')
    code = result.get("reason_code")
    if code is not None and (not isinstance(code, str)
                             or REASON_CODE_PATTERN.fullmatch(code) is None):
        raise bad("reason_code must be a short identifier (lower case letters, digits, "
                  "'_.:-', at most 64 characters)",
                  'define it like reason_code := "currency_not_accepted"')
    obligations = _obligations(result.get("obligations"), bad)
    if "allow" not in result:
        return Decision(False, f"default deny: {package}.allow is undefined", obligations,
                        policy=path, bundle_hash=bundle_hash,
                        reason_code=code or "allow_undefined")
    if not isinstance(allow, bool):
        raise bad(f"allow must be a boolean, got {type(allow).__name__}",
                  "define allow as true/false, e.g. 'default allow := false'")
    if not allow:
        reason = reason if reason is not None else f"{package}.allow is false"
        code = code or "unspecified"
    return Decision(allow, reason, obligations, policy=path, bundle_hash=bundle_hash,
                    reason_code=code)


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
    output = _output_obligations(raw.get("output"), bad)
    return Obligations(redact=tuple(redact), require_human=require_human,
                       max_cost=None if max_cost is None else float(max_cost), output=output)


def _output_obligations(raw: Any, bad: Any) -> OutputObligations:
    """``obligations.output`` → :class:`OutputObligations`; anything the guard could not
    enforce exactly as written is an error, never silently dropped."""
    if raw is None:
        return NO_OUTPUT_OBLIGATIONS
    example = '"output": {"pii": "mask", "blocked_terms": ["acme secret"], "on_blocked": "deny"}'
    if not isinstance(raw, dict):
        raise bad(f"obligations.output must be an object, got {type(raw).__name__}",
                  f"write {example}")
    unknown = sorted(set(raw) - _OUTPUT_KEYS)
    if unknown:
        raise bad(f"unknown output obligation(s) {', '.join(unknown)}",
                  f"the output guard enforces only {', '.join(sorted(_OUTPUT_KEYS))}")

    def action(key: str, allowed: tuple[str, ...], default: Any) -> Any:
        value = raw.get(key, default)
        if value is not default and value not in allowed:
            raise bad(f"obligations.output.{key} must be one of {', '.join(allowed)}",
                      f'write "{key}": "{allowed[-1]}"')
        return value

    def strings(key: str, limit: int) -> tuple[str, ...]:
        value = raw.get(key, [])
        if (not isinstance(value, list) or len(value) > limit
                or not all(isinstance(v, str) and v.strip() and len(v) <= _MAX_TERM_LEN
                           for v in value)):
            raise bad(f"obligations.output.{key} must be a list (or set) of at most {limit} "
                      f"non-blank strings of at most {_MAX_TERM_LEN} characters",
                      f"write {example}")
        return tuple(dict.fromkeys(v.strip() for v in value))

    return OutputObligations(
        pii=action("pii", OUTPUT_ACTIONS, None),
        pii_kinds=strings("pii_kinds", _MAX_TERMS),
        blocked_terms=strings("blocked_terms", _MAX_TERMS),
        on_blocked=action("on_blocked", OUTPUT_ACTIONS, "deny"),
        schema=action("schema", _SCHEMA_ACTIONS, None))
