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

import contextlib
import fcntl
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import FeatureNotSupported, InvalidInput, MeshError, NotFound
from aios_mesh.generation.prompt import PromptTemplate, is_prompt_uri, parse_prompt_uri
from aios_mesh.lifecycle.evaluation import Example, evaluate_version, examples_from_reviews
from aios_mesh.lifecycle.gates import GateFailed, GateReport, judge
from aios_mesh.lockfile import PromptPin
from aios_mesh.ports.registry import ModelDocuments, PromptRegistry, parse_model_spec
from aios_mesh.recorder.shadow import ShadowRunner, open_shadow_db

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["AliasChange", "GateFailed", "RolloutBusy", "ShadowRunner", "check_gates", "compare",
           "promote", "rollback", "rollout_lock"]


class RolloutBusy(MeshError):
    """Another rollout operation (compare, promote, rollback) of the same capability is
    running; its result would be stale or racing."""

    code = "rollout_busy"
    retryable = True


@contextlib.contextmanager
def rollout_lock(mesh: Mesh, capability: str) -> Iterator[None]:
    """Held while one compare, promote or rollback of ``capability`` runs (an ``flock`` in
    the state folder: every process on this host sharing it sees it); a second one meanwhile
    is refused with :class:`RolloutBusy` rather than queued behind it."""
    folder = mesh.config.state_path / "rollout"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{capability}.lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RolloutBusy(f"a compare, promote or rollback of {capability} is running",
                              hint="wait for it to finish, then try again") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def compare(mesh: Mesh, capability: str) -> dict[str, Any]:
    """Candidate vs primary: shadow agreement/latency/cost and canary outcomes from the
    audit log."""
    spec = mesh.capability(capability)
    with rollout_lock(mesh, spec.name):
        return await _compare(mesh, spec)


async def _compare(mesh: Mesh, spec: CapabilitySpec) -> dict[str, Any]:
    capability = spec.name
    out: dict[str, Any] = {"capability": capability, "primary": spec.model,
                           "candidate": spec.canary.model if spec.canary else None}
    prompt = _registered_prompt(spec)
    if prompt is not None:
        out["primary_prompt"] = prompt
        out["candidate_prompt"] = getattr(spec.canary, "prompt", None)
    rows = _shadow_rows(mesh, capability)
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


def _shadow_rows(mesh: Mesh, capability: str, candidate_version: str | None = None
                 ) -> list[tuple[Any, ...]]:
    """(agree, primary_ms, candidate_ms, candidate_cost, error) of each shadow comparison."""
    sql = ("SELECT agree, primary_ms, candidate_ms, candidate_cost, error FROM shadow "
           "WHERE capability = ?")
    args: tuple[str, ...] = (capability,)
    if candidate_version is not None:
        sql, args = sql + " AND candidate_version = ?", (capability, candidate_version)
    db = open_shadow_db(mesh.config.state_path / "shadow.db")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


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
                  actor: str = "unknown", prompt: bool = False,
                  examples: Sequence[Example] | None = None, force: bool = False
                  ) -> AliasChange:
    """Move the capability's alias to ``version`` (default: the canary/shadow candidate).

    A capability that declares ``gates`` is promoted only when they pass
    (:func:`check_gates`; the report is kept either way); ``force=True`` moves the alias
    regardless and says so in the audit log. ``examples`` is the labelled set (default: the
    reviewers' verdicts).

    With ``prompt=True`` the alias of its registered prompt moves instead (default: the
    version the canary's candidate ``prompt`` names)."""
    spec = mesh.capability(capability)
    with rollout_lock(mesh, spec.name):
        if prompt:
            if version is None:
                candidate = getattr(spec.canary, "prompt", None)
                if not isinstance(candidate, str):
                    raise InvalidInput(f"{capability} has no candidate prompt",
                                       hint="pass --version, or declare a canary prompt")
                version = (await mesh.resolver.resolve_prompt(
                    parse_prompt_uri(candidate))).version
            return await _move_prompt(mesh, spec, version, "promote", actor)
        if version is None:
            candidate = spec.canary.model if spec.canary is not None else None
            if candidate is None:
                raise InvalidInput(f"{capability} has no canary or shadow candidate model",
                                   hint="pass --version, or declare canary = {model = ...}")
            version = (await mesh.resolver.resolve(candidate)).version
        if spec.gates is not None:
            report = await check_gates(mesh, spec, version, examples=examples, actor=actor,
                                       forced=force)
            if not report.passed and not force:
                why = "; ".join(f"{r.gate}: {r.reason} (observed {r.observed}, limit "
                                f"{r.threshold})" for r in report.failures())
                raise GateFailed(f"{spec.name} stays on version {report.champion.version}: "
                                 f"{why}", hint="improve the candidate or gather more "
                                                "evidence; `--force` overrides (audited)")
        return await _move(mesh, spec, version, "promote", actor)


async def check_gates(mesh: Mesh, spec: CapabilitySpec, version: str, *,
                      examples: Sequence[Example] | None = None, actor: str = "unknown",
                      forced: bool = False) -> GateReport:
    """Evaluate the champion (what the capability's alias points at now) and the candidate
    ``version`` on the labelled set, read the candidate's shadow comparisons, and judge the
    capability's gates. The report is appended to the audit log and, where the registry
    keeps documents, stored on the candidate's model version."""
    if spec.gates is None or spec.model is None:
        raise InvalidInput(f"{spec.name} declares no promotion gates",
                           hint="declare gates = {min_quality = ..., ...} on the capability")
    name, _, _ = parse_model_spec(spec.model)
    registry = mesh.ports.registry
    champion = await registry.resolve(spec.model)
    candidate = await registry.resolve(f"{name}/{version}")  # NotFound if missing
    chosen = list(examples) if examples is not None else examples_from_reviews(mesh, spec)
    before = await evaluate_version(mesh, spec, champion, chosen)
    after = await evaluate_version(mesh, spec, candidate, chosen)
    rows = [r for r in _shadow_rows(mesh, spec.name, candidate.version) if r[4] is None]
    agreement = (round(sum(r[0] for r in rows) / len(rows), 6) if rows else None)
    report = GateReport(spec.name, name, before, after, len(rows), agreement,
                        judge(spec.gates, before, after, shadow_calls=len(rows),
                              shadow_agreement=agreement),
                        evaluation_set="given" if examples is not None else "reviews")
    document = {**report.document(), "actor": actor, "forced": forced}
    await mesh.ports.audit.append(document)
    if isinstance(registry, ModelDocuments):
        await registry.put_document(name, candidate.version,
                                    "promotion.gate", document)
    return report


async def rollback(mesh: Mesh, capability: str, *, actor: str = "unknown",
                   prompt: bool = False) -> AliasChange:
    """Move the alias back to where the last promote of this capability found it (of its
    registered prompt with ``prompt=True``)."""
    spec = mesh.capability(capability)
    with rollout_lock(mesh, spec.name):
        return await _rollback(mesh, spec, actor=actor, prompt=prompt)


async def _rollback(mesh: Mesh, spec: CapabilitySpec, *, actor: str, prompt: bool
                    ) -> AliasChange:
    capability = spec.name
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
