"""ModelRegistry port: resolve ``name@alias`` or ``name/version`` to a pinned model."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aios_mesh.errors import InvalidInput
from aios_mesh.ports.base import Feature

__all__ = ["RESERVED_ALIAS", "ModelDocuments", "ModelRef", "ModelRegistry", "PromptRef",
           "PromptRegistry", "check_document", "check_document_key", "parse_model_spec"]

#: Aliases no one may set (as in MLflow): ``latest`` means the newest version, ``v<n>`` version
#: n — for models and prompts alike.
RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)

#: What a document key may be (it becomes part of a tag name and a file name).
_DOC_KEY = re.compile(r"^[a-z0-9][a-z0-9._\-]{0,63}$")

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


@runtime_checkable
class ModelDocuments(Protocol):
    """JSON documents kept with one model version, by key (registries that declare
    :attr:`Feature.DOCUMENTS`): a drift reference window (``drift.reference``), a promotion
    gate report. Writing a key again replaces its document.

        await registry.put_document("invoice-extractor", "3", "drift.reference", doc)
        doc = await registry.get_document("invoice-extractor", "3", "drift.reference")

    Unknown model or version → :class:`~aios_mesh.errors.NotFound`; a malformed key or a
    document that is not a JSON object → :class:`~aios_mesh.errors.InvalidInput`; a key never
    written → ``None``.
    """

    async def put_document(self, name: str, version: str, key: str,
                           document: dict[str, Any]) -> None: ...

    async def get_document(self, name: str, version: str, key: str) -> dict[str, Any] | None:
        ...


def check_document_key(key: str) -> str:
    """``key`` if it is a valid document key (lower-case letters, digits, ``.``, ``_``,
    ``-``; at most 64 characters, starting with a letter or digit), else ``InvalidInput``.

    >>> check_document_key("drift.reference")
    'drift.reference'
    """
    if not isinstance(key, str) or not _DOC_KEY.match(key):
        raise InvalidInput(f"malformed document key {key!r}",
                           hint="use lower-case letters, digits, '.', '_' and '-' (at most 64), "
                                "e.g. 'drift.reference' or 'gate.report'")
    return key


def check_document(document: Any) -> bytes:
    """``document`` as compact JSON bytes if it is a JSON object (finite numbers, string
    keys), else ``InvalidInput``; what registries store."""
    import json

    if not isinstance(document, dict):
        raise InvalidInput(f"a model document must be a JSON object, not "
                           f"{type(document).__name__}",
                           hint="pass a dict of JSON values (str, numbers, bools, lists, dicts)")
    try:
        return json.dumps(document, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a model document must be plain JSON: {exc}",
                           hint="convert values to str/int/float/bool/list/dict; "
                                "NaN and infinity are not JSON") from None
