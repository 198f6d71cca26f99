"""The review store on both backends of the shared-state seam: the embedded sqlite file and a
real PostgreSQL (the ``postgres`` launcher), where two queue objects stand for two gateway
replicas sharing one queue."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aios_mesh_postgres import PostgresState
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_mesh.errors import InvalidInput, NotFound
from aios_mesh.review import POSTGRES_MIGRATIONS, ReviewQueue
from aios_mesh.state import SqliteState
from aios_mesh.testing import launcher

pytestmark = pytest.mark.integration

Opener = Callable[[], ReviewQueue]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with launcher("postgres")(prefix="aios_mesh_review") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def open_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a queue on the backend (each call is another replica's queue object); every
    test gets a store of its own."""
    opened: list[tuple[ReviewQueue, Any]] = []
    store = f"review_{len(request.node.name) % 97}_{id(request) % 10_000}"
    if request.param == "postgresql":
        url = request.getfixturevalue("database")
        with psycopg.connect(url, autocommit=True) as conn:  # a clean slate per test
            conn.execute("DROP TABLE IF EXISTS review, review_labels")
            conn.execute("DROP TABLE IF EXISTS aios_mesh_schema")

        def make() -> ReviewQueue:
            state = PostgresState(url)
            queue = ReviewQueue(state=state)
            opened.append((queue, state))
            return queue
    else:
        def make() -> ReviewQueue:
            state = SqliteState(tmp_path)
            queue = ReviewQueue(state=state, store=store)
            opened.append((queue, state))
            return queue
    yield make
    for queue, state in opened:
        queue.close()
        state.close()


def _park(queue: ReviewQueue, *, tenant: str = "acme", capability: str = "extract@1",
          confidence: float | None = 0.41) -> str:
    return queue.enqueue(record_id=f"rec-{tenant}", tenant=tenant, capability=capability,
                         reason="confidence 0.410 below 0.8",
                         payload={"text": "Invoice [EMAIL]", "n": 3},
                         proposed={"total": 12.5}, confidence=confidence,
                         resume={"topic": "out", "key": "k"})


def test_an_item_round_trips_with_its_reason_and_confidence(open_queue: Opener) -> None:
    queue = open_queue()
    item = queue.get(_park(queue))
    assert (item.tenant, item.capability, item.status) == ("acme", "extract@1", "pending")
    assert item.payload == {"text": "Invoice [EMAIL]", "n": 3}
    assert item.proposed == {"total": 12.5}
    assert item.resume == {"topic": "out", "key": "k"}
    assert item.confidence == pytest.approx(0.41)
    assert item.reason == "confidence 0.410 below 0.8"
    with pytest.raises(NotFound):
        queue.get("nope")


def test_notes_for_the_reviewer_attach_by_name_and_replace(open_queue: Opener) -> None:
    queue = open_queue()
    item_id = _park(queue)
    assert queue.get(item_id).notes is None
    queue.annotate(item_id, "brief", {"reason": "over the threshold"})
    queue.annotate(item_id, "other", {"n": 1})
    item = queue.annotate(item_id, "brief", {"reason": "vendor unsure"})
    assert item.notes == {"brief": {"reason": "vendor unsure"}, "other": {"n": 1}}
    assert open_queue().get(item_id).notes == item.notes  # durable, seen by another opener
    with pytest.raises(NotFound):
        queue.annotate("nope", "brief", {})


def test_the_list_filters_by_tenant_capability_and_status(open_queue: Opener) -> None:
    queue = open_queue()
    a = _park(queue, tenant="acme", capability="extract@1")
    b = _park(queue, tenant="acme", capability="extract@2")
    c = _park(queue, tenant="globex", capability="extract@1")
    d = _park(queue, tenant="acme", capability="extract_x@1", confidence=None)
    assert [i.id for i in queue.list(tenant="acme", capability="extract")] == [a, b]
    assert [i.id for i in queue.list(tenant="acme", capability="extract@2")] == [b]
    assert [i.id for i in queue.list(capability="extract@1")] == [a, c]
    assert [i.id for i in queue.list(tenant="acme")] == [a, b, d]
    assert [i.id for i in queue.list(tenant="acme", limit=1)] == [a]
    assert queue.get(d).confidence is None
    queue.resolve(a, approve=False, reviewer="ana")
    assert [i.id for i in queue.list(tenant="acme", capability="extract")] == [b]
    assert [i.id for i in queue.list("rejected")] == [a]
    assert len(queue.list(None)) == 4


def test_each_decision_is_kept_as_a_label(open_queue: Opener) -> None:
    queue = open_queue()
    approved, corrected, rejected = (_park(queue) for _ in range(3))
    queue.resolve(approved, approve=True, reviewer="ana")
    queue.resolve(corrected, approve=True, reviewer="ana", output={"total": 99.0},
                  note="typo")
    queue.resolve(rejected, approve=False, reviewer="bo")
    assert queue.get(corrected).final_output == {"total": 99.0}
    labels = {label.review_id: label for label in queue.labels(tenant="acme")}
    assert {k: (v.verdict, v.output, v.labelled_by) for k, v in labels.items()} == {
        approved: ("approved", {"total": 12.5}, "ana"),
        corrected: ("corrected", {"total": 99.0}, "ana"),
        rejected: ("rejected", None, "bo")}
    assert all(label.proposed == {"total": 12.5} for label in labels.values())
    assert queue.labels(tenant="globex") == []
    assert len(queue.labels(capability="extract")) == 3
    assert queue.labels(since="9999") == []
    with pytest.raises(InvalidInput, match="already approved"):
        queue.resolve(approved, approve=False, reviewer="bo")
    assert len(queue.labels()) == 3  # a refused decision leaves no label


def test_two_replicas_share_the_queue_and_one_decision_wins(open_queue: Opener) -> None:
    first, second = open_queue(), open_queue()
    item_id = _park(first)
    assert [i.id for i in second.list(tenant="acme")] == [item_id]  # the other replica sees it
    for _ in range(5):  # two reviewers on two replicas click at once
        contested = _park(first)
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def decide(queue: ReviewQueue, approve: bool, cid: str = contested,
                   gate: threading.Barrier = barrier, seen: list[str] = outcomes) -> None:
            gate.wait()
            try:
                queue.resolve(cid, approve=approve, reviewer="x")
                seen.append("won")
            except InvalidInput:
                seen.append("lost")

        threads = [threading.Thread(target=decide, args=(q, a))
                   for q, a in ((first, True), (second, False))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["lost", "won"]
        assert len([x for x in second.labels() if x.review_id == contested]) == 1
    second.resolve(item_id, approve=True, reviewer="ana")
    assert first.get(item_id).status == "approved"


def test_the_postgres_store_keeps_blobs_as_bytea(database: str) -> None:
    state = PostgresState(database)
    queue = ReviewQueue(state=state)
    try:
        with psycopg.connect(database) as conn:
            row = conn.execute("SELECT data_type FROM information_schema.columns WHERE "
                               "table_name = 'review' AND column_name = 'payload'").fetchone()
        assert row == ("bytea",)
        assert state.version("review") == len(POSTGRES_MIGRATIONS)
    finally:
        queue.close()
        state.close()


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53)
                     | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.dictionaries(st.text(max_size=10), _json, max_size=5),
       capability=st.text(st.characters(codec="utf-8", exclude_characters="@\x00"),
                          min_size=1, max_size=12))
def test_any_payload_and_capability_name_round_trip(tmp_path: Path, payload: dict[str, Any],
                                                    capability: str) -> None:
    queue = ReviewQueue(tmp_path / "review.db")
    try:
        item_id = queue.enqueue(record_id="r", tenant="t", capability=f"{capability}@1",
                                reason="why", payload=payload, proposed=None)
        assert queue.get(item_id).payload == payload
        # a name matches itself only (not another case, nor a wildcard's matches)
        assert item_id in [i.id for i in queue.list(None, capability=capability)]
        assert all(i.capability.split("@")[0] == capability
                   for i in queue.list(None, capability=capability))
    finally:
        queue.close()
