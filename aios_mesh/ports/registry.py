"""ModelRegistry port: resolve ``name@alias`` or ``name/version`` to a pinned model."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aios_mesh.errors import InvalidInput
from aios_mesh.ports.base import Feature

__all__ = ["RESERVED_ALIAS", "ModelRef", "ModelRegistry", "PromptRef", "PromptRegistry",
           "parse_model_spec"]

#: Aliases no one may set (as in MLflow): ``latest`` means the newest version, ``v<n>`` version
#: n — for models and prompts alike.
RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)

_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)(?:@(?P<alias>[A-Za-z0-9_\-]+)"
                   r"|/(?P<version>[0-9]+))?$")


def parse_model_spec(spec: str) -> tuple[str, str | None, str | None]:
    """Split ``"name@alias"`` / ``"name/3"`` / ``"name"`` into ``(name, alias, version)``.

    >>> parse_model_spec("invoice-extractor@champion")
    ('invoice-extractor', 'champion', None)
    """
    m = _SPEC.match(spec)
    if m is None:
        raise InvalidInput(f"malformed model reference {spec!r}",
                           hint="write 'name@alias' (e.g. 'invoice-extractor@champion') "
                                "or 'name/version' (e.g. 'invoice-extractor/3')")
    return m["name"], m["alias"], m["version"]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model pinned to one version: what the decision record names as 'who answered'."""

    name: str
    version: str
    source: str = ""
    run_id: str | None = None
    alias: str | None = None
    signature: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``models:/name/version`` — stable, alias-free."""
        return f"models:/{self.name}/{self.version}"


@runtime_checkable
class ModelRegistry(Protocol):
    """Resolves aliases to versions and records new versions."""

    features: frozenset[Feature]

    async def resolve(self, spec: str) -> ModelRef:
        """``name@alias`` or ``name/version`` → :class:`ModelRef`; raises ``NotFound``."""
        ...

    async def register(self, name: str, source: str, *, run_id: str | None = None,
                       tags: dict[str, str] | None = None) -> ModelRef: ...

    async def set_alias(self, name: str, alias: str, version: str) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PromptRef:
    """One prompt version (MLflow's prompt registry): what the record names, the lock file
    pins and a rollout moves. ``template`` is text or a JSON list of chat messages, with
    ``{{ variable }}`` placeholders (:class:`aios_mesh.generation.PromptTemplate`)."""

    name: str
    version: str
    template: str
    alias: str | None = None

    @property
    def uri(self) -> str:
        """``prompts:/name/version`` — stable, alias-free."""
        return f"prompts:/{self.name}/{self.version}"


@runtime_checkable
class PromptRegistry(Protocol):
    """Versioned prompts with aliases, beside the models (registries that declare
    :attr:`Feature.PROMPTS`). Specs read like model specs: ``name@alias``, ``name/3``."""

    async def register_prompt(self, name: str, template: str, *,
                              commit_message: str | None = None,
                              tags: dict[str, str] | None = None) -> PromptRef: ...

    async def resolve_prompt(self, spec: str) -> PromptRef:
        """``name@alias`` or ``name/version`` → :class:`PromptRef`; raises ``NotFound``."""
        ...

    async def set_prompt_alias(self, name: str, alias: str, version: str) -> None: ...
