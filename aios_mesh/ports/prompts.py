"""The rules every :class:`~aios_mesh.ports.registry.PromptRegistry` keeps, in one place.

The embedded registry and the MLflow adapter apply the same checks and store templates in the
same canonical text, so a prompt registered in either reads back byte for byte alike and its
``sha256`` (what the lock file pins) does not depend on the backend:

* a name is a bare model-style name (``ticket-triage``, no ``@`` or ``/``);
* ``latest`` and ``v<digits>`` are reserved aliases (as in MLflow): ``latest`` always means
  the highest version;
* a template is text (one user message) or a JSON list of ``{"role", "content"}`` chat
  messages; a chat is stored as compact JSON (:func:`template_text`), so whitespace in the
  file it came from does not make a new digest.

Listing is optional (:class:`ListsPrompts`): ``aios-mesh prompts list`` uses it where a
registry has it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from aios_mesh.errors import ConfigError, InvalidInput
from aios_mesh.generation.prompt import PromptTemplate
from aios_mesh.ports.registry import RESERVED_ALIAS, parse_model_spec

__all__ = [
    "ListsPrompts",
    "PromptInfo",
    "chat_messages",
    "chat_text",
    "check_prompt_alias",
    "check_prompt_name",
    "check_prompt_version",
    "template_sha256",
    "template_text",
]



@dataclass(frozen=True, slots=True)
class PromptInfo:
    """One registered prompt as ``prompts list`` shows it."""

    name: str
    latest_version: str
    aliases: dict[str, str] = field(default_factory=dict)  # alias → version


@runtime_checkable
class ListsPrompts(Protocol):
    """A prompt registry that can list what it holds."""

    async def list_prompts(self) -> list[PromptInfo]: ...


def check_prompt_name(name: str) -> None:
    """Raise :class:`InvalidInput` unless ``name`` is a bare prompt name."""
    try:
        parsed, alias, version = parse_model_spec(name)
    except InvalidInput:
        parsed, alias, version = "", None, None
    if not parsed or alias is not None or version is not None:
        raise InvalidInput(f"{name!r} is not a prompt name",
                           hint="register under a bare name such as 'ticket-triage' "
                                "(letters, digits, '.', '_', '-'; no '@' or '/')")


def check_prompt_alias(name: str, alias: str) -> None:
    """Raise :class:`InvalidInput` for a malformed or reserved alias."""
    try:
        parse_model_spec(f"{name}@{alias}")
    except InvalidInput:
        raise InvalidInput(f"{alias!r} is not an alias",
                           hint="an alias is letters, digits, '_' and '-', e.g. 'production'"
                           ) from None
    if RESERVED_ALIAS.match(alias):
        raise InvalidInput(f"alias {alias!r} is reserved",
                           hint="'latest' always means the newest version and 'v<n>' version "
                                "n; choose another alias such as 'production'")


def check_prompt_version(version: str) -> str:
    """``version`` as the registry writes it (``"007"`` → ``"7"``); :class:`InvalidInput`
    unless it is a number."""
    text = str(version)
    if not text.isdigit():
        raise InvalidInput(f"version {text!r} is not a number", hint="pass the version as '3'")
    return str(int(text))


def chat_messages(template: str) -> list[dict[str, str]] | None:
    """The chat messages of a template given as JSON text, or None for a text template.

    Raises:
        InvalidInput: the template is empty, or a JSON list that is not a chat.
    """
    if not template.strip():
        raise InvalidInput("the prompt template is empty", hint="give the template's text")
    try:
        parsed = PromptTemplate.parse(template)
    except ConfigError as exc:
        raise InvalidInput(f"the prompt template is not a chat: {exc.message}",
                           hint='a chat template is a JSON list of {"role": ..., "content": '
                                '...} messages; anything else is stored as one text message'
                           ) from None
    if len(parsed.messages) == 1 and parsed.messages[0] == ("user", template):
        return None
    return [{"role": role, "content": content} for role, content in parsed.messages]


def template_text(template: str) -> str:
    """The canonical stored text of ``template``: text as given, a chat as compact JSON."""
    messages = chat_messages(template)
    return template if messages is None else chat_text(messages)


def chat_text(messages: Sequence[Mapping[str, str]]) -> str:
    """Chat messages as the compact JSON text every registry stores."""
    return json.dumps([{"role": str(m["role"]), "content": str(m["content"])} for m in messages],
                      ensure_ascii=False, separators=(",", ":"))


def template_sha256(text: str) -> str:
    """The digest the lock file pins for a stored template text."""
    return hashlib.sha256(text.encode()).hexdigest()
