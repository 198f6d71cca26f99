"""What a generation capability declares about its LLM call."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aios_mesh.generation.prompt import PromptTemplate, is_prompt_uri, parse_prompt_uri

__all__ = ["Generation"]


class Generation(BaseModel):
    """How a capability asks its LLM.

    Args:
        prompt: ``prompts:/NAME@ALIAS`` (a versioned prompt in the registry, resolved like a
            model alias and pinned by ``aios-mesh lock``) or an inline template. ``None``
            for a chat capability (input :class:`~aios_mesh.generation.ChatInput`): the
            caller's messages are the prompt.
        system: a system message put before the rendered prompt or the caller's messages.
        max_tokens: the most completion tokens one call may produce (reserved from the
            tenant's token quota before the call, settled to the actual usage after).
        temperature: sampling temperature (0: the most likely token, reproducible).
        stop: sequences that end the completion.
        context_window: the model's context size in tokens, when the backend cannot say.
        structured: produce the output model as JSON under the backend's constrained
            decoding. Default: on unless the output is
            :class:`~aios_mesh.generation.TextOutput`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str | None = None
    system: str | None = None
    max_tokens: int = Field(256, ge=1, le=1_000_000)
    temperature: float = Field(0.0, ge=0, le=2)
    stop: tuple[str, ...] = ()
    context_window: int | None = Field(None, ge=16)
    structured: bool | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | None) -> str | None:
        if value is not None:
            if is_prompt_uri(value):
                parse_prompt_uri(value)
            else:
                PromptTemplate.parse(value)
        return value

    @property
    def registered(self) -> bool:
        """The prompt is a versioned registry entry (not inline text)."""
        return self.prompt is not None and is_prompt_uri(self.prompt)
