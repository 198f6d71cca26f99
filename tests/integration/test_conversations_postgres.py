"""The conversation store's conformance suite (``tests/unit/test_conversations.py``) against a
real PostgreSQL (the ``postgres`` launcher): each store object stands for another replica,
and the concurrency test appends from two processes to one session in the shared database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from aios_mesh_postgres import PostgresState

from aios_mesh.conversations import ConversationStore
from aios_mesh.redaction import RuleRedactor
from aios_mesh.state import SharedState
from aios_mesh.testing import launcher
from tests.unit.test_conversations import ConversationStoreConformance, Opener

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A database of its own for this module on the machine's PostgreSQL."""
    with launcher("postgres")(prefix="aios_mesh_conversations") as url:
        yield url


class TestConversationStorePostgres(ConversationStoreConformance):
    """The same contract on PostgreSQL (a clean slate per test)."""

    @pytest.fixture
    def backend(self, database: str) -> tuple[str, str]:
        return ("postgresql", database)

    @pytest.fixture
    def open_store(self, database: str) -> Iterator[Opener]:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS conversation_sessions, conversation_turns")
            conn.execute("DROP TABLE IF EXISTS aios_mesh_schema")
        opened: list[tuple[ConversationStore, SharedState]] = []

        def make(*, clock: Callable[[], float] | None = None,
                 redact: bool = False) -> ConversationStore:
            state = PostgresState(database)
            options: dict[str, Any] = {} if clock is None else {"clock": clock}
            store = ConversationStore(state, store=self.store_name,
                                      redactor=RuleRedactor() if redact else None, **options)
            opened.append((store, state))
            return store

        yield make
        for store, state in opened:
            store.close()
            state.close()

    def test_the_store_is_on_postgresql(self, open_store: Opener) -> None:
        store = open_store()
        assert isinstance(store.state, PostgresState) and store.state.dialect == "postgresql"
