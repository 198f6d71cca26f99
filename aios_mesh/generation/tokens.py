"""Counting tokens before a call: the adapter's tokenizer where it has one, else an estimate.

A prompt's token count decides two things before anything is spent: whether it fits the
model's context window (with ``max_tokens``) and how much of the tenant's token quota to
reserve. The settlement afterwards uses the usage the server reports; only when it reports
none is the estimate recorded (``usage.estimated``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from aios_mesh.ports.registry import ModelRef

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "TokenCounter", "estimate_tokens"]

#: What a chat template adds around each message (role markers, separators): about 4 tokens
#: in the Gemma, Llama and ChatML templates.
MESSAGE_OVERHEAD_TOKENS = 4
_CHARS_PER_TOKEN = 3  # cautious: English runs ~4 characters a token, code and numbers fewer


def estimate_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """A cautious estimate of the prompt tokens ``messages`` make (never below the truth by
    much for Latin-script text; used where no tokenizer is at hand)."""
    return sum(MESSAGE_OVERHEAD_TOKENS + -(-len(m["content"]) // _CHARS_PER_TOKEN)
               for m in messages) + 2


@runtime_checkable
class TokenCounter(Protocol):
    """Implemented by LLM serving adapters that can count with the model's own tokenizer."""

    async def count_tokens(self, model: ModelRef,
                           messages: Sequence[Mapping[str, str]]) -> int:
        """Prompt tokens ``messages`` make for ``model`` (chat template included)."""
        ...

    def context_window(self, model: ModelRef) -> int | None:
        """The model's context size in tokens, or None when unknown."""
        ...
