"""Server-sent events, as OpenAI-compatible servers stream chat completions.

Parsed here from httpx's ``aiter_lines`` rather than with ``httpx-sse``: that package is not
installed, and chat-completion streams use one field (``data:``) of the format, so a
dependency for it buys nothing. Per the SSE specification an event is its ``data:`` lines
joined by newlines, ended by a blank line; comments (``:ping``) and other fields are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

__all__ = ["DONE", "sse_data"]

#: The data OpenAI-compatible servers send last.
DONE = "[DONE]"


async def sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each event in ``lines`` (an event without data is skipped), :data:`DONE`
    included: a stream that ends without it was cut."""
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                event, data = "\n".join(data), []
                yield event
                if event == DONE:
                    return
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:  # the last event without its blank line
        yield "\n".join(data)
