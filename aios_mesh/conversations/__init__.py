"""Conversation state: durable, tenant-scoped sessions and the context window of each prompt.

* :class:`ConversationStore` — sessions and their numbered turns on the shared-state seam
  (a sqlite file in the state folder, or PostgreSQL for replicas); a session id of another
  tenant is :class:`~aios_mesh.errors.NotFound`; appends from many processes keep one order.
* :func:`trim` / :func:`window` — which turns fit the next prompt: drop the oldest, or
  replace them with a summary an LLM capability writes through the mesh; a
  :class:`WindowReport` says what was done, for the caller to record.

See ``docs/guides/conversations.md``.
"""

from aios_mesh.conversations.store import (
    MIGRATIONS,
    ConversationStore,
    Session,
    Turn,
    message_tokens,
    output_text,
    summary_message,
)
from aios_mesh.conversations.window import (
    DEFAULT_SUMMARY_INSTRUCTIONS,
    Summariser,
    Summary,
    Window,
    WindowReport,
    capability_summariser,
    session_window,
    trim,
    window,
)

__all__ = ["DEFAULT_SUMMARY_INSTRUCTIONS", "MIGRATIONS", "ConversationStore", "Session",
           "Summariser", "Summary", "Turn", "Window", "WindowReport", "capability_summariser",
           "message_tokens", "output_text", "session_window", "summary_message", "trim",
           "window"]
