"""Context-window management: which turns of a conversation go into the next prompt.

:func:`trim` keeps the system prompt and the newest turns that fit ``max_tokens`` and drops
the oldest; :func:`window` with ``strategy="summarise"`` instead replaces the oldest turns
with a summary that an LLM capability writes through the mesh (a call with its own decision
record; from a handler, a child call of the run). Both count with the cautious
:func:`~aios_mesh.generation.estimate_tokens` and never return more than ``max_tokens`` —
when the system prompt alone does not fit, they raise
:class:`~aios_mesh.errors.ContextWindowExceeded`. What was dropped or summarised comes back
as a :class:`WindowReport` for the caller to record (``report.audit_entry(...)`` for the
audit log, or ``report.to_dict()`` inside an entry of its own, as the agent runtime does).

    w = trim(store.history(sid, tenant="acme"), 2000, system="You help with orders.")
    result = mesh.invoke("support-chat", {"messages": w.payload()}, tenant="acme")
    await mesh.ports.audit.append(w.report.audit_entry(
        record_id=result.record.record_id, tenant="acme", session=sid))
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aios_mesh.conversations.store import (
    ConversationStore,
    Turn,
    message_tokens,
    output_text,
    summary_message,
)
from aios_mesh.errors import ConfigError, ContextWindowExceeded, InvalidOutput
from aios_mesh.generation.messages import ChatMessage
from aios_mesh.generation.tokens import estimate_tokens
from aios_mesh.result import Result

__all__ = ["DEFAULT_SUMMARY_INSTRUCTIONS", "Invoke", "Strategy", "Summariser", "Summary",
           "Window", "WindowReport", "capability_summariser", "session_window", "trim",
           "window"]

Strategy = Literal["trim", "summarise"]

#: What the summarising capability is asked (its system message).
DEFAULT_SUMMARY_INSTRUCTIONS = (
    "Summarise the conversation below in a few sentences. Keep names, numbers, decisions "
    "and open questions; leave out greetings. Write only the summary.")

_LIST_OVERHEAD = estimate_tokens([])  # what a message list costs beyond its messages


@dataclass(frozen=True, slots=True)
class Summary:
    """A summariser's answer: the text and the decision record of the call that wrote it."""

    text: str
    record_id: str | None = None


#: Writes a summary of ``messages`` (oldest first); :func:`capability_summariser` makes one
#: that calls an LLM capability through the mesh.
Summariser = Callable[[Sequence[ChatMessage]], Awaitable[Summary]]


class Invoke(Protocol):
    """``ctx.invoke`` (a child call of a handler's run) or ``mesh.ainvoke`` with the tenant
    bound (``functools.partial(mesh.ainvoke, tenant="acme")``)."""

    def __call__(self, capability: str, payload: Any, *,
                 attributes: Mapping[str, Any] | None = None) -> Awaitable[Result[Any]]: ...


@dataclass(frozen=True, slots=True)
class WindowReport:
    """What a window did, for the caller to record (no turn text in it).

    Args:
        strategy: ``trim`` or ``summarise``.
        max_tokens: the budget.
        tokens: the estimate of the messages returned (never above ``max_tokens``).
        turns_in: the turns of the history that were candidates (after an earlier summary
            stood in for the turns it covers).
        turns_kept: how many of them went into the messages as they are.
        superseded: turns left out because a stored summary covers them.
        dropped: the ``seq`` of each turn trimmed out.
        summarised: the ``seq`` of each turn (or earlier summary) the new summary replaces.
        summary_record_id: the record of the summarising call.
        summary_seq: where the new summary was stored (set by :func:`session_window`).
        summary_truncated: the summary was cut to fit its share of the budget.
        note: why a summarise window fell back to trimming (no room for a summary).
    """

    strategy: Strategy
    max_tokens: int
    tokens: int
    turns_in: int
    turns_kept: int
    superseded: int = 0
    dropped: tuple[int, ...] = ()
    summarised: tuple[int, ...] = ()
    summary_record_id: str | None = None
    summary_seq: int | None = None
    summary_truncated: bool = False
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON values (numbers and ids: no turn text)."""
        return {"strategy": self.strategy, "max_tokens": self.max_tokens,
                "tokens": self.tokens, "turns_in": self.turns_in,
                "turns_kept": self.turns_kept, "superseded": self.superseded,
                "dropped": list(self.dropped), "summarised": list(self.summarised),
                "summary_record_id": self.summary_record_id, "summary_seq": self.summary_seq,
                "summary_truncated": self.summary_truncated, "note": self.note}

    def audit_entry(self, *, record_id: str | None, tenant: str, session: str
                    ) -> dict[str, Any]:
        """An audit-log entry (``kind`` ``conversation_window``) tying the window to the
        call it was sent with (``record_id``): ``await mesh.ports.audit.append(entry)``.

        Not call attributes: those are part of the policy input (and its decision cache
        key), and a window changes with every call."""
        return {"kind": "conversation_window", "record_id": record_id, "tenant": tenant,
                "session": session, "conversation_window": self.to_dict()}


@dataclass(frozen=True, slots=True)
class Window:
    """The messages to send (system prompt first) and what it took to fit them.

    ``summary`` is a new summary to store (``covers_through`` = the last turn it replaces);
    :func:`session_window` stores it.
    """

    messages: list[ChatMessage]
    report: WindowReport
    summary: Summary | None = None
    covers_through: int | None = None
    kept: tuple[int, ...] = field(default=())

    def payload(self) -> list[dict[str, str]]:
        """The messages as a chat capability's ``messages`` (plain dicts)."""
        return [m.model_dump() for m in self.messages]


def _cost(message: ChatMessage) -> int:
    return message_tokens(message.role, message.content)


def _parts(history: Sequence[Turn], system: str | None
           ) -> tuple[list[ChatMessage], list[tuple[int, ChatMessage]], int]:
    """The pinned messages (the system prompt, stored system turns), the candidates (the
    newest summary, then the turns it does not cover), and how many turns it covers."""
    pinned = [ChatMessage(role="system", content=system)] if system else []
    summaries = [t for t in history if t.kind == "summary"]
    latest = max(summaries, key=lambda t: t.seq) if summaries else None
    covered = latest.covers_through or 0 if latest is not None else 0
    candidates: list[tuple[int, ChatMessage]] = []
    superseded = 0
    if latest is not None:
        candidates.append((latest.seq, ChatMessage.model_validate(latest.as_message())))
    for turn in sorted(history, key=lambda t: t.seq):
        if turn.kind == "summary":
            superseded += turn is not latest
        elif turn.role == "system":
            pinned.append(ChatMessage(role="system", content=turn.content))
        elif turn.seq <= covered:
            superseded += 1
        else:
            candidates.append((turn.seq, ChatMessage(role=turn.role, content=turn.content)))
    return pinned, candidates, superseded


def _suffix(candidates: Sequence[tuple[int, ChatMessage]], budget: int) -> int:
    """Where the longest suffix of ``candidates`` that fits ``budget`` starts."""
    start, used = len(candidates), 0
    while start > 0 and used + _cost(candidates[start - 1][1]) <= budget:
        start -= 1
        used += _cost(candidates[start][1])
    return start


def _budget(pinned: Sequence[ChatMessage], max_tokens: int) -> int:
    if max_tokens < 1:
        raise ConfigError("max_tokens must be at least 1", hint="pass the prompt's budget")
    need = _LIST_OVERHEAD + sum(_cost(m) for m in pinned)
    if need > max_tokens:
        raise ContextWindowExceeded(
            f"the system prompt alone needs about {need} tokens, over the window's "
            f"{max_tokens}", hint="shorten the instructions or raise the token budget",
            needed=need, max_tokens=max_tokens)
    return max_tokens - need


def trim(history: Sequence[Turn], max_tokens: int, *, system: str | None = None) -> Window:
    """Keep the system prompt (``system`` and stored system turns) and the newest turns
    that fit ``max_tokens``; drop the oldest. A contiguous suffix is kept (a turn too large
    to fit ends the window there: the conversation never skips a turn). An earlier stored
    summary stands for the turns it covers and is the first to go.

    Raises :class:`~aios_mesh.errors.ContextWindowExceeded` when the system prompt alone
    is over ``max_tokens``."""
    pinned, candidates, superseded = _parts(history, system)
    budget = _budget(pinned, max_tokens)
    start = _suffix(candidates, budget)
    kept = candidates[start:]
    messages = pinned + [m for _, m in kept]
    report = WindowReport(strategy="trim", max_tokens=max_tokens,
                          tokens=estimate_tokens([m.model_dump() for m in messages]),
                          turns_in=len(candidates), turns_kept=len(kept),
                          superseded=superseded,
                          dropped=tuple(seq for seq, _ in candidates[:start]))
    return Window(messages, report, kept=tuple(seq for seq, _ in kept))


async def window(history: Sequence[Turn], max_tokens: int, *, strategy: Strategy = "trim",
                 system: str | None = None, summariser: Summariser | None = None,
                 summary_tokens: int | None = None) -> Window:
    """The messages for the next prompt, within ``max_tokens``.

    ``trim``: :func:`trim`. ``summarise``: when the history does not fit, the oldest turns
    (and an earlier summary) are replaced by one summary that ``summariser`` writes, given
    ``summary_tokens`` of the budget (default a quarter of it); the newest turns that fit
    the rest are kept as they are. A summary longer than its share is cut to fit
    (``summary_truncated``). When even the shortest summary cannot fit, the window trims
    instead (``note`` says so). Nothing is summarised when everything fits.

    Example::

        w = await window(turns, 1500, strategy="summarise",
                         summariser=capability_summariser(ctx.invoke, "summarise-chat"))
    """
    if strategy == "trim":
        return trim(history, max_tokens, system=system)
    if strategy != "summarise":
        raise ConfigError(f"unknown window strategy {strategy!r}",
                          hint="use 'trim' or 'summarise'")
    if summariser is None:
        raise ConfigError("the summarise strategy needs a summariser",
                          hint="pass summariser=capability_summariser(ctx.invoke, name)")
    pinned, candidates, superseded = _parts(history, system)
    budget = _budget(pinned, max_tokens)
    all_fit = _suffix(candidates, budget) == 0
    share = max_tokens // 4 if summary_tokens is None else summary_tokens
    share = min(max(share, 0), budget)
    empty = _cost(ChatMessage(role="system", content=summary_message("x")))
    if all_fit or share < empty:
        trimmed = trim(history, max_tokens, system=system)
        if all_fit:
            return Window(trimmed.messages, _as_summarise(trimmed.report), kept=trimmed.kept)
        return Window(trimmed.messages, _as_summarise(
            trimmed.report, note=f"no room for a summary ({share} tokens, at least "
                                 f"{empty} needed): trimmed"), kept=trimmed.kept)
    start = _suffix(candidates, budget - share)
    folded, kept = candidates[:start], candidates[start:]
    made = await summariser([m for _, m in folded])
    text, truncated = _fit(made.text, share)
    summary_msg = ChatMessage(role="system", content=summary_message(text))
    messages = [*pinned, summary_msg, *(m for _, m in kept)]
    covers = max(_covered(history, seq) for seq, _ in folded)
    report = WindowReport(
        strategy="summarise", max_tokens=max_tokens,
        tokens=estimate_tokens([m.model_dump() for m in messages]),
        turns_in=len(candidates), turns_kept=len(kept), superseded=superseded,
        summarised=tuple(seq for seq, _ in folded), summary_record_id=made.record_id,
        summary_truncated=truncated)
    return Window(messages, report, summary=Summary(text, made.record_id),
                  covers_through=covers, kept=tuple(seq for seq, _ in kept))


def _covered(history: Sequence[Turn], seq: int) -> int:
    """The last turn ``seq`` stands for: itself, or for a summary the turns it covers."""
    for turn in history:
        if turn.seq == seq and turn.kind == "summary":
            return turn.covers_through or 0
    return seq


def _as_summarise(report: WindowReport, note: str | None = None) -> WindowReport:
    return WindowReport(strategy="summarise", max_tokens=report.max_tokens,
                        tokens=report.tokens, turns_in=report.turns_in,
                        turns_kept=report.turns_kept, superseded=report.superseded,
                        dropped=report.dropped, note=note)


def _fit(text: str, share: int) -> tuple[str, bool]:
    """``text`` cut (at a word where it can be) so its summary message costs ≤ ``share``."""
    text = " ".join(text.split())
    if _cost(ChatMessage(role="system", content=summary_message(text))) <= share:
        return text, False
    lo, hi = 0, len(text)  # the longest prefix that fits: binary search (cost is monotonic)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _cost(ChatMessage(role="system", content=summary_message(text[:mid] + "…"))
                 ) <= share:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    if " " in cut[len(cut) // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip() + "…", True


def capability_summariser(invoke: Invoke, capability: str, *,
                          instructions: str = DEFAULT_SUMMARY_INSTRUCTIONS,
                          max_tokens: int | None = None) -> Summariser:
    """A :data:`Summariser` that asks the chat capability ``capability`` (input
    :class:`~aios_mesh.generation.ChatInput`; output :class:`~aios_mesh.generation.TextOutput`
    or any output with a ``text`` field) through the mesh: the call runs the whole pipeline
    and leaves its own decision record, whose id the summary keeps.

    ``invoke`` is ``ctx.invoke`` inside a handler (the summary is a child call of the run)
    or ``functools.partial(mesh.ainvoke, tenant=...)`` outside one.

    Example::

        summarise = capability_summariser(ctx.invoke, "summarise-chat", max_tokens=96)
    """
    async def summarise(messages: Sequence[ChatMessage]) -> Summary:
        transcript = "\n".join(f"{m.role}: {m.content}" for m in messages)
        payload = {"messages": [{"role": "system", "content": instructions},
                                {"role": "user", "content": transcript}]}
        result = await invoke(capability, payload,
                              attributes=None if max_tokens is None
                              else {"max_tokens": max_tokens})
        if result.output is None:
            raise InvalidOutput(f"the summariser {capability!r} sent its answer to review",
                                hint="a summarising capability must answer without review")
        return Summary(output_text(result.output), result.record.record_id)

    return summarise


async def session_window(store: ConversationStore, session_id: str, *, tenant: str,
                         max_tokens: int, strategy: Strategy = "trim",
                         system: str | None = None, summariser: Summariser | None = None,
                         summary_tokens: int | None = None) -> Window:
    """:func:`window` over a stored session's history; a new summary is appended to the
    session as a ``summary`` turn (with the summarising call's record id and the last turn
    it covers), so the next window starts from it. ``report.summary_seq`` says where.

    Example::

        w = await session_window(store, sid, tenant=ctx.tenant, max_tokens=1500,
                                 strategy="summarise", system=instructions,
                                 summariser=capability_summariser(ctx.invoke, "summarise"))
    """
    history = await asyncio.to_thread(store.history, session_id, tenant=tenant)
    made = await window(history, max_tokens, strategy=strategy, system=system,
                        summariser=summariser, summary_tokens=summary_tokens)
    if made.summary is None or made.covers_through is None:
        return made
    turn = await asyncio.to_thread(
        store.append, session_id, tenant=tenant, role="system", kind="summary",
        content=made.summary.text, record_id=made.summary.record_id,
        covers_through=made.covers_through)
    return dataclasses.replace(made, report=dataclasses.replace(made.report,
                                                                summary_seq=turn.seq))
