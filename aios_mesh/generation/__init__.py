"""The generative path: capabilities answered by an LLM behind the same interface.

A generation capability declares :class:`Generation` (its prompt, ``max_tokens``,
temperature); its input is either chat messages (:class:`ChatInput`) or a typed model whose
fields are the prompt template's variables; its output is text (:class:`TextOutput`) or any
pydantic model, which the backend produces under constrained decoding (a JSON schema).

    class Brief(BaseModel):
        reason: str
        missing_fields: list[str]

    @capability("draft-review-brief", model="gemma-3-270m@champion", serving="llm",
                generate=Generation(prompt="prompts:/review-brief@production", max_tokens=96))
    def draft_review_brief(payload: Invoice) -> Brief: ...

The pipeline renders the prompt (after redaction), checks the context window, reserves
``prompt tokens + max_tokens`` of the tenant's token quota, calls the LLM backend with the
:mod:`wire <aios_mesh.generation.wire>` request, validates the answer (an invalid one is
retried under the retry budget), settles the usage the server reported and records the
prompt version.
"""

from aios_mesh.generation.messages import ChatInput, ChatMessage, TextOutput
from aios_mesh.generation.prompt import PromptTemplate
from aios_mesh.generation.spec import Generation
from aios_mesh.generation.tokens import TokenCounter, estimate_tokens
from aios_mesh.generation.wire import (
    GenerationRequest,
    completion_to_prediction,
    response_format,
    stream_delta,
    usage_of,
)
from aios_mesh.ports.registry import PromptRef

__all__ = ["ChatInput", "ChatMessage", "Generation", "GenerationRequest", "PromptRef",
           "PromptTemplate", "TextOutput", "TokenCounter", "completion_to_prediction",
           "estimate_tokens", "response_format", "stream_delta", "usage_of"]
