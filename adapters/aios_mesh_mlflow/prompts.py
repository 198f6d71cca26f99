"""The PromptRegistry port over MLflow 3's prompt registry (a part of :class:`MlflowRegistry`).

MLflow keeps prompts beside the models, with versions and aliases of their own, on a sqlite
file and on a tracking server alike. Chat templates are stored as MLflow *chat* prompts (a
list of messages, shown as such in MLflow's UI); :class:`~aios_mesh.ports.registry.PromptRef`
hands them back as compact JSON text (:func:`aios_mesh.ports.prompts.template_text`), so the
digest the lock file pins is the same as the embedded registry's.

Only the version lookups are used (``get_prompt_version``, ``get_prompt_version_by_alias``),
never ``load_prompt``: that one keeps a cache of its own, and the mesh's resolver already
decides how long an alias may be believed (its TTL) and what is pinned (the lock file).
A name is either a model or a prompt in MLflow: registering a prompt under a model's name
(or resolving one as the other) is :class:`~aios_mesh.errors.InvalidInput`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aios_mesh.errors import NotFound
from aios_mesh.ports.prompts import (
    PromptInfo,
    chat_messages,
    chat_text,
    check_prompt_alias,
    check_prompt_name,
    check_prompt_version,
)
from aios_mesh.ports.registry import PromptRef, parse_model_spec

__all__ = ["MlflowPrompts"]

T = TypeVar("T")

_HINT = "register it first (`aios-mesh prompts register NAME --template-file F`)"


def _text(template: Any) -> str:
    """MLflow's template (text, or a list of messages for a chat prompt) → stored text."""
    return template if isinstance(template, str) else chat_text(template)


def _ref(pv: Any, alias: str | None) -> PromptRef:
    return PromptRef(name=str(pv.name), version=str(pv.version), template=_text(pv.template),
                     alias=alias)


class MlflowPrompts:
    """Prompt methods of :class:`~aios_mesh_mlflow.MlflowRegistry` (mixed in; it supplies
    :meth:`_run`, which runs one MLflow call in a thread and translates its errors)."""

    async def _run(self, what: str, fn: Callable[[Any], T], *,
                   not_found_hint: str = _HINT) -> T:  # pragma: no cover - overridden
        raise NotImplementedError

    async def register_prompt(self, name: str, template: str, *,
                              commit_message: str | None = None,
                              tags: dict[str, str] | None = None) -> PromptRef:
        """Add a new version of prompt ``name`` (MLflow creates the prompt if needed)."""
        check_prompt_name(name)
        messages = chat_messages(template)  # InvalidInput for an empty or broken chat
        body: str | list[dict[str, str]] = template if messages is None else messages

        def call(c: Any) -> PromptRef:
            pv = c.register_prompt(name, body, commit_message=commit_message,
                                   tags={str(k): str(v) for k, v in (tags or {}).items()}
                                   or None)
            return _ref(pv, None)

        return await self._run(f"register prompt {name!r}", call)

    async def resolve_prompt(self, spec: str) -> PromptRef:
        """``name@alias`` / ``name/version`` / ``name`` (latest) → :class:`PromptRef`."""
        name, alias, version = parse_model_spec(spec)

        def call(c: Any) -> PromptRef:
            if version is not None:
                pv = c.get_prompt_version(name, int(version))
            else:  # MLflow resolves the reserved alias 'latest' itself
                pv = c.get_prompt_version_by_alias(name, alias or "latest")
            if pv is None:  # the REST store answers a missing version with nothing
                raise NotFound(f"prompt {name!r} has no version {version!r}", hint=_HINT,
                               prompt=name, version=version)
            return _ref(pv, alias)

        hint = (f"check that prompt {name!r} exists and has alias {alias!r} (`aios-mesh "
                f"prompts alias {name} {alias} VERSION`)" if alias is not None else
                f"check that prompt {name!r} and the version exist; {_HINT}")
        return await self._run(f"resolve prompt {spec!r}", call, not_found_hint=hint)

    async def set_prompt_alias(self, name: str, alias: str, version: str) -> None:
        """Point prompt ``name@alias`` at ``version`` (creates or moves the alias)."""
        check_prompt_alias(name, alias)
        number = int((await self.resolve_prompt(f"{name}/{check_prompt_version(version)}")).version)

        def call(c: Any) -> None:
            c.set_prompt_alias(name, alias, number)

        await self._run(f"set prompt alias {name}@{alias} → {number}", call)

    async def list_prompts(self) -> list[PromptInfo]:
        """Every prompt: its newest version and its aliases (a search per prompt and a
        lookup per version: for the CLI, not for the call path)."""

        def call(c: Any) -> list[PromptInfo]:
            names: list[str] = []
            token: str | None = None
            while True:
                page = c.search_prompts(page_token=token)
                names.extend(str(p.name) for p in page)
                token = page.token
                if not token:
                    break
            out = []
            for name in sorted(names):
                numbers = [int(v.version) for v in c.search_prompt_versions(name)]
                if not numbers:
                    continue
                # the search leaves aliases out; a version fetched by number carries them
                aliases = {str(a): str(n) for n in numbers
                           for a in (c.get_prompt_version(name, n).aliases or ())}
                latest = max(numbers)
                out.append(PromptInfo(name, str(latest), dict(sorted(aliases.items()))))
            return out

        return await self._run("list prompts", call)

