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
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import InvalidInput, NotFound
from aios_mesh.ports.registry import parse_model_spec
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
        if rec.get("capability", {}).get("name") == capability and rec.get("variant"):
            variants.setdefault(rec["variant"], []).append(rec)
    out["canary"] = {
        name: {"calls": len(recs),
               "errors": sum(r["outcome"] == "error" for r in recs),
               "p50_ms": _pct([r["latency_ms"] for r in recs], 0.5),
               "mean_cost": round(statistics.fmean(r["cost"] for r in recs), 6),
               "versions": sorted({(r.get("model") or {}).get("version", "?") for r in recs})}
        for name, recs in sorted(variants.items())}
    return out


@dataclass(frozen=True, slots=True)
class AliasChange:
    action: str
    capability: str
    model: str
    alias: str
    from_version: str
    to_version: str
    actor: str

    def document(self) -> dict[str, Any]:
        return {"kind": "alias_change", "action": self.action, "capability": self.capability,
                "model": self.model, "alias": self.alias, "from_version": self.from_version,
                "to_version": self.to_version, "actor": self.actor,
                "at": datetime.now(UTC).isoformat()}


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


async def promote(mesh: Mesh, capability: str, *, version: str | None = None,
                  actor: str = "unknown") -> AliasChange:
    """Move the capability's alias to ``version`` (default: the canary/shadow candidate)."""
    spec = mesh.capability(capability)
    if version is None:
        if spec.canary is None:
            raise InvalidInput(f"{capability} has no canary or shadow candidate",
                               hint="pass --version, or declare canary = {model = ...}")
        version = (await mesh.resolver.resolve(spec.canary.model)).version
    return await _move(mesh, spec, version, "promote", actor)


async def rollback(mesh: Mesh, capability: str, *, actor: str = "unknown") -> AliasChange:
    """Move the alias back to where the last promote of this capability found it."""
    spec = mesh.capability(capability)
    last = None
    for entry in await mesh.ports.audit.read():
        rec = entry.record
        if rec.get("kind") == "alias_change" and rec.get("capability") == capability \
                and rec.get("action") == "promote":
            last = rec
    if last is None:
        raise NotFound(f"no promote of {capability} in the audit log",
                       hint="rollback undoes `aios-mesh promote`; nothing to undo")
    return await _move(mesh, spec, str(last["from_version"]), "rollback", actor)
