"""Conformance suite of the PromptRegistry port (:class:`aios_mesh.ports.registry.PromptRegistry`).

Mixins expect a fixture ``adapter``: a registry that keeps prompts and that the test may write
to. Every test uses fresh, unique prompt names, so one registry (or one server) may be shared
by all tests of a class::

    class TestMlflowPrompts(PromptRegistryBasic, PromptRegistryAliases):
        @pytest.fixture
        async def adapter(self, tmp_path):
            registry = MlflowRegistry.from_url(parse_url("mlflow+sqlite:///m.db"),
                                               base_dir=tmp_path)
            yield registry
            await registry.aclose()

The rules (:mod:`aios_mesh.ports.prompts`): versions are ``"1"``, ``"2"`` ... per prompt; a
template is text, or a JSON list of chat messages handed back as compact JSON whatever the
whitespace it came with (so its digest is the same on every registry); ``latest`` means the
highest version and ``latest`` / ``v<digits>`` cannot be set; unknown names, versions and
aliases are :class:`~aios_mesh.errors.NotFound` with a hint.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from aios_mesh.errors import InvalidInput, MeshError, NotFound
from aios_mesh.generation.prompt import PromptTemplate
from aios_mesh.ports.base import Feature
from aios_mesh.ports.prompts import ListsPrompts, template_sha256
from aios_mesh.ports.registry import PromptRef, PromptRegistry

__all__ = ["PromptRegistryAliases", "PromptRegistryBasic", "PromptRegistryListing"]

CHAT = [{"role": "system", "content": "You triage tickets for {{ customer }}."},
        {"role": "user", "content": "Ticket: {{text}} — ünïcode kept"}]


def _name() -> str:
    return f"conf-prompt-{uuid.uuid4().hex[:12]}"


def _assert_hint(err: MeshError) -> None:
    assert err.hint, f"{type(err).__name__} without a hint: {err}"


class PromptRegistryBasic:
    """register → resolve by version and by bare name; text and chat round trips; errors."""

    async def test_is_a_prompt_registry(self, adapter: Any) -> None:
        assert isinstance(adapter, PromptRegistry)
        assert Feature.PROMPTS in getattr(adapter, "features", frozenset())

    async def test_register_numbers_versions_from_one_as_str(self, adapter: Any) -> None:
        name = _name()
        first = await adapter.register_prompt(name, "Summarise {{ text }}")
        second = await adapter.register_prompt(name, "Summarise briefly: {{ text }}",
                                               commit_message="shorter", tags={"by": "conf"})
        assert isinstance(first, PromptRef)
        assert (first.name, first.version, first.template, first.alias) == (
            name, "1", "Summarise {{ text }}", None)
        assert (second.version, second.template) == ("2", "Summarise briefly: {{ text }}")
        assert second.uri == f"prompts:/{name}/2"

    async def test_resolve_by_version_and_bare_name(self, adapter: Any) -> None:
        name = _name()
        await adapter.register_prompt(name, "one {{ a }}")
        await adapter.register_prompt(name, "two {{ a }}")
        one = await adapter.resolve_prompt(f"{name}/1")
        assert (one.version, one.template, one.alias) == ("1", "one {{ a }}", None)
        latest = await adapter.resolve_prompt(name)
        assert (latest.version, latest.template) == ("2", "two {{ a }}")

    async def test_a_chat_template_comes_back_as_compact_json(self, adapter: Any) -> None:
        name = _name()
        ref = await adapter.register_prompt(name, json.dumps(CHAT, indent=2))
        back = await adapter.resolve_prompt(f"{name}/{ref.version}")
        assert back.template == ref.template
        assert json.loads(back.template) == CHAT
        assert back.template == json.dumps(CHAT, ensure_ascii=False, separators=(",", ":"))
        template = PromptTemplate.parse(back.template)
        assert template.variables == {"customer", "text"}
        assert [m.role for m in template.render({"customer": "acme", "text": "x"})] == [
            "system", "user"]

    async def test_the_digest_does_not_depend_on_the_registry(self, adapter: Any) -> None:
        # the same template registered anywhere hands back the same text, so the lock file's
        # sha256 pins the prompt, not the backend that stored it
        name = _name()
        ref = await adapter.register_prompt(name, json.dumps(CHAT))
        canonical = json.dumps(CHAT, ensure_ascii=False, separators=(",", ":"))
        assert template_sha256(ref.template) == template_sha256(canonical)

    async def test_unknown_prompt_and_version_are_not_found(self, adapter: Any) -> None:
        name = _name()
        with pytest.raises(NotFound) as info:
            await adapter.resolve_prompt(f"{name}@production")
        _assert_hint(info.value)
        await adapter.register_prompt(name, "x {{ a }}")
        with pytest.raises(NotFound) as info:
            await adapter.resolve_prompt(f"{name}/7")
        _assert_hint(info.value)

    @pytest.mark.parametrize("bad", ["a@b", "a/1", "", "has space"])
    async def test_bad_names_are_invalid_input(self, adapter: Any, bad: str) -> None:
        with pytest.raises(InvalidInput) as info:
            await adapter.register_prompt(bad, "x")
        _assert_hint(info.value)

    @pytest.mark.parametrize("bad", ["", "   ", '[{"role": "user"}]', "[1, 2]"])
    async def test_bad_templates_are_invalid_input(self, adapter: Any, bad: str) -> None:
        with pytest.raises(InvalidInput) as info:
            await adapter.register_prompt(_name(), bad)
        _assert_hint(info.value)

    async def test_malformed_spec_is_invalid_input(self, adapter: Any) -> None:
        with pytest.raises(InvalidInput):
            await adapter.resolve_prompt("no spaces@allowed here")


class PromptRegistryAliases:
    """set_prompt_alias creates and moves aliases; reserved and unknown aliases."""

    async def test_alias_resolves_to_its_version_and_moves(self, adapter: Any) -> None:
        name = _name()
        await adapter.register_prompt(name, "v1 {{ a }}")
        await adapter.register_prompt(name, "v2 {{ a }}")
        await adapter.set_prompt_alias(name, "production", "1")
        ref = await adapter.resolve_prompt(f"{name}@production")
        assert (ref.version, ref.template, ref.alias) == ("1", "v1 {{ a }}", "production")
        await adapter.set_prompt_alias(name, "production", "2")
        assert (await adapter.resolve_prompt(f"{name}@production")).version == "2"

    async def test_latest_is_the_newest_version_and_reserved(self, adapter: Any) -> None:
        name = _name()
        await adapter.register_prompt(name, "v1")
        await adapter.register_prompt(name, "v2")
        assert (await adapter.resolve_prompt(f"{name}@latest")).version == "2"
        for reserved in ("latest", "v1"):
            with pytest.raises(InvalidInput) as info:
                await adapter.set_prompt_alias(name, reserved, "1")
            _assert_hint(info.value)

    async def test_unknown_alias_is_not_found_with_a_hint(self, adapter: Any) -> None:
        name = _name()
        await adapter.register_prompt(name, "v1")
        with pytest.raises(NotFound) as info:
            await adapter.resolve_prompt(f"{name}@nope")
        _assert_hint(info.value)

    async def test_alias_needs_an_existing_version(self, adapter: Any) -> None:
        name = _name()
        await adapter.register_prompt(name, "v1")
        with pytest.raises(NotFound):
            await adapter.set_prompt_alias(name, "production", "5")
        with pytest.raises(InvalidInput):
            await adapter.set_prompt_alias(name, "production", "two")
        with pytest.raises(NotFound):
            await adapter.set_prompt_alias(_name(), "production", "1")


class PromptRegistryListing:
    """``list_prompts`` (optional, :class:`~aios_mesh.ports.prompts.ListsPrompts`)."""

    async def test_lists_newest_version_and_aliases(self, adapter: Any) -> None:
        assert isinstance(adapter, ListsPrompts)  # narrowing would hide the other methods
        registry: Any = adapter
        name = _name()
        await registry.register_prompt(name, "v1")
        await registry.register_prompt(name, "v2")
        await registry.set_prompt_alias(name, "production", "1")
        found = {p.name: p for p in await registry.list_prompts()}
        assert found[name].latest_version == "2"
        assert found[name].aliases == {"production": "1"}
