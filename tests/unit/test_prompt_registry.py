"""Prompts as versioned artifacts, through a real Mesh on the embedded registry: the record
names the version; an alias move is seen after the TTL; the lock file pins the version (and
its digest); promote / rollback move the prompt alias with audit entries; an unknown alias and
a version whose variables the input lacks are typed errors, recorded. The LLM is an
in-process model that echoes the messages it received, so every assertion about rendering
is about what a real backend would have been sent."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh import CapabilitySpec, ConfigError, Generation, Mesh, NotFound, TextOutput
from aios_mesh.config import config_from_mapping
from aios_mesh.embedded.registry import MemoryRegistry
from aios_mesh.embedded.serving import InProcessServing
from aios_mesh.errors import InvalidInput
from aios_mesh.lockfile import LockFile, PromptPin
from aios_mesh.ports.prompts import template_sha256
from aios_mesh.resolver import AliasResolver, prompt_specs
from tests.unit.fakes import StaticPolicy

PROMPT = "triage"


class Ticket(BaseModel):
    text: str
    customer: str = "unknown"


def echo(batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """An LLM that answers with the messages it was sent (as JSON text)."""
    return [{"text": json.dumps(request["messages"])} for request in batch]


def spec(prompt: str = f"prompts:/{PROMPT}@production", **kw: Any) -> CapabilitySpec:
    return CapabilitySpec(name="triage-ticket", input=Ticket, output=TextOutput,
                          model="llm@champion",
                          generate=Generation(prompt=prompt, max_tokens=8), **kw)


class World:
    """A real Mesh on the embedded registry and in-process serving, and its audit log."""

    def __init__(self, tmp_path: Path, capability: CapabilitySpec, *, lock: bool) -> None:
        self.registry = MemoryRegistry()
        self.serving = InProcessServing()
        self.tmp_path = tmp_path
        doc: dict[str, Any] = {"state_dir": str(tmp_path / "state"),
                               "tenants": {"acme": {}}, "cache": {"alias_ttl_s": 60}}
        if lock:
            doc["lock_file"] = str(tmp_path / "aios-mesh.lock")
        self.mesh = Mesh(config_from_mapping(doc), capabilities=[capability],
                         adapters={"registry": self.registry, "serving": self.serving,
                                   "policy": StaticPolicy()})

    def setup(self, *templates: str, production: str = "1") -> None:
        ref = self.serving.register("llm", "1", echo)
        run = self.mesh.run_sync
        run(self.registry.register("llm", ref.source))
        run(self.registry.set_alias("llm", "champion", "1"))
        for template in templates:
            run(self.registry.register_prompt(PROMPT, template))
        run(self.registry.set_prompt_alias(PROMPT, "production", production))

    def ask(self, text: str = "refund please") -> tuple[list[dict[str, str]], dict[str, Any]]:
        result = self.mesh.invoke("triage-ticket", {"text": text, "customer": "ada"},
                                  tenant="acme")
        assert isinstance(result.output, TextOutput)
        return json.loads(result.output.text), result.record.to_dict()

    def audit(self) -> list[dict[str, Any]]:
        path = self.tmp_path / "state" / "audit.jsonl"
        return [json.loads(line)["record"] for line in path.read_text().splitlines()]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path, spec(), lock=True)
    with w.mesh:
        yield w


def test_the_record_names_the_registered_version_that_was_rendered(world: World) -> None:
    world.setup("Triage for {{ customer }}: {{ text }}",
                json.dumps([{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "{{text}}"}]))
    messages, record = world.ask()
    assert messages == [{"role": "user", "content": "Triage for ada: refund please"}]
    assert record["prompt"] == {"name": PROMPT, "version": "1", "alias": "production"}


def test_a_moved_alias_is_seen_after_invalidate_and_a_chat_renders_its_roles(
        world: World) -> None:
    world.setup("v1 {{ text }}", json.dumps([{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "{{text}}"}]))
    assert world.ask()[1]["prompt"]["version"] == "1"
    world.mesh.run_sync(world.registry.set_prompt_alias(PROMPT, "production", "2"))
    assert world.ask()[1]["prompt"]["version"] == "1"  # believed for the alias TTL
    world.mesh.resolver.invalidate(f"{PROMPT}@production")
    messages, record = world.ask()
    assert messages == [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "refund please"}]
    assert record["prompt"]["version"] == "2"


def test_the_lock_pins_the_prompt_version_with_its_digest(world: World) -> None:
    world.setup("v1 {{ text }}", "v2 {{ text }}")
    specs = prompt_specs(world.mesh.capabilities.values())
    assert specs == [f"{PROMPT}@production"]
    lock = world.mesh.run_sync(world.mesh.resolver.lock_all(["llm@champion"], prompts=specs))
    assert lock.prompts == {f"{PROMPT}@production": PromptPin(
        PROMPT, "1", template_sha256("v1 {{ text }}"), "production")}
    on_disk = json.loads((world.tmp_path / "aios-mesh.lock").read_text())
    assert on_disk["prompts"][f"{PROMPT}@production"]["version"] == "1"
    assert "v1 {{ text }}" not in (world.tmp_path / "aios-mesh.lock").read_text()
    # The alias moves in the registry; the locked mesh keeps answering with version 1.
    world.mesh.run_sync(world.registry.set_prompt_alias(PROMPT, "production", "2"))
    world.mesh.resolver.invalidate()
    messages, record = world.ask()
    assert messages[0]["content"] == "v1 refund please"
    assert record["prompt"] == {"name": PROMPT, "version": "1", "alias": "production"}


async def test_a_pin_whose_registry_holds_another_text_is_refused(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    await registry.register_prompt(PROMPT, "what was locked")
    path = tmp_path / "aios-mesh.lock"
    LockFile(prompts={f"{PROMPT}@production": PromptPin(
        PROMPT, "1", template_sha256("what was locked"), "production")}).write(path)

    async def get() -> MemoryRegistry:
        return registry

    resolver = AliasResolver(get, lock_path=path)
    assert (await resolver.resolve_prompt(f"{PROMPT}@production")).version == "1"
    rebuilt = MemoryRegistry()  # same name and number, other text
    await rebuilt.register_prompt(PROMPT, "something else")
    registry = rebuilt
    resolver = AliasResolver(get, lock_path=path)
    with pytest.raises(ConfigError) as info:
        await resolver.resolve_prompt(f"{PROMPT}@production")
    assert "aios-mesh lock" in (info.value.hint or "")


def test_an_unknown_prompt_alias_is_not_found_and_recorded(tmp_path: Path) -> None:
    w = World(tmp_path, spec(f"prompts:/{PROMPT}@staging"), lock=False)
    with w.mesh:
        w.setup("v1 {{ text }}")
        with pytest.raises(NotFound) as info:
            w.ask()
        assert "production" in (info.value.hint or "")  # names the aliases it does know
    [record] = [r for r in w.audit() if r.get("capability")]
    assert (record["outcome"], record["error"]["code"]) == (NotFound.outcome, NotFound.code)


def test_a_version_using_a_field_the_input_lacks_is_a_config_error_recorded(
        tmp_path: Path) -> None:
    w = World(tmp_path, spec(), lock=False)
    with w.mesh:
        w.setup("v1 {{ text }}", "v2 {{ text }} for {{ account_id }}", production="2")
        with pytest.raises(ConfigError) as info:
            w.ask()
        assert "account_id" in info.value.message and info.value.hint
    [record] = [r for r in w.audit() if r.get("capability")]
    assert (record["outcome"], record["error"]["code"]) == (ConfigError.outcome, ConfigError.code)


def test_promote_and_rollback_move_the_prompt_alias_and_are_audited(world: World) -> None:
    from aios_mesh import rollout

    world.setup("v1 {{ text }}", "v2 {{ text }}")
    mesh = world.mesh
    mesh.run_sync(mesh.resolver.lock_all(["llm@champion"],
                                         prompts=prompt_specs(mesh.capabilities.values())))
    with pytest.raises(InvalidInput):  # no canary prompt declared, no --version
        mesh.run_sync(rollout.promote(mesh, "triage-ticket", prompt=True))
    change = mesh.run_sync(rollout.promote(mesh, "triage-ticket", version="2", actor="ana",
                                           prompt=True))
    assert (change.model, change.alias, change.from_version, change.to_version) == (
        PROMPT, "production", "1", "2")
    assert world.ask()[1]["prompt"]["version"] == "2"  # the lock's pin followed the move
    assert LockFile.read(world.tmp_path / "aios-mesh.lock").prompts[  # type: ignore[union-attr]
        f"{PROMPT}@production"].version == "2"
    back = mesh.run_sync(rollout.rollback(mesh, "triage-ticket", actor="ben", prompt=True))
    assert (back.from_version, back.to_version) == ("2", "1")
    assert world.ask()[1]["prompt"]["version"] == "1"
    with pytest.raises(NotFound):  # a prompt rollback never undoes a model promote
        mesh.run_sync(rollout.rollback(mesh, "triage-ticket", actor="ben"))
    report = mesh.run_sync(rollout.compare(mesh, "triage-ticket"))
    assert report["primary_prompt"] == f"{PROMPT}@production"
    moves = [r for r in world.audit() if r.get("kind") == "alias_change"]
    assert [(m["action"], m["target"], m["prompt"], m["from_version"], m["to_version"],
             m["actor"]) for m in moves] == [
        ("promote", "prompt", PROMPT, "1", "2", "ana"),
        ("rollback", "prompt", PROMPT, "2", "1", "ben")]


def test_promote_refuses_a_version_the_input_cannot_fill_and_leaves_the_alias(
        world: World) -> None:
    from aios_mesh import rollout

    world.setup("v1 {{ text }}", "v2 {{ text }} for {{ account_id }}")
    with pytest.raises(ConfigError) as info:
        world.mesh.run_sync(rollout.promote(world.mesh, "triage-ticket", version="2",
                                            prompt=True))
    assert "account_id" in info.value.message and info.value.hint
    assert world.mesh.run_sync(world.registry.resolve_prompt(f"{PROMPT}@production")
                               ).version == "1"
    assert world.ask()[1]["prompt"]["version"] == "1"
    assert not [r for r in world.audit() if r.get("kind") == "alias_change"]


def test_prompt_rollouts_need_a_registered_prompt_alias(tmp_path: Path) -> None:
    from aios_mesh import rollout

    w = World(tmp_path, spec(f"prompts:/{PROMPT}/1"), lock=False)
    with w.mesh:
        w.setup("v1 {{ text }}")
        with pytest.raises(InvalidInput) as info:
            w.mesh.run_sync(rollout.promote(w.mesh, "triage-ticket", version="1",
                                            prompt=True))
        assert "alias" in info.value.message


def test_a_lock_without_prompts_still_reads_and_bad_prompt_pins_are_typed(
        tmp_path: Path) -> None:
    path = tmp_path / "aios-mesh.lock"
    path.write_text('{"lock_version": 1, "models": {}}')
    lock = LockFile.read(path)
    assert lock is not None and lock.prompts == {}
    path.write_text('{"lock_version": 1, "prompts": {"triage@production": '
                    '{"name": "triage", "version": 2, "sha256": "not-hex"}}}')
    with pytest.raises(ConfigError) as info:
        LockFile.read(path)
    assert "sha256" in info.value.message and info.value.hint
    path.write_text('{"lock_version": 1, "prompts": {"triage@production": '
                    '{"name": "triage", "version": 2, "sha256": "' + "a" * 64 + '"}}}')
    lock = LockFile.read(path)
    assert lock is not None and lock.prompts["triage@production"].version == "2"
