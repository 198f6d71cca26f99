"""A candidate prompt on live traffic: a canary that names a prompt renders it for its share of
questions (sticky per tenant + input), the record says which variant and prompt version
answered, compare counts them, the lock pins both prompts, and the response cache never
serves one prompt version's answer for another."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aios_mesh import rollout
from aios_mesh.capabilities import Canary
from aios_mesh.resolver import prompt_specs
from tests.unit.test_prompt_registry import PROMPT, World, spec


def test_a_canary_prompt_answers_its_share_and_the_record_says_so(tmp_path: Path) -> None:
    w = World(tmp_path, spec(canary=Canary(prompt=f"prompts:/{PROMPT}@candidate",
                                           percent=50)), lock=False)
    with w.mesh:
        w.setup("v1 {{ text }}", "v2 {{ text }}")
        w.mesh.run_sync(w.registry.set_prompt_alias(PROMPT, "candidate", "2"))
        seen = {}
        for i in range(40):
            messages, record = w.ask(f"q{i}")
            seen[i] = (record["variant"], record["prompt"]["version"])
            assert messages[0]["content"].startswith(f"v{record['prompt']['version']} ")
            assert record["model"]["version"] == "1"  # the same model on both sides
            assert w.ask(f"q{i}")[1]["variant"] == record["variant"]  # sticky
        assert {v for v in seen.values()} == {("primary", "1"), ("canary", "2")}
        report = w.mesh.run_sync(rollout.compare(w.mesh, "triage-ticket"))
        assert report["candidate_prompt"] == f"prompts:/{PROMPT}@candidate"
        assert report["canary"]["canary"]["prompt_versions"] == ["2"]
        assert report["canary"]["primary"]["prompt_versions"] == ["1"]
        # promote without --version takes the canary's candidate prompt
        change = w.mesh.run_sync(rollout.promote(w.mesh, "triage-ticket", prompt=True))
        assert (change.from_version, change.to_version) == ("1", "2")
    assert prompt_specs([w.mesh.capability("triage-ticket")]) == [
        f"{PROMPT}@candidate", f"{PROMPT}@production"]


def test_mesh_lock_pins_the_prompts_with_the_models(tmp_path: Path) -> None:
    w = World(tmp_path, spec(canary=Canary(prompt=f"prompts:/{PROMPT}@candidate",
                                           percent=10)), lock=True)
    with w.mesh:
        w.setup("v1 {{ text }}", "v2 {{ text }}")
        w.mesh.run_sync(w.registry.set_prompt_alias(PROMPT, "candidate", "2"))
        w.mesh.lock()
    lock = w.mesh.resolver.lock
    assert lock is not None and set(lock.models) == {"llm@champion"}
    assert {s: p.version for s, p in lock.prompts.items()} == {
        f"{PROMPT}@production": "1", f"{PROMPT}@candidate": "2"}


def test_the_response_cache_keys_on_the_prompt_version(tmp_path: Path) -> None:
    w = World(tmp_path, spec(cache_ttl_s=300), lock=False)
    with w.mesh:
        w.setup("v1 {{ text }}", "v2 {{ text }}")
        assert w.ask()[0][0]["content"].startswith("v1 ")
        assert w.ask()[1]["cache"] == "hit"
        w.mesh.run_sync(w.registry.set_prompt_alias(PROMPT, "production", "2"))  # no promote
        w.mesh.resolver.invalidate()  # what the alias TTL does in time
        messages, record = w.ask()
        assert messages[0]["content"].startswith("v2 ") and record["cache"] == "miss"


def test_a_canary_needs_a_candidate_and_a_prompt_canary_a_registered_prompt() -> None:
    with pytest.raises(ValidationError, match="candidate"):
        Canary(percent=10)
    with pytest.raises(ValidationError, match="prompts:/"):
        Canary(prompt="Inline {{ text }}", percent=10)
    with pytest.raises(ValidationError, match="registered prompt"):
        spec("Inline {{ text }}", canary=Canary(prompt=f"prompts:/{PROMPT}@candidate"))
