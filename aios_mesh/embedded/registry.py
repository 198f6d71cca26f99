"""In-memory ModelRegistry (``memory://``): dicts in this process, nothing persisted.

Used by unit tests, benchmarks and demos that need a registry but no MLflow. It follows the
same rules as the MLflow adapter, so the conformance suite holds for both:

* versions are the strings ``"1"``, ``"2"`` ... per model, in registration order;
* ``resolve("name")`` is the latest version, ``"name/3"`` that version, ``"name@alias"`` the
  version the alias points at; unknown names, versions and aliases raise
  :class:`~aios_mesh.errors.NotFound`; a malformed spec raises
  :class:`~aios_mesh.errors.InvalidInput`;
* ``set_alias`` creates or moves an alias and needs the version to exist;
* ``latest`` is a reserved alias meaning the highest version, and ``v<digits>`` aliases are
  reserved too (both as in MLflow): setting either raises ``InvalidInput``.

Prompts (:class:`~aios_mesh.ports.registry.PromptRegistry`) follow the same rules in a
namespace of their own, with the template checks of :mod:`aios_mesh.ports.prompts`.

Documents (:class:`~aios_mesh.ports.registry.ModelDocuments`) are kept per version as JSON
bytes, so a caller's later change to its dict never reaches the stored copy.

Everything is a dict lookup under no lock: the methods never await, so on one event loop
each call is atomic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aios_mesh.backends import BackendURL
from aios_mesh.errors import InvalidInput, NotFound
from aios_mesh.ports.base import Feature
from aios_mesh.ports.prompts import (
    PromptInfo,
    check_prompt_alias,
    check_prompt_name,
    check_prompt_version,
    template_text,
)
from aios_mesh.ports.registry import (
    RESERVED_ALIAS,
    ModelRef,
    PromptRef,
    check_document,
    check_document_key,
    parse_model_spec,
)

__all__ = ["MemoryRegistry"]

_HINT = "register it first (registry.register(...)) or run `aios-mesh lock`"
_PROMPT_HINT = "register it first (`aios-mesh prompts register NAME --template-file F`)"


@dataclass
class _Model:
    versions: list[ModelRef] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    documents: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (version, key)


@dataclass
class _Prompt:
    versions: list[str] = field(default_factory=list)  # templates, version n at n - 1
    aliases: dict[str, str] = field(default_factory=dict)


class MemoryRegistry:
    """A ModelRegistry held in dicts; see the module docstring for the rules.

    Example::

        registry = MemoryRegistry()
        ref = await registry.register("clf", "python:pkg.mod:predict")
        await registry.set_alias("clf", "champion", ref.version)
        assert (await registry.resolve("clf@champion")).version == "1"
    """

    features: frozenset[Feature] = frozenset({Feature.ALIASES, Feature.PROMPTS,
                                              Feature.DOCUMENTS})

    def __init__(self) -> None:
        self._models: dict[str, _Model] = {}
        self._prompts: dict[str, _Prompt] = {}

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """``memory://`` takes no path and no options."""
        return cls()

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            raise NotFound(f"no registered model named {name!r}", hint=_HINT, model=name)
        return model

    @staticmethod
    def _version(model: _Model, name: str, version: str) -> ModelRef:
        if version.isdigit() and 1 <= int(version) <= len(model.versions):
            return model.versions[int(version) - 1]
        raise NotFound(f"model {name!r} has no version {version!r}",
                       hint=f"known versions: 1..{len(model.versions)}; {_HINT}",
                       model=name, version=version)

    async def resolve(self, spec: str) -> ModelRef:
        """``name@alias`` / ``name/version`` / ``name`` (latest) → :class:`ModelRef`."""
        name, alias, version = parse_model_spec(spec)
        model = self._model(name)
        if alias is not None and alias.lower() == "latest":
            ref = model.versions[-1]
        elif alias is not None:
            target = model.aliases.get(alias)
            if target is None:
                known = ", ".join(sorted(model.aliases)) or "none"
                raise NotFound(f"model {name!r} has no alias {alias!r}",
                               hint=f"known aliases: {known}; set it with "
                                    f"set_alias({name!r}, {alias!r}, VERSION) or run "
                                    "`aios-mesh lock`", model=name, alias=alias)
            ref = self._version(model, name, target)
        elif version is not None:
            ref = self._version(model, name, str(int(version)))
        else:
            if not model.versions:  # pragma: no cover - register always adds one
                raise NotFound(f"model {name!r} has no versions", hint=_HINT, model=name)
            ref = model.versions[-1]
        return ModelRef(ref.name, ref.version, ref.source, ref.run_id, alias, ref.signature,
                        dict(ref.tags))

    async def register(self, name: str, source: str, *, run_id: str | None = None,
                       tags: dict[str, str] | None = None) -> ModelRef:
        """Add a new version of ``name`` (creating the model if needed)."""
        parse_model_spec(name)  # the name alone must be a valid spec
        if "@" in name or "/" in name:
            raise InvalidInput(f"{name!r} is not a model name",
                               hint="register under a bare name such as 'invoice-extractor'")
        model = self._models.setdefault(name, _Model())
        ref = ModelRef(name=name, version=str(len(model.versions) + 1), source=source,
                       run_id=run_id, tags=dict(tags or {}))
        model.versions.append(ref)
        return ModelRef(ref.name, ref.version, ref.source, ref.run_id, None, None,
                        dict(ref.tags))

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``name@alias`` at ``version`` (creating or moving the alias)."""
        parse_model_spec(f"{name}@{alias}")
        if RESERVED_ALIAS.match(alias):
            raise InvalidInput(f"alias {alias!r} is reserved",
                               hint="'latest' always means the newest version and 'v<n>' "
                                    "version n; choose another alias such as 'champion'")
        model = self._model(name)
        ref = self._version(model, name, str(version))
        model.aliases[alias] = ref.version

    # -- documents -------------------------------------------------------------------------

    async def put_document(self, name: str, version: str, key: str,
                           document: dict[str, Any]) -> None:
        """Keep ``document`` (a JSON object) with version ``version`` of ``name`` under
        ``key``, replacing an earlier one."""
        check_document_key(key)
        data = check_document(document)
        model = self._model(name)
        ref = self._version(model, name, str(version))
        model.documents[(ref.version, key)] = data

    async def get_document(self, name: str, version: str, key: str) -> dict[str, Any] | None:
        """The document kept under ``key`` with that version, or ``None``."""
        check_document_key(key)
        model = self._model(name)
        ref = self._version(model, name, str(version))
        data = model.documents.get((ref.version, key))
        return None if data is None else dict(json.loads(data))

    # -- prompts ---------------------------------------------------------------------------

    def _prompt(self, name: str) -> _Prompt:
        prompt = self._prompts.get(name)
        if prompt is None:
            raise NotFound(f"no registered prompt named {name!r}", hint=_PROMPT_HINT,
                           prompt=name)
        return prompt

    async def register_prompt(self, name: str, template: str, *,
                              commit_message: str | None = None,
                              tags: dict[str, str] | None = None) -> PromptRef:
        """Add a new version of prompt ``name`` (creating it if needed). The commit message
        and tags are accepted for MLflow parity and not kept."""
        check_prompt_name(name)
        text = template_text(template)  # InvalidInput for an empty or broken chat
        prompt = self._prompts.setdefault(name, _Prompt())
        prompt.versions.append(text)
        return PromptRef(name, str(len(prompt.versions)), text)

    async def resolve_prompt(self, spec: str) -> PromptRef:
        """``name@alias`` / ``name/version`` / ``name`` (latest) → :class:`PromptRef`."""
        name, alias, version = parse_model_spec(spec)
        prompt = self._prompt(name)
        if alias is not None and alias.lower() != "latest":
            target = prompt.aliases.get(alias)
            if target is None:
                known = ", ".join(sorted(prompt.aliases)) or "none"
                raise NotFound(f"prompt {name!r} has no alias {alias!r}",
                               hint=f"known aliases: {known}; set it with `aios-mesh prompts "
                                    f"alias {name} {alias} VERSION`", prompt=name, alias=alias)
            version = target
        elif version is None:
            version = str(len(prompt.versions))
        n = int(version)
        if not 1 <= n <= len(prompt.versions):
            raise NotFound(f"prompt {name!r} has no version {version!r}",
                           hint=f"known versions: 1..{len(prompt.versions)}; {_PROMPT_HINT}",
                           prompt=name, version=version)
        return PromptRef(name, str(n), prompt.versions[n - 1], alias)

    async def set_prompt_alias(self, name: str, alias: str, version: str) -> None:
        """Point prompt ``name@alias`` at ``version`` (creating or moving the alias)."""
        check_prompt_alias(name, alias)
        ref = await self.resolve_prompt(f"{name}/{check_prompt_version(version)}")
        self._prompts[name].aliases[alias] = ref.version

    async def list_prompts(self) -> list[PromptInfo]:
        """Every prompt: its newest version and its aliases."""
        return [PromptInfo(name, str(len(p.versions)), dict(sorted(p.aliases.items())))
                for name, p in sorted(self._prompts.items())]

    async def aclose(self) -> None:
        """Nothing to release."""
        return None

