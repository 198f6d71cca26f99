"""Render a generation's prompt, count it, and check it fits, before anything is spent.

Runs after redaction (the template's variables are the redacted input fields) and after the
model is resolved (the serving adapter's tokenizer counts for that model); the quota step
after it reserves ``prompt tokens + max_tokens``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import ContextWindowExceeded, InvalidInput
from aios_mesh.generation.messages import TextOutput
from aios_mesh.generation.prompt import PromptTemplate, parse_prompt_uri
from aios_mesh.generation.tokens import TokenCounter, estimate_tokens
from aios_mesh.generation.wire import GenerationRequest, response_format
from aios_mesh.pipeline.call import Call
from aios_mesh.pipeline.runner import StepBase
from aios_mesh.ports.registry import PromptRef
from aios_mesh.ports.serving import Serving, Usage

__all__ = ["LIMIT_ATTRIBUTES", "PromptStep"]

#: Call attributes a caller may set to ask for less than the capability declares: a lower
#: ``max_tokens`` and another ``temperature`` (the OpenAI face passes a body's own).
LIMIT_ATTRIBUTES = ("max_tokens", "temperature")


class PromptStep(StepBase):
    """Builds the :data:`~aios_mesh.generation.GenerationRequest` a generation sends.

    Args:
        prompts: resolves ``name@alias`` to a registered prompt version (lock file first).
        serving: ``(label, adapter)`` of a serving backend by name.
    """

    name = "prompt"

    def __init__(self, prompts: Callable[[str], Awaitable[PromptRef]],
                 serving: Callable[[str | None], tuple[str, Serving]]) -> None:
        self._prompts = prompts
        self._serving = serving
        self._inline: dict[str, PromptTemplate] = {}
        # (capability, prompt version) → its template, parsed and checked once
        self._registered: dict[tuple[str, str], PromptTemplate] = {}

    def applies(self, spec: CapabilitySpec) -> bool:
        return spec.generate is not None

    async def before(self, call: Call) -> None:
        spec = call.spec
        gen = spec.generate
        assert gen is not None  # applies() let only generations in
        fields: dict[str, Any] = call.payload or {}
        messages: list[dict[str, str]] = []
        if gen.system:
            messages.append({"role": "system", "content": gen.system})
        if gen.prompt is None:  # a chat capability: the caller's messages are the prompt
            messages.extend({"role": m["role"], "content": m["content"]}
                            for m in fields["messages"])
        else:
            canary = spec.canary
            prompt = canary.prompt if call.variant == "canary" and canary is not None \
                and canary.prompt is not None else gen.prompt
            template = await self._template(call, prompt)
            messages.extend(m.model_dump() for m in template.render(fields))
        structured = (gen.structured if gen.structured is not None
                      else not issubclass(spec.output, TextOutput))
        max_tokens, temperature = _limits(call.attributes, gen.max_tokens, gen.temperature)
        request: GenerationRequest = {"messages": messages, "max_tokens": max_tokens,
                                      "temperature": temperature, "structured": structured}
        if gen.stop:
            request["stop"] = list(gen.stop)
        if structured:
            request["response_format"] = response_format(spec.output)
        _, serving = self._serving(spec.serving)
        counter = serving if isinstance(serving, TokenCounter) else None
        model = call.model_ref
        if counter is not None and model is not None:
            tokens = await counter.count_tokens(model, messages)
            window = gen.context_window or counter.context_window(model)
        else:
            tokens, window = estimate_tokens(messages), gen.context_window
        if window is not None and tokens + max_tokens > window:
            raise ContextWindowExceeded(
                f"the prompt is {tokens} tokens; with max_tokens={max_tokens} it needs "
                f"{tokens + max_tokens}, over the model's context window of {window}",
                hint="send a shorter input, or lower max_tokens",
                prompt_tokens=tokens, max_tokens=max_tokens, context_window=window)
        call.variables = fields
        call.payload = dict(request)
        call.prompt_tokens = tokens
        call.estimate = Usage.of_tokens(tokens, max_tokens, estimated=counter is None)

    async def _template(self, call: Call, prompt: str) -> PromptTemplate:
        spec = call.spec
        if not prompt.startswith("prompts:/"):
            found = self._inline.get(prompt)
            if found is None:
                found = self._inline[prompt] = PromptTemplate.parse(prompt)
            return found
        ref = await self._prompts(parse_prompt_uri(prompt))
        call.prompt = ref
        key = (spec.key, ref.uri)
        template = self._registered.get(key)
        if template is None:  # a registered version may name fields the input lacks
            template = PromptTemplate.parse(ref.template)
            template.check_variables(spec.input, where=f"{spec.name} ({ref.uri})")
            self._registered[key] = template
        return template


def _limits(attributes: dict[str, Any], max_tokens: int, temperature: float
            ) -> tuple[int, float]:
    """The call's ``max_tokens`` (a caller may ask for fewer than declared, never more) and
    ``temperature`` (0..2)."""
    asked = attributes.get("max_tokens")
    if asked is not None:
        if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
            raise InvalidInput("max_tokens must be a whole number of at least 1",
                               hint="send max_tokens as an integer, or leave it out")
        max_tokens = min(asked, max_tokens)
    heat = attributes.get("temperature")
    if heat is not None:
        if isinstance(heat, bool) or not isinstance(heat, int | float) or not 0 <= heat <= 2:
            raise InvalidInput("temperature must be a number from 0 to 2",
                               hint="send temperature between 0 and 2, or leave it out")
        temperature = float(heat)
    return max_tokens, temperature
