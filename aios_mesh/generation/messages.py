"""The shapes of a conversation: chat messages in, text out."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatInput", "ChatMessage", "TextOutput"]

Role = Literal["system", "user", "assistant", "tool"]


class ChatMessage(BaseModel):
    """One turn of a conversation, as the OpenAI chat format writes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str


class ChatInput(BaseModel):
    """The input of a chat capability: the conversation so far. A capability with this input
    passes the messages to the model as they are (after redaction), after its own system
    prompt if it declares one; it is what the gateway's ``/v1/chat/completions`` calls."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1)


class TextOutput(BaseModel):
    """The output of a free-text generation: what the model wrote."""

    model_config = ConfigDict(extra="forbid")

    text: str
