"""Prompt templates with typed variables, and the reference to a registered prompt version.

Templates use MLflow's prompt-registry syntax, ``{{ variable }}``, so a template registered
in MLflow renders here unchanged. A template is text (one user message) or a chat (a list of
``{"role", "content"}`` messages). Its variables must be fields of the capability's input
model: that is what makes them typed (pydantic has validated each value before the template
sees it), and it is checked when the capability is registered or the prompt resolved.

    >>> t = PromptTemplate("Classify: {{ text }}")
    >>> sorted(t.variables)
    ['text']
    >>> t.render({"text": "refund please"})[0].content
    'Classify: refund please'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from aios_mesh.errors import ConfigError, InvalidInput
from aios_mesh.generation.messages import ChatMessage

__all__ = ["PROMPT_SCHEME", "PromptTemplate", "is_prompt_uri", "parse_prompt_uri"]

PROMPT_SCHEME = "prompts:/"
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def is_prompt_uri(value: str) -> bool:
    """Whether ``value`` names a registered prompt (``prompts:/name@alias``)."""
    return value.startswith(PROMPT_SCHEME)


def parse_prompt_uri(uri: str) -> str:
    """``prompts:/name@alias`` or ``prompts:/name/3`` → the registry spec ``name@alias``."""
    spec = uri[len(PROMPT_SCHEME):] if is_prompt_uri(uri) else uri
    if not spec or spec.startswith("/"):
        raise ConfigError(f"{uri!r} names no prompt",
                          hint="write 'prompts:/NAME@ALIAS' or 'prompts:/NAME/VERSION'")
    return spec


class PromptTemplate:
    """A text or chat template with ``{{ variable }}`` placeholders."""

    __slots__ = ("messages", "variables")

    def __init__(self, template: str | Sequence[Mapping[str, str]]) -> None:
        if isinstance(template, str):
            self.messages: tuple[tuple[str, str], ...] = (("user", template),)
        else:
            try:
                self.messages = tuple((str(m["role"]), str(m["content"])) for m in template)
            except (KeyError, TypeError) as exc:
                raise ConfigError("a chat template is a list of {'role', 'content'} messages",
                                  hint="fix the prompt's template") from exc
            if not self.messages:
                raise ConfigError("a chat template needs at least one message")
        self.variables = frozenset(v for _, text in self.messages
                                   for v in _VARIABLE.findall(text))

    @classmethod
    def parse(cls, raw: str) -> PromptTemplate:
        """A template as stored: text, or a JSON list of chat messages."""
        text = raw.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                doc = json.loads(text)
            except ValueError:
                return cls(raw)
            if isinstance(doc, list):
                return cls(doc)
        return cls(raw)

    def check_variables(self, model: type[BaseModel], *, where: str) -> None:
        """Raise :class:`ConfigError` unless every variable is a field of ``model``."""
        unknown = sorted(self.variables - set(model.model_fields))
        if unknown:
            raise ConfigError(
                f"the prompt of {where} uses {', '.join(unknown)}, which "
                f"{model.__name__} has no field for",
                hint=f"template variables must be fields of the input model "
                     f"({', '.join(sorted(model.model_fields)) or 'none'})")

    def render(self, values: Mapping[str, Any]) -> list[ChatMessage]:
        """The messages with every variable replaced by its value (text as is, anything
        else as compact JSON). A variable without a value raises :class:`InvalidInput`."""
        missing = sorted(v for v in self.variables if values.get(v) is None)
        if missing:
            raise InvalidInput(f"the prompt needs {', '.join(missing)}, which the input "
                               "does not give", hint="send a value for every template "
                                                     "variable", variables=missing)
        return [ChatMessage(role=role, content=_VARIABLE.sub(
            lambda m: _text(values[m.group(1)]), text)) for role, text in self.messages]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"),
                                                           default=str)
