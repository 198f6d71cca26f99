"""Conformance suite of the ModelRegistry port (:class:`aios_mesh.ports.registry.ModelRegistry`).

Mixins expect a fixture ``adapter``: a registry the test may write to. Every test uses fresh,
unique model names, so one registry (or one server) may be shared by all tests of a class::

    class TestMlflowSqlite(RegistryBasic, RegistryAliases):
        @pytest.fixture
        async def adapter(self, tmp_path):
            registry = MlflowRegistry.from_url(parse_url("mlflow+sqlite:///m.db"),
                                               base_dir=tmp_path)
            yield registry
            await registry.aclose()

Sources are opaque object-store URIs (``s3://aios-mesh-conformance/<name>/<n>``): a registry
must store them without fetching anything and hand them back unchanged in
``ModelRef.source``. Versions are strings (``"1"``, ``"2"`` ...), numbered per model from 1.
As in MLflow, the alias ``latest`` always means the highest version, and ``latest`` and
``v<digits>`` cannot be set as aliases.

:class:`RegistryDocuments` covers registries that declare ``Feature.DOCUMENTS``: JSON
documents kept with a model version by key (:class:`~aios_mesh.ports.registry.ModelDocuments`).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from aios_mesh.errors import InvalidInput, MeshError, NotFound
from aios_mesh.ports.base import Feature
from aios_mesh.ports.registry import ModelDocuments, ModelRef, ModelRegistry

__all__ = ["RegistryAliases", "RegistryBasic", "RegistryDocuments"]


def _name() -> str:
    return f"conf-{uuid.uuid4().hex[:12]}"


def _source(name: str, n: int) -> str:
    return f"s3://aios-mesh-conformance/{name}/{n}"


def _assert_hint(err: MeshError) -> None:
    assert err.hint, f"{type(err).__name__} without a hint: {err}"


async def _register(adapter: Any, name: str, n: int,
                    tags: dict[str, str] | None = None) -> ModelRef:
    ref = await adapter.register(name, _source(name, n), tags=tags)
    assert isinstance(ref, ModelRef)
    return ref


class RegistryBasic:
    """register → resolve by version and by bare name; NotFound and InvalidInput."""

    async def test_is_a_registry(self, adapter: Any) -> None:
        assert isinstance(adapter, ModelRegistry)
        assert isinstance(adapter.features, frozenset)

    async def test_register_numbers_versions_from_one_as_str(self, adapter: Any) -> None:
        name = _name()
        first = await _register(adapter, name, 1)
        second = await _register(adapter, name, 2)
        assert (first.name, first.version, first.source) == (name, "1", _source(name, 1))
        assert (second.name, second.version, second.source) == (name, "2", _source(name, 2))
        assert first.alias is None

    async def test_resolve_by_version(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        await _register(adapter, name, 2)
        for n in (1, 2):
            ref = await adapter.resolve(f"{name}/{n}")
            assert isinstance(ref, ModelRef)
            assert (ref.name, ref.version, ref.source, ref.alias) == (
                name, str(n), _source(name, n), None)
            assert ref.uri == f"models:/{name}/{n}"

    async def test_resolve_bare_name_is_latest_version(self, adapter: Any) -> None:
        name = _name()
        for n in (1, 2, 3):
            await _register(adapter, name, n)
        ref = await adapter.resolve(name)
        assert (ref.version, ref.source) == ("3", _source(name, 3))

    async def test_versions_are_counted_per_model(self, adapter: Any) -> None:
        a, b = _name(), _name()
        await _register(adapter, a, 1)
        await _register(adapter, a, 2)
        ref = await _register(adapter, b, 1)
        assert ref.version == "1"
        assert (await adapter.resolve(b)).version == "1"
        assert (await adapter.resolve(a)).version == "2"

    async def test_tags_round_trip(self, adapter: Any) -> None:
        name = _name()
        tags = {"team": "invoices", "dataset": "2024-q4"}
        created = await _register(adapter, name, 1, tags=tags)
        resolved = await adapter.resolve(f"{name}/1")
        for ref in (created, resolved):
            assert tags.items() <= ref.tags.items()
            assert all(isinstance(v, str) for v in ref.tags.values())

    async def test_resolve_result_fields_have_port_types(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        ref = await adapter.resolve(name)
        assert isinstance(ref.version, str)
        assert isinstance(ref.source, str)
        assert ref.run_id is None or isinstance(ref.run_id, str)
        assert ref.signature is None or isinstance(ref.signature, dict)
        assert isinstance(ref.tags, dict)

    @pytest.mark.parametrize("suffix", ["", "/1", "@champion"])
    async def test_unknown_model_is_not_found(self, adapter: Any, suffix: str) -> None:
        with pytest.raises(NotFound) as info:
            await adapter.resolve(_name() + suffix)
        _assert_hint(info.value)

    @pytest.mark.parametrize("version", ["2", "99"])
    async def test_unknown_version_is_not_found(self, adapter: Any, version: str) -> None:
        name = _name()
        await _register(adapter, name, 1)
        with pytest.raises(NotFound) as info:
            await adapter.resolve(f"{name}/{version}")
        _assert_hint(info.value)

    @pytest.mark.parametrize("spec", ["", "@champion", "model@", "model/", "model/one",
                                      "model/1/2", "model@a@b", "has space", "-lead"])
    async def test_malformed_spec_is_invalid_input(self, adapter: Any, spec: str) -> None:
        with pytest.raises(InvalidInput) as info:
            await adapter.resolve(spec)
        _assert_hint(info.value)


class RegistryAliases:
    """set_alias → resolve by alias; moving aliases; unknown alias or target → NotFound."""

    async def test_declares_aliases(self, adapter: Any) -> None:
        assert Feature.ALIASES in adapter.features

    async def test_set_alias_then_resolve(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        await _register(adapter, name, 2)
        await adapter.set_alias(name, "champion", "1")
        ref = await adapter.resolve(f"{name}@champion")
        assert (ref.name, ref.version, ref.source, ref.alias) == (
            name, "1", _source(name, 1), "champion")
        assert isinstance(ref.version, str)

    async def test_move_alias(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        await _register(adapter, name, 2)
        await adapter.set_alias(name, "champion", "1")
        await adapter.set_alias(name, "champion", "2")
        ref = await adapter.resolve(f"{name}@champion")
        assert (ref.version, ref.source) == ("2", _source(name, 2))
        # moving it back works too, and the version pin is unaffected
        await adapter.set_alias(name, "champion", "1")
        assert (await adapter.resolve(f"{name}@champion")).version == "1"
        assert (await adapter.resolve(f"{name}/2")).alias is None

    async def test_aliases_are_independent(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        await _register(adapter, name, 2)
        await adapter.set_alias(name, "champion", "1")
        await adapter.set_alias(name, "challenger", "2")
        assert (await adapter.resolve(f"{name}@champion")).version == "1"
        assert (await adapter.resolve(f"{name}@challenger")).version == "2"

    async def test_alias_does_not_change_latest(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        await _register(adapter, name, 2)
        await adapter.set_alias(name, "champion", "1")
        assert (await adapter.resolve(name)).version == "2"

    async def test_aliases_are_per_model(self, adapter: Any) -> None:
        a, b = _name(), _name()
        await _register(adapter, a, 1)
        await _register(adapter, b, 1)
        await adapter.set_alias(a, "champion", "1")
        with pytest.raises(NotFound):
            await adapter.resolve(f"{b}@champion")

    async def test_latest_is_a_reserved_alias(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        await _register(adapter, name, 2)
        ref = await adapter.resolve(f"{name}@latest")
        assert (ref.version, ref.source) == ("2", _source(name, 2))
        for reserved in ("latest", "v1"):
            with pytest.raises(InvalidInput) as info:
                await adapter.set_alias(name, reserved, "1")
            _assert_hint(info.value)
        assert (await adapter.resolve(f"{name}@latest")).version == "2"

    async def test_unknown_alias_is_not_found(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        with pytest.raises(NotFound) as info:
            await adapter.resolve(f"{name}@nobody")
        _assert_hint(info.value)

    async def test_set_alias_to_unknown_version_is_not_found(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        with pytest.raises(NotFound) as info:
            await adapter.set_alias(name, "champion", "7")
        _assert_hint(info.value)
        # nothing was half-set
        with pytest.raises(NotFound):
            await adapter.resolve(f"{name}@champion")

    async def test_set_alias_on_unknown_model_is_not_found(self, adapter: Any) -> None:
        with pytest.raises(NotFound) as info:
            await adapter.set_alias(_name(), "champion", "1")
        _assert_hint(info.value)


class RegistryDocuments:
    """put_document → get_document per (model, version, key); replace; None for a key never
    written; NotFound for an unknown model or version; InvalidInput for a bad key or document."""

    DOC: dict[str, Any] = {"format": "conformance/1", "n": 3, "share": 0.25,
                           "names": ["a", "b"], "nested": {"ok": True, "none": None},
                           "text": "Zürich – ¥ 1 000"}

    async def test_declares_documents(self, adapter: Any) -> None:
        assert Feature.DOCUMENTS in adapter.features
        assert isinstance(adapter, ModelDocuments)

    async def test_put_then_get_round_trips(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        await adapter.put_document(name, "1", "drift.reference", self.DOC)
        assert await adapter.get_document(name, "1", "drift.reference") == self.DOC

    async def test_unwritten_key_is_none(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        assert await adapter.get_document(name, "1", "gate.report") is None
        await adapter.put_document(name, "1", "drift.reference", {"a": 1})
        assert await adapter.get_document(name, "1", "gate.report") is None

    async def test_put_again_replaces(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        await adapter.put_document(name, "1", "gate.report", {"passed": False})
        await adapter.put_document(name, "1", "gate.report", {"passed": True, "n": 2})
        assert await adapter.get_document(name, "1", "gate.report") == {"passed": True, "n": 2}

    async def test_documents_are_per_version_and_key(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        await _register(adapter, name, 2)
        await adapter.put_document(name, "1", "drift.reference", {"v": 1})
        await adapter.put_document(name, "2", "drift.reference", {"v": 2})
        await adapter.put_document(name, "2", "gate.report", {"g": 2})
        assert await adapter.get_document(name, "1", "drift.reference") == {"v": 1}
        assert await adapter.get_document(name, "2", "drift.reference") == {"v": 2}
        assert await adapter.get_document(name, "1", "gate.report") is None
        # documents do not move versions or aliases
        assert (await adapter.resolve(name)).version == "2"

    async def test_stored_copy_is_not_the_callers_dict(self, adapter: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        doc: dict[str, Any] = {"items": [1, 2]}
        await adapter.put_document(name, "1", "gate.report", doc)
        doc["items"].append(3)
        got = await adapter.get_document(name, "1", "gate.report")
        assert got == {"items": [1, 2]}
        got["items"].append(4)
        assert await adapter.get_document(name, "1", "gate.report") == {"items": [1, 2]}

    @pytest.mark.parametrize("where", ["model", "version"])
    async def test_unknown_model_or_version_is_not_found(self, adapter: Any,
                                                         where: str) -> None:
        name = _name()
        await _register(adapter, name, 1)
        target = (_name(), "1") if where == "model" else (name, "7")
        for call in (adapter.put_document(*target, "gate.report", {"a": 1}),
                     adapter.get_document(*target, "gate.report")):
            with pytest.raises(NotFound) as info:
                await call
            _assert_hint(info.value)

    @pytest.mark.parametrize("key", ["", "Upper", "has space", "a/b", "-lead", "x" * 65])
    async def test_malformed_key_is_invalid_input(self, adapter: Any, key: str) -> None:
        name = _name()
        await _register(adapter, name, 1)
        with pytest.raises(InvalidInput) as info:
            await adapter.put_document(name, "1", key, {"a": 1})
        _assert_hint(info.value)
        with pytest.raises(InvalidInput):
            await adapter.get_document(name, "1", key)

    @pytest.mark.parametrize("document", [["not", "an", "object"], {"x": float("nan")},
                                          {"x": object()}])
    async def test_non_json_document_is_invalid_input(self, adapter: Any,
                                                      document: Any) -> None:
        name = _name()
        await _register(adapter, name, 1)
        with pytest.raises(InvalidInput) as info:
            await adapter.put_document(name, "1", "gate.report", document)
        _assert_hint(info.value)
        assert await adapter.get_document(name, "1", "gate.report") is None
