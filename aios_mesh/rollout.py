"""Rolling out a new model version: shadow traffic, comparison, promote and rollback.

* **Shadow** (``Canary(model=..., shadow=True)``): after each answered call, the same
  (possibly redacted) payload goes to the candidate on a background thread; the caller never
  waits for it and never sees it. Agreement, latency and cost land in ``<state>/shadow.db``.
* **Canary** (``Canary(model=..., percent=X)``): X% of questions (sticky per tenant + input)
  are answered by the candidate; the decision record's ``variant`` and ``model.version``
  say which one answered.
* **compare** reports both against the primary; **promote** moves the capability's alias to
  the candidate's version in the registry and **rollback** moves it back. Both are appended
  to the audit log (``kind: "alias_change"``), so the hash chain covers who moved what, when.
* **Prompts** roll out the same way (``prompt=True``): a generation's ``prompts:/name@alias``
  moves to another registered prompt version (the candidate is the canary's ``prompt`` where
  one is declared, else ``version``); the audit entry says ``"target": "prompt"``, and
  ``compare`` lists the prompt versions each variant answered with.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import FeatureNotSupported, InvalidInput, NotFound
from aios_mesh.generation.prompt import PromptTemplate, is_prompt_uri, parse_prompt_uri
from aios_mesh.lockfile import PromptPin
from aios_mesh.ports.registry import PromptRegistry, parse_model_spec
from aios_mesh.recorder.shadow import ShadowRunner, open_shadow_db

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["AliasChange", "ShadowRunner", "compare", "promote", "rollback"]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def compare(mesh: Mesh, capability: str) -> dict[str, Any]:
    """Candidate vs primary: shadow agreement/latency/cost and canary outcomes from the
    audit log."""
    spec = mesh.capability(capability)
    out: dict[str, Any] = {"capability": capability, "primary": spec.model,
                           "candidate": spec.canary.model if spec.canary else None}
    prompt = _registered_prompt(spec)
    if prompt is not None:
        out["primary_prompt"] = prompt
        out["candidate_prompt"] = getattr(spec.canary, "prompt", None)
    db = open_shadow_db(mesh.config.state_path / "shadow.db")
    try:
        rows = db.execute("SELECT agree, primary_ms, candidate_ms, candidate_cost, error "
                          "FROM shadow WHERE capability = ?", (capability,)).fetchall()
    finally:
        db.close()
    answered = [r for r in rows if r[4] is None]
    out["shadow"] = {
        "calls": len(rows),
        "errors": len(rows) - len(answered),
        "agreement": (round(sum(r[0] for r in answered) / len(answered), 4)
                      if answered else None),
        "primary_p50_ms": _pct([r[1] for r in answered], 0.5),
        "candidate_p50_ms": _pct([r[2] for r in answered], 0.5),
        "candidate_cost": round(sum(r[3] or 0 for r in answered), 6),
    }
    variants: dict[str, list[dict[str, Any]]] = {}
    for entry in await mesh.ports.audit.read():
        rec = entry.record
        cap = rec.get("capability")  # an alias_change entry names it as text: not a call
        if isinstance(cap, dict) and cap.get("name") == capability and rec.get("variant"):
            variants.setdefault(rec["variant"], []).append(rec)
    out["canary"] = {
        name: {"calls": len(recs),
               "errors": sum(r["outcome"] == "error" for r in recs),
               "p50_ms": _pct([r["latency_ms"] for r in recs], 0.5),
               "mean_cost": round(statistics.fmean(r["cost"] for r in recs), 6),
               "versions": sorted({(r.get("model") or {}).get("version", "?") for r in recs}),
               **({"prompt_versions": sorted({r["prompt"]["version"] for r in recs
                                              if r.get("prompt")})} if prompt else {})}
        for name, recs in sorted(variants.items())}
    return out


def _registered_prompt(spec: CapabilitySpec) -> str | None:
    """The capability's registered prompt spec (``name@alias``), if it has one."""
    gen = spec.generate
    if gen is None or gen.prompt is None or not is_prompt_uri(gen.prompt):
        return None
    return parse_prompt_uri(gen.prompt)


@dataclass(frozen=True, slots=True)
class AliasChange:
    """One recorded alias move. ``model`` is the name that moved: a model's, or a prompt's
    when ``target`` is ``"prompt"`` (the audit entry then names it under ``"prompt"``)."""

    action: str
    capability: str
    model: str
    alias: str
    from_version: str
    to_version: str
    actor: str
    target: str = "model"

    def document(self) -> dict[str, Any]:
        """The audit-log entry (``kind: "alias_change"``)."""
        return {"kind": "alias_change", "action": self.action, "capability": self.capability,
                "target": self.target, self.target: self.model, "alias": self.alias,
                "from_version": self.from_version, "to_version": self.to_version,
                "actor": self.actor, "at": datetime.now(UTC).isoformat()}


async def _move(mesh: Mesh, spec: CapabilitySpec, to_version: str, action: str,
                actor: str) -> AliasChange:
    assert spec.model is not None
    name, alias, _ = parse_model_spec(spec.model)
    if alias is None:
        raise InvalidInput(f"{spec.name} pins {spec.model}, not an alias",
                           hint="promote/rollback move aliases: use model = 'name@alias'")
    registry = mesh.ports.registry
    current = (await registry.resolve(spec.model)).version
    target = (await registry.resolve(f"{name}/{to_version}")).version  # NotFound if missing
    await registry.set_alias(name, alias, target)
    mesh.resolver.invalidate(spec.model)
    mesh.response_cache.clear()
    lock = mesh.resolver.lock
    if lock is not None and spec.model in lock.models and mesh.resolver.lock_path is not None:
        lock.models[spec.model] = await registry.resolve(spec.model)
        lock.write(mesh.resolver.lock_path)
    change = AliasChange(action, spec.name, name, alias, current, target, actor)
    await mesh.ports.audit.append(change.document())
    return change


async def _move_prompt(mesh: Mesh, spec: CapabilitySpec, to_version: str, action: str,
                       actor: str) -> AliasChange:
    prompt = _prompt_alias(spec)
    name, alias, _ = parse_model_spec(prompt)
    assert alias is not None  # _prompt_alias refuses a pinned version
    registry = _prompts(mesh)
    current = (await registry.resolve_prompt(prompt)).version
    candidate = await registry.resolve_prompt(f"{name}/{to_version}")  # NotFound
    target = candidate.version
    # Refuse before the move a version that would fail every call of a capability that
    # renders this alias (its variables must be fields of each one's input).
    template = PromptTemplate.parse(candidate.template)
    for other in mesh.capabilities.values():
        if _registered_prompt(other) == prompt:
            template.check_variables(other.input, where=f"{other.name} ({candidate.uri})")
    await registry.set_prompt_alias(name, alias, target)
    resolver = mesh.resolver
    resolver.invalidate(prompt)
    mesh.response_cache.clear()
    lock = resolver.lock
    if lock is not None and prompt in lock.prompts and resolver.lock_path is not None:
        moved = await registry.resolve_prompt(prompt)  # the pin follows; other pins stay
        lock.prompts[prompt] = PromptPin.of(moved, alias)
        lock.write(resolver.lock_path)
    change = AliasChange(action, spec.name, name, alias, current, target, actor, "prompt")
    await mesh.ports.audit.append(change.document())
    return change


def _prompt_alias(spec: CapabilitySpec) -> str:
    prompt = _registered_prompt(spec)
    if prompt is None:
        raise InvalidInput(f"{spec.name} has no registered prompt",
                           hint="prompt rollouts move the alias of generate.prompt = "
                                "'prompts:/NAME@ALIAS'")
    if parse_model_spec(prompt)[1] is None:
        raise InvalidInput(f"{spec.name} pins prompt {prompt}, not an alias",
                           hint="promote/rollback move aliases: use generate.prompt = "
                                "'prompts:/NAME@ALIAS'")
    return prompt


def _prompts(mesh: Mesh) -> PromptRegistry:
    registry = mesh.ports.registry
    if not isinstance(registry, PromptRegistry):
        raise FeatureNotSupported(f"the model registry ({type(registry).__name__}) keeps no "
                                  "prompts", hint="use the mlflow or memory registry")
    return registry


async def promote(mesh: Mesh, capability: str, *, version: str | None = None,
                  actor: str = "unknown", prompt: bool = False) -> AliasChange:
    """Move the capability's alias to ``version`` (default: the canary/shadow candidate).

    With ``prompt=True`` the alias of its registered prompt moves instead (default: the
    version the canary's candidate ``prompt`` names)."""
    spec = mesh.capability(capability)
    if prompt:
        if version is None:
            candidate = getattr(spec.canary, "prompt", None)
            if not isinstance(candidate, str):
                raise InvalidInput(f"{capability} has no candidate prompt",
                                   hint="pass --version, or declare a canary prompt")
            version = (await mesh.resolver.resolve_prompt(parse_prompt_uri(candidate))).version
        return await _move_prompt(mesh, spec, version, "promote", actor)
    if version is None:
        candidate = spec.canary.model if spec.canary is not None else None
        if candidate is None:
            raise InvalidInput(f"{capability} has no canary or shadow candidate model",
                               hint="pass --version, or declare canary = {model = ...}")
        version = (await mesh.resolver.resolve(candidate)).version
    return await _move(mesh, spec, version, "promote", actor)


async def rollback(mesh: Mesh, capability: str, *, actor: str = "unknown",
                   prompt: bool = False) -> AliasChange:
    """Move the alias back to where the last promote of this capability found it (of its
    registered prompt with ``prompt=True``)."""
    spec = mesh.capability(capability)
    target = "prompt" if prompt else "model"
    last = None
    for entry in await mesh.ports.audit.read():
        rec = entry.record
        if rec.get("kind") == "alias_change" and rec.get("capability") == capability \
                and rec.get("action") == "promote" and rec.get("target", "model") == target:
            last = rec
    if last is None:
        command = "aios-mesh prompts promote" if prompt else "aios-mesh promote"
        raise NotFound(f"no {'prompt ' if prompt else ''}promote of {capability} in the "
                       "audit log",
                       hint=f"rollback undoes `{command}`; nothing to undo")
    if prompt:
        return await _move_prompt(mesh, spec, str(last["from_version"]), "rollback", actor)
    return await _move(mesh, spec, str(last["from_version"]), "rollback", actor)
