"""Policy gate: every call passes the mesh-wide default policy and its capability's own; the
input is checked against the package's declared schema; decisions are cached; a deny raises
:class:`PolicyDenied` with the policy's reason and reason code; obligations are kept.

The rules (docs/governance/policy.md):

* ``[policy] default`` is evaluated first, then the capability's ``policy=`` (never instead):
  both must allow, and the obligations of both apply (``redact`` kinds joined,
  ``require_human`` if either asks, the lower ``max_cost``).
* A capability with neither is denied (``reason_code`` ``no_policy``) when
  ``[policy] mode = "deny-by-default"``; otherwise it runs unchecked.
* A package with an input schema (``<name>.schema.json``, see :mod:`aios_mesh.policy_bundle`)
  has its input validated before evaluation; a mismatch denies (``input_schema_mismatch``)
  or, with ``on_schema_mismatch = "review"``, the policy still decides and an allow goes to
  human review. ``require_schema = true`` refuses a bundle with a package without a schema.
* Only a package whose schema names a ``payload`` property sees the payload (redacted by the
  mesh's redactor); the others' cache keys never hold it, so their decisions stay cached.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Literal

import jsonschema.exceptions  # type: ignore[import-untyped]
import orjson

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.config import PolicyConfig
from aios_mesh.errors import ConfigError, PolicyDenied
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.policy_bundle import InputSchemas, Validator
from aios_mesh.ports.policy import (
    Decision,
    DeclaresInputSchemas,
    Obligations,
    OutputObligations,
    Policy,
    PolicyCheck,
    PolicyInput,
)
from aios_mesh.redaction import Redactor, RuleRedactor

__all__ = ["DecisionCache", "PolicyStep", "check_bundle", "merge_decisions", "schema_errors"]

#: Reason codes the mesh itself gives (a policy names its own in a ``reason_code`` rule).
NO_POLICY = "no_policy"
SCHEMA_MISMATCH = "input_schema_mismatch"
MAX_COST = "max_cost_exceeded"

_HINTS = {
    NO_POLICY: "declare policy= on the capability, or name a mesh-wide default "
               '([policy] default = "mesh/default")',
    SCHEMA_MISMATCH: "send attributes of the shape the policy's input schema declares",
    MAX_COST: "lower the call's estimate or ask for a higher max_cost",
}
_MAX_SCHEMA_ERRORS = 5


class DecisionCache:
    """LRU with TTL, keyed by (bundle hash, policy path, canonical input)."""

    def __init__(self, size: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[bytes, tuple[float, PolicyCheck]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> PolicyCheck | None:
        hit = self._data.get(key)
        if hit is None or self._clock() - hit[0] >= self.ttl_s:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return hit[1]

    def put(self, key: bytes, check: PolicyCheck) -> None:
        if self.size <= 0:
            return
        self._data[key] = (self._clock(), check)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


def check_bundle(policy: Policy, config: PolicyConfig) -> InputSchemas:
    """The input schemas of ``policy``'s bundle, refused in strict mode when a package has
    none (or the adapter cannot see the bundle's files): a :class:`ConfigError` naming them."""
    schemas = policy.input_schemas if isinstance(policy, DeclaresInputSchemas) else None
    if not config.require_schema:
        return schemas or InputSchemas()
    if schemas is None:
        raise ConfigError(f"[policy] require_schema is on but {type(policy).__name__} cannot "
                          "see the bundle's input schemas",
                          hint="load the policies from a folder the mesh reads: rego:///policies "
                               "or opa+http://HOST:8181?bundle=policies")
    if schemas.missing:
        listed = "; ".join(f"{pkg} ({', '.join(files)})"
                           for pkg, files in sorted(schemas.missing.items()))
        first = next(iter(sorted(schemas.missing.items())))[1][0]
        raise ConfigError(f"[policy] require_schema is on and these policy packages declare "
                          f"no input schema: {listed}",
                          hint=f"add a JSON Schema beside each, e.g. "
                               f"{first[: -len('.rego')]}.schema.json for {first}, or set "
                               "[policy] require_schema = false",
                          packages=sorted(schemas.missing))
    return schemas


def schema_errors(validator: Validator, doc: Any) -> tuple[str, ...]:
    """Where ``doc`` misses the schema, in the schema's words only: a path of property names
    the schema declares (``*`` for anything the caller named: keys, indexes) and what was
    expected. Never the values sent, which may be personal data."""
    found = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return tuple(_describe(e) for e in itertools.islice(found, _MAX_SCHEMA_ERRORS))


def _describe(error: jsonschema.exceptions.ValidationError) -> str:
    named = {p for p in error.absolute_schema_path if isinstance(p, str)}
    where = "/".join(p if isinstance(p, str) and p in named else "*"
                     for p in error.absolute_path) or "input"
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"{where}: missing {', '.join(missing)}"
    if error.validator == "type":
        return f"{where}: expected {orjson.dumps(error.validator_value).decode()}"
    if error.validator in ("enum", "const"):
        return f"{where}: not an allowed value"
    value = error.validator_value
    shown = orjson.dumps(value).decode() if isinstance(value, int | float | str | bool) else ""
    return f"{where}: fails {error.validator} {shown}".rstrip()


def merge_decisions(decisions: Iterable[Decision]) -> Decision:
    """All must allow: the first deny wins; an allow keeps the obligations of every policy
    (``redact`` kinds joined in order, ``require_human`` if any asks, the lowest
    ``max_cost``, the stricter output obligations) and names the last policy (the
    capability's own)."""
    taken = list(decisions)
    for d in taken:
        if not d.allow:
            return d
    redact = tuple(dict.fromkeys(k for d in taken for k in d.obligations.redact))
    caps = [d.obligations.max_cost for d in taken if d.obligations.max_cost is not None]
    obligations = Obligations(redact=redact,
                              require_human=any(d.obligations.require_human for d in taken),
                              max_cost=min(caps) if caps else None,
                              output=OutputObligations.merge(d.obligations.output
                                                             for d in taken))
    last = taken[-1]
    return dataclasses.replace(last, obligations=obligations)


class PolicyStep(StepBase):
    """The policy gate; see the module docstring."""

    name = "policy"

    def __init__(self, policy: Callable[[], Policy], cache: DecisionCache,
                 config: PolicyConfig | None = None, redactor: Redactor | None = None) -> None:
        self._policy = policy
        self.cache = cache
        self.config = config or PolicyConfig()
        self.redactor = redactor or RuleRedactor()
        self._schemas: tuple[Policy, str, InputSchemas] | None = None

    def applies(self, spec: CapabilitySpec) -> bool:
        return bool(self.paths(spec)) or self.config.mode == "deny-by-default"

    def paths(self, spec: CapabilitySpec) -> tuple[str, ...]:
        """The packages a call of ``spec`` must pass, in order: the default, then its own."""
        default = self.config.default
        if default is None:
            return () if spec.policy is None else (spec.policy,)
        if spec.policy is None or spec.policy == default:
            return (default,)
        return default, spec.policy

    def schemas(self, policy: Policy) -> InputSchemas:
        """The bundle's schemas, checked once per loaded bundle (its hash)."""
        seen = self._schemas
        if seen is not None and seen[0] is policy and seen[1] == policy.bundle_hash:
            return seen[2]
        schemas = check_bundle(policy, self.config)
        self._schemas = (policy, policy.bundle_hash, schemas)
        return schemas

    async def before(self, call: Call) -> None:
        spec = call.spec
        paths = self.paths(spec)
        if not paths:
            if self.config.mode == "deny-by-default":
                decision = Decision(False, f"capability {spec.name} has no policy and the mesh "
                                    "denies by default", reason_code=NO_POLICY)
                call.decision = decision
                call.policy_checks = (PolicyCheck(decision),)
                self._deny(call, decision)
            return
        policy = self._policy()
        schemas = self.schemas(policy)
        pin = PolicyInput(tenant=call.tenant, caller=call.caller, capability=spec.name,
                          capability_version=spec.version,
                          data_classification=spec.data_classification, model=spec.model,
                          cost_estimate=round(spec.price.cost(spec.estimate), 6),
                          attributes=call.attributes)
        doc = pin.to_document()
        call.policy_input = doc
        canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        with_payload: tuple[PolicyInput, dict[str, Any], bytes] | None = None
        checks: list[PolicyCheck] = []
        for path in paths:
            if schemas.reads(path):
                if with_payload is None:  # redacted once per call, for every reader
                    with_payload = self._with_payload(call, pin)
                check = await self._check(policy, schemas, path, *with_payload, payload=True)
            else:
                check = await self._check(policy, schemas, path, pin, doc, canonical)
            checks.append(check)
            if not check.decision.allow:
                break  # the first deny decides; later policies are not asked
        call.policy_checks = tuple(checks)
        call.policy_cached = all(c.cached for c in checks)
        decision = merge_decisions(c.decision for c in checks)
        call.decision = decision
        if not decision.allow:
            self._deny(call, decision)
        cap = decision.obligations.max_cost
        if cap is not None and pin.cost_estimate > cap:
            raise PolicyDenied(f"estimated cost {pin.cost_estimate:.4f} exceeds the policy's "
                               f"max_cost {cap:.4f}", reason="max_cost obligation",
                               reason_code=MAX_COST, policy=decision.policy,
                               hint=_HINTS[MAX_COST])

    def _with_payload(self, call: Call, pin: PolicyInput,
                      ) -> tuple[PolicyInput, dict[str, Any], bytes]:
        redacted = self.redactor.redact(call.payload or {}, tenant=call.tenant).payload
        full = dataclasses.replace(pin, payload=redacted)
        doc = full.to_document()
        return full, doc, orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    async def _check(self, policy: Policy, schemas: InputSchemas, path: str, pin: PolicyInput,
                     doc: dict[str, Any], canonical: bytes, *, payload: bool = False,
                     ) -> PolicyCheck:
        key = b"\0".join((policy.bundle_hash.encode(), path.encode(), canonical))
        hit = self.cache.get(key)
        if hit is not None:
            return dataclasses.replace(hit, cached=True)
        validator = schemas.for_path(path)
        errors = schema_errors(validator, doc) if validator is not None else ()
        schema: Literal["valid", "invalid"] | None = (
            None if validator is None else "invalid" if errors else "valid")
        if errors and self.config.on_schema_mismatch == "deny":
            decision = Decision(False, f"the input does not match the input schema of {path}: "
                                f"{'; '.join(errors)}", policy=path,
                                bundle_hash=policy.bundle_hash, reason_code=SCHEMA_MISMATCH)
        else:
            decision = await policy.decide(path, pin)
            if errors and decision.allow:  # a malformed input is never decided automatically
                decision = dataclasses.replace(decision, obligations=dataclasses.replace(
                    decision.obligations, require_human=True))
        check = PolicyCheck(decision, schema=schema, schema_errors=errors, payload=payload)
        self.cache.put(key, check)
        return check

    @staticmethod
    def _deny(call: Call, decision: Decision) -> None:
        where = f"policy {decision.policy}" if decision.policy else "the mesh"
        raise PolicyDenied(f"{where} denied {call.spec.name} for tenant {call.tenant}: "
                           f"{decision.reason}", reason=decision.reason,
                           reason_code=decision.reason_code, policy=decision.policy or None,
                           hint=_HINTS.get(decision.reason_code or ""))

