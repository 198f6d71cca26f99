"""Conversation state (issue 20, item 2): the store's conformance suite on the embedded
sqlite state (the same mixin runs against a real PostgreSQL in
``tests/integration/test_conversations_postgres.py``), and the context window — trim and
summarise — property-tested for the budget it must never exceed. Summaries are written by a
chat capability called through a real mesh, whose decision record the test reads."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_mesh import Mesh
from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.context import CallContext
from aios_mesh.conversations import (
    ConversationStore,
    Summary,
    Turn,
    capability_summariser,
    message_tokens,
    session_window,
    trim,
    window,
)
from aios_mesh.errors import (
    ConfigError,
    ContextWindowExceeded,
    IntegrityError,
    InvalidInput,
    NotFound,
)
from aios_mesh.generation import ChatInput, ChatMessage, TextOutput, estimate_tokens
from aios_mesh.record import DecisionRecord
from aios_mesh.redaction import RuleRedactor
from aios_mesh.state import SharedState, SqliteState

#: Opens a store on the backend under test; each call is another replica's store object.
#: ``clock`` (epoch seconds) drives expiry; ``redact`` gives the store the default redactor.
Opener = Callable[..., ConversationStore]

APPENDS_PER_PROCESS = 40


def _state(kind: str, where: str) -> SharedState:
    if kind == "postgresql":
        from aios_mesh_postgres import PostgresState  # an adapter: only in the PG test

        return PostgresState(where)
    return SqliteState(Path(where))


def append_worker(kind: str, where: str, store: str, session: str, label: str, n: int,
                  start: Any) -> None:
    """Run in another process: ``n`` appends to one session, as fast as it can."""
    state = _state(kind, where)
    conversations = ConversationStore(state, store=store)
    start.wait()
    for i in range(n):
        conversations.append(session, tenant="acme", role="user", content=f"{label}-{i}")
    conversations.close()
    state.close()


def summarise_chat(chat: ChatInput) -> TextOutput:
    """A deterministic stand-in for an LLM: the first words of each line it was asked to
    summarise (a real chat capability whose calls the mesh records)."""
    lines = chat.messages[-1].content.splitlines()
    return TextOutput(text="; ".join(" ".join(x.split()[:3]) for x in lines))


SUMMARISER = CapabilitySpec(name="summarise-chat", input=ChatInput, output=TextOutput,
                            handler=summarise_chat)


class ConversationStoreConformance:
    """The store's contract; a concrete class provides ``open_store`` and ``backend``
    (``(kind, where)`` for a store object in another process)."""

    store_name = "conversations"

    def test_a_session_round_trips(self, open_store: Opener) -> None:
        store = open_store()
        session = store.create("acme", metadata={"channel": "chat", "n": 3})
        again = store.get(session.id, tenant="acme")
        assert again == session
        assert (again.tenant, again.turns, again.metadata) == ("acme", 0,
                                                               {"channel": "chat", "n": 3})
        assert again.created_at.endswith("+00:00") and again.expires_at is None
        assert open_store().get(session.id, tenant="acme") == session  # another replica

    def test_turns_are_numbered_in_order_with_their_record(self, open_store: Opener) -> None:
        store = open_store()
        sid = store.create("acme").id
        said = [("user", "Where is order A-17?", None), ("assistant", "Shipped on Monday.",
                                                          "rec-1"), ("user", "Thanks!", None)]
        turns = [store.append(sid, tenant="acme", role=r, content=c, record_id=rid)
                 for r, c, rid in said]
        assert [t.seq for t in turns] == [1, 2, 3]
        history = open_store().history(sid, tenant="acme")
        assert history == turns
        assert [(t.role, t.content, t.record_id) for t in history] == said
        assert [t.tokens for t in history] == [message_tokens(r, c) for r, c, _ in said]
        assert store.get(sid, tenant="acme").turns == 3
        assert [t.seq for t in store.history(sid, tenant="acme", after=1, limit=1)] == [2]

    def test_another_tenants_session_is_not_found_like_a_missing_one(
            self, open_store: Opener) -> None:
        store = open_store()
        sid = store.create("acme").id
        store.append(sid, tenant="acme", role="user", content="secret plans")
        errors: list[str] = []
        for call in (lambda: store.get(sid, tenant="globex"),
                     lambda: store.history(sid, tenant="globex"),
                     lambda: store.append(sid, tenant="globex", role="user", content="x"),
                     lambda: store.delete(sid, tenant="globex"),
                     lambda: store.get("no-such-session", tenant="acme")):
            with pytest.raises(NotFound) as caught:
                call()
            errors.append(caught.value.message.replace(sid, "ID").replace("no-such-session",
                                                                          "ID"))
        assert len(set(errors)) == 1  # the same words whether it exists elsewhere or not
        assert [t.content for t in store.history(sid, tenant="acme")] == ["secret plans"]
        assert store.sessions("globex") == []

    def test_the_same_id_under_two_tenants_is_two_sessions(self, open_store: Opener) -> None:
        store = open_store()
        store.create("acme", session_id="support-1")
        store.create("globex", session_id="support-1")  # no conflict, nothing revealed
        store.append("support-1", tenant="acme", role="user", content="acme's")
        store.append("support-1", tenant="globex", role="user", content="globex's")
        assert [t.content for t in store.history("support-1", tenant="acme")] == ["acme's"]
        assert [t.content for t in store.history("support-1", tenant="globex")] == [
            "globex's"]
        with pytest.raises(IntegrityError):
            store.create("acme", session_id="support-1")

    def test_bad_turns_are_refused(self, open_store: Opener) -> None:
        store = open_store()
        sid = store.create("acme").id
        with pytest.raises(InvalidInput):
            store.append(sid, tenant="acme", role="wizard", content="x")
        with pytest.raises(InvalidInput):  # a summary must say what it covers
            store.append(sid, tenant="acme", role="system", content="s", kind="summary")
        store.append(sid, tenant="acme", role="user", content="one")
        with pytest.raises(InvalidInput):  # ... and only earlier turns
            store.append(sid, tenant="acme", role="system", content="s", kind="summary",
                         covers_through=2)
        assert store.get(sid, tenant="acme").turns == 1  # the refused append took no number
        with pytest.raises(InvalidInput):
            store.create("acme", metadata={"when": object()})
        with pytest.raises(InvalidInput):
            store.create("acme", ttl_s=0)

    def test_text_is_redacted_before_it_is_stored(self, open_store: Opener) -> None:
        store = open_store(redact=True)
        sid = store.create("acme").id
        turn = store.append(sid, tenant="acme", role="user",
                            content="Mail ana.lopez@example.com about card 4111 1111 1111 1111")
        stored = store.history(sid, tenant="acme")[0].content
        assert stored == turn.content
        assert "ana.lopez@example.com" not in stored and "4111 1111" not in stored

    def test_a_calls_answer_is_appended_with_its_record(self, open_store: Opener,
                                                        tmp_path: Path) -> None:
        store = open_store()
        sid = store.create("acme").id
        with Mesh.local(tmp_path / "mesh", tenants=["acme", "globex"],
                        capabilities=[SUMMARISER]) as mesh:
            result = mesh.invoke("summarise-chat", {"messages": [
                {"role": "user", "content": "alpha beta gamma delta"}]}, tenant="acme")
            other = mesh.invoke("summarise-chat", {"messages": [
                {"role": "user", "content": "x"}]}, tenant="globex")
        turn = store.append_result(sid, result, tenant="acme")
        assert (turn.role, turn.content, turn.record_id) == (
            "assistant", "alpha beta gamma", result.record.record_id)
        with pytest.raises(InvalidInput, match="another tenant"):
            store.append_result(sid, other, tenant="acme")
        assert store.get(sid, tenant="acme").turns == 1

    def test_delete_removes_the_session_and_its_turns(self, open_store: Opener) -> None:
        store = open_store()
        store.create("acme", session_id="s-del")
        store.append("s-del", tenant="acme", role="user", content="forget me")
        store.delete("s-del", tenant="acme")
        with pytest.raises(NotFound):
            store.history("s-del", tenant="acme")
        with pytest.raises(NotFound):
            store.delete("s-del", tenant="acme")
        store.create("acme", session_id="s-del")  # the id is free again, and empty
        assert store.history("s-del", tenant="acme") == []

    def test_sessions_expire_after_their_last_append(self, open_store: Opener) -> None:
        clock = [1_000_000.0]
        store = open_store(clock=lambda: clock[0])
        sid = store.create("acme", ttl_s=60).id
        keep = store.create("acme").id
        clock[0] += 50
        store.append(sid, tenant="acme", role="user", content="still here")  # slides expiry
        clock[0] += 50
        assert store.get(sid, tenant="acme").expires_at == pytest.approx(1_000_110.0)
        clock[0] += 11
        for call in (lambda: store.get(sid, tenant="acme"),
                     lambda: store.append(sid, tenant="acme", role="user", content="late")):
            with pytest.raises(NotFound):
                call()
        assert [s.id for s in store.sessions("acme")] == [keep]
        assert store.expire(tenant="globex") == 0
        assert store.expire() == 1
        assert store.expire() == 0
        assert store.get(keep, tenant="acme").id == keep

    def test_appends_from_two_processes_keep_order_and_lose_nothing(
            self, open_store: Opener, backend: tuple[str, str]) -> None:
        store = open_store()
        sid = store.create("acme").id
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Event()
        workers = [ctx.Process(target=append_worker, args=(
            *backend, self.store_name, sid, label, APPENDS_PER_PROCESS, start))
            for label in ("left", "right")]
        for w in workers:
            w.start()
        start.set()
        for w in workers:
            w.join(120)
            assert w.exitcode == 0
        history = store.history(sid, tenant="acme")
        n = 2 * APPENDS_PER_PROCESS
        assert [t.seq for t in history] == list(range(1, n + 1))
        for label in ("left", "right"):
            mine = [t.content for t in history if t.content.startswith(label)]
            assert mine == [f"{label}-{i}" for i in range(APPENDS_PER_PROCESS)]
        assert store.get(sid, tenant="acme").turns == n
        labels = [t.content.split("-")[0] for t in history]
        # interleaved, not one after the other (both ran at once)
        assert sum(a != b for a, b in itertools.pairwise(labels)) >= 1

    def test_a_summary_is_a_recorded_call_and_a_stored_turn(
            self, open_store: Opener, tmp_path: Path) -> None:
        store = open_store()
        sid = store.create("acme").id
        for i in range(12):
            store.append(sid, tenant="acme", role="user" if i % 2 == 0 else "assistant",
                         content=f"turn number {i} " + "words " * 20)
        records: list[DecisionRecord] = []
        with Mesh.local(tmp_path / "mesh", tenants=["acme"],
                        capabilities=[SUMMARISER]) as mesh:
            mesh.sinks.append(lambda record, _doc: records.append(record))
            summarise = capability_summariser(
                functools.partial(mesh.ainvoke, tenant="acme"), "summarise-chat")
            first = mesh.run_sync(session_window(
                store, sid, tenant="acme", max_tokens=200, strategy="summarise",
                system="Be brief.", summariser=summarise))
            second = mesh.run_sync(session_window(
                store, sid, tenant="acme", max_tokens=200, strategy="summarise",
                system="Be brief.", summariser=summarise))
            mesh.flush()
        report = first.report
        assert report.summary_seq == 13 and report.summarised and report.tokens <= 200
        assert first.messages[1].content.startswith("Summary of the earlier conversation:")
        assert next(r.record_id for r in records if r.capability == "summarise-chat") == \
            report.summary_record_id
        stored = store.history(sid, tenant="acme")[-1]
        assert (stored.kind, stored.role, stored.covers_through, stored.record_id) == (
            "summary", "system", max(report.summarised), report.summary_record_id)
        # the next window starts from the stored summary: what it covers is superseded
        assert second.report.superseded >= len(report.summarised)
        assert second.report.tokens <= 200


class TestConversationStoreSqlite(ConversationStoreConformance):
    """The conformance suite on the embedded state (a sqlite file in the state folder)."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> tuple[str, str]:
        return ("sqlite", str(tmp_path / "state"))

    @pytest.fixture
    def open_store(self, backend: tuple[str, str]) -> Iterator[Opener]:
        opened: list[tuple[ConversationStore, SharedState]] = []

        def make(*, clock: Callable[[], float] | None = None,
                 redact: bool = False) -> ConversationStore:
            state = _state(*backend)
            options: dict[str, Any] = {} if clock is None else {"clock": clock}
            store = ConversationStore(state, store=self.store_name,
                                      redactor=RuleRedactor() if redact else None, **options)
            opened.append((store, state))
            return store

        yield make
        for store, state in opened:
            store.close()
            state.close()


def test_for_mesh_uses_the_mesh_state_and_redactor(tmp_path: Path) -> None:
    with Mesh.local(tmp_path, tenants=["acme"]) as mesh:
        store = ConversationStore.for_mesh(mesh)
        assert store.state is mesh.state and store.redactor is mesh.parts.redactor
        sid = store.create("acme").id
        store.append(sid, tenant="acme", role="user", content="ana.lopez@example.com")
        assert "ana.lopez" not in store.history(sid, tenant="acme")[0].content
        store.close()
    assert (tmp_path / "conversations.db").exists()


# -- the context window ---------------------------------------------------------------------

def _turns(spec: Sequence[tuple[str, int]]) -> list[Turn]:
    return [Turn("s", i, role, "w" * size, message_tokens(role, "w" * size))  # type: ignore[arg-type]
            for i, (role, size) in enumerate(spec, 1)]


def _tokens(messages: Sequence[ChatMessage]) -> int:
    return estimate_tokens([m.model_dump() for m in messages])


HISTORIES = st.lists(st.tuples(st.sampled_from(["user", "assistant"]),
                               st.integers(0, 400)), max_size=30)
SYSTEMS = st.one_of(st.none(), st.text(min_size=1, max_size=300))


@given(HISTORIES, st.integers(1, 800), SYSTEMS)
@settings(max_examples=300, deadline=None)
def test_trim_fits_the_budget_and_keeps_the_newest_turns(
        spec: list[tuple[str, int]], max_tokens: int, system: str | None) -> None:
    history = _turns(spec)
    system_alone = estimate_tokens([{"role": "system", "content": system}] if system else [])
    if system_alone > max_tokens:
        with pytest.raises(ContextWindowExceeded):
            trim(history, max_tokens, system=system)
        return
    w = trim(history, max_tokens, system=system)
    assert _tokens(w.messages) == w.report.tokens <= max_tokens
    if system:
        assert w.messages[0] == ChatMessage(role="system", content=system)
    seqs = [t.seq for t in history]
    assert list(w.report.dropped) + list(w.kept) == seqs  # dropped = oldest, kept = newest
    if w.report.dropped:  # the next older turn would not have fitted
        older = history[w.report.dropped[-1] - 1]
        assert w.report.tokens + older.tokens > max_tokens
    assert trim(history, max_tokens, system=system) == w  # deterministic


async def _echo(messages: Sequence[ChatMessage]) -> Summary:
    """A summariser whose text grows with what it is given (so it often must be cut)."""
    return Summary(" ".join(f"{m.role}:{len(m.content)}" for m in messages) * 3, "rec-s")


@given(HISTORIES, st.integers(1, 800), SYSTEMS, st.one_of(st.none(), st.integers(0, 400)))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_summarise_fits_the_budget_and_accounts_for_every_turn(
        spec: list[tuple[str, int]], max_tokens: int, system: str | None,
        share: int | None) -> None:
    history = _turns(spec)
    run = functools.partial(window, history, max_tokens, strategy="summarise", system=system,
                            summariser=_echo, summary_tokens=share)
    system_alone = estimate_tokens([{"role": "system", "content": system}] if system else [])
    if system_alone > max_tokens:
        with pytest.raises(ContextWindowExceeded):
            asyncio.run(run())
        return
    w = asyncio.run(run())
    assert _tokens(w.messages) == w.report.tokens <= max_tokens
    r = w.report
    seqs = [t.seq for t in history]
    assert list(r.summarised) + list(r.dropped) + list(w.kept) == seqs
    assert not (r.summarised and r.dropped)
    if r.summarised:
        assert w.summary is not None and w.covers_through == r.summarised[-1]
        assert r.summary_record_id == "rec-s"
        assert w.messages[1 if system else 0].content.endswith(w.summary.text)
    if not r.summarised and not r.dropped:
        assert w.summary is None  # it all fitted: nothing was summarised
    assert asyncio.run(run()) == w  # deterministic


@given(HISTORIES, st.integers(60, 800))
@settings(max_examples=100, deadline=None)
def test_a_stored_summary_stands_for_the_turns_it_covers(spec: list[tuple[str, int]],
                                                        max_tokens: int) -> None:
    history = _turns(spec)
    w = asyncio.run(window(history, max_tokens, strategy="summarise", summariser=_echo))
    if w.summary is None:
        return
    assert w.covers_through is not None
    stored = Turn("s", len(history) + 1, "system", w.summary.text,
                  message_tokens("system", w.summary.text), "rec-s", "summary",
                  w.covers_through)
    again = trim([*history, stored], max_tokens)
    assert again.report.superseded == w.covers_through
    # the summary (if kept) comes first, then only turns it does not cover
    assert all(seq > w.covers_through for seq in again.kept if seq != stored.seq)
    assert again.report.tokens <= max_tokens


def test_stored_system_turns_are_pinned_and_never_trimmed() -> None:
    history = [Turn("s", 1, "system", "Always answer in French.", 12),
               *_turns([("user", 300), ("assistant", 300), ("user", 30)])[0:3]]
    history[1:] = [Turn("s", t.seq + 1, t.role, t.content, t.tokens) for t in history[1:]]
    w = trim(history, 60)
    assert w.messages[0] == ChatMessage(role="system", content="Always answer in French.")
    assert w.report.dropped == (2, 3) and w.kept == (4,)


async def test_no_summariser_or_an_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        await window(_turns([("user", 10)]), 100, strategy="summarise")
    with pytest.raises(ConfigError):
        await window(_turns([("user", 10)]), 100, strategy="forget")  # type: ignore[arg-type]


def test_a_summary_from_inside_a_handler_is_a_child_call_of_the_run(
        tmp_path: Path) -> None:
    """What an agent does: the summary call's record names the run as its parent."""
    store_box: list[ConversationStore] = []

    async def chat_with_memory(chat: ChatInput, ctx: CallContext) -> TextOutput:
        store = store_box[0]
        sid = chat.messages[0].content
        w = await session_window(store, sid, tenant=ctx.tenant, max_tokens=120,
                                 strategy="summarise",
                                 summariser=capability_summariser(ctx.invoke,
                                                                  "summarise-chat"))
        return TextOutput(text=str(w.report.summary_record_id))

    agentish = CapabilitySpec(name="chat-with-memory", input=ChatInput, output=TextOutput,
                              handler=chat_with_memory)
    records: list[DecisionRecord] = []
    with Mesh.local(tmp_path, tenants=["acme"], capabilities=[agentish, SUMMARISER]) as mesh:
        mesh.sinks.append(lambda record, _doc: records.append(record))
        store = ConversationStore.for_mesh(mesh)
        store_box.append(store)
        sid = store.create("acme").id
        for i in range(10):
            store.append(sid, tenant="acme", role="user", content=f"message {i} " * 10)
        result = mesh.invoke("chat-with-memory",
                             {"messages": [{"role": "user", "content": sid}]}, tenant="acme")
        mesh.flush()
        store.close()
    assert result.output is not None
    child = next(r for r in records if r.capability == "summarise-chat")
    assert child.record_id == result.output.text
    assert child.parent is not None and child.parent["run_id"] == result.record.record_id


def test_the_window_report_goes_into_the_audit_log(tmp_path: Path) -> None:
    with Mesh.local(tmp_path, tenants=["acme"], capabilities=[SUMMARISER]) as mesh:
        store = ConversationStore.for_mesh(mesh)
        sid = store.create("acme").id
        for i in range(8):
            store.append(sid, tenant="acme", role="user", content=f"turn {i} " * 12)
        w = trim(store.history(sid, tenant="acme"), 90, system="Be brief.")
        result = mesh.invoke("summarise-chat", {"messages": w.payload()}, tenant="acme")
        mesh.run_sync(mesh.ports.audit.append(w.report.audit_entry(
            record_id=result.record.record_id, tenant="acme", session=sid)))
        store.close()
    entries = [json.loads(x)["record"] for x in
               (tmp_path / "audit.jsonl").read_text().splitlines()]
    entry = next(e for e in entries if e.get("kind") == "conversation_window")
    assert entry["record_id"] == result.record.record_id and entry["session"] == sid
    assert entry["conversation_window"]["dropped"] == list(w.report.dropped) != []
    assert "turn 0" not in json.dumps(entry)  # numbers and ids, never the text
