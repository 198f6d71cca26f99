"""The API key store on both shared states: sqlite files (embedded) and a real PostgreSQL
server (a throw-away database from the ``postgres`` launcher). The same tests run on each."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aios_mesh.errors import BackendUnavailable, ConfigError, NotFound
from aios_mesh.gateway.auth import KeyStore, parse_key
from aios_mesh.gateway.auth.keys import digest
from aios_mesh.ports.quota import QuotaLimits
from aios_mesh.state import SqliteState
from aios_mesh.testing import launcher

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with launcher("postgres")(prefix="aios_mesh_keys") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """``(state, raw_rows)``: a shared state and a way to read the key table behind its
    back."""
    if request.param == "sqlite":
        state = SqliteState(tmp_path)

        def rows() -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(state.path("api_keys"))) as db:
                return db.execute("SELECT * FROM api_keys").fetchall()

        yield state, rows
        return
    from aios_mesh_postgres import PostgresState

    url = request.getfixturevalue("postgres_url")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP TABLE IF EXISTS api_keys")
        admin.execute("DELETE FROM aios_mesh_schema WHERE store = 'api_keys'") \
            if admin.execute("SELECT to_regclass('aios_mesh_schema')").fetchone() != (None,) \
            else None
    pg = PostgresState(url)

    def pg_rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as db:
            return db.execute("SELECT * FROM api_keys").fetchall()

    yield pg, pg_rows
    pg.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(backend: tuple[Any, Any], clock: Clock) -> Iterator[KeyStore]:
    keys = KeyStore(backend[0], clock=clock)
    yield keys
    keys.close()


def test_create_stores_only_the_digest(store: KeyStore, backend: tuple[Any, Any]) -> None:
    record, key = store.create("acme", "billing-bot", scopes=["extract"], roles=["reviewer"],
                               limits=QuotaLimits(calls_per_minute=60))
    parsed = parse_key(key)
    assert parsed is not None and parsed.id == record.id
    rows = backend[1]()
    assert len(rows) == 1
    flat = " ".join(str(v) for v in rows[0])
    assert key not in flat and key.split("_", 2)[2] not in flat  # the secret is nowhere
    assert digest(key) in flat
    got = store.get(record.id)
    assert got == record
    assert got.scopes == frozenset({"extract"}) and got.roles == frozenset({"reviewer"})
    assert got.limits == QuotaLimits(calls_per_minute=60)
    assert "digest" not in repr(got) and record.digest not in repr(got)
    assert got.to_dict()["id"] == f"amk_{record.id}" and "digest" not in got.to_dict()


def test_all_capabilities_no_roles_no_limits(store: KeyStore) -> None:
    record, _ = store.create("acme", "etl")
    got = store.get(record.id)
    assert got is not None
    assert got.scopes is None and got.roles == frozenset() and got.limits is None
    principal = got.principal()
    assert principal.tenant == "acme" and principal.caller == "etl"
    assert principal.may_call("anything") and principal.credential == f"amk_{record.id}"


def test_list_revoke_expire(store: KeyStore, clock: Clock) -> None:
    a, _ = store.create("acme", "a")
    clock.now += 1
    b, _ = store.create("acme", "b", expires_at=clock.now + 60)
    clock.now += 1
    c, _ = store.create("globex", "c")
    assert [r.id for r in store.find()] == [a.id, b.id, c.id]
    assert [r.id for r in store.find("acme")] == [a.id, b.id]
    revoked = store.revoke(f"amk_{a.id}")
    assert revoked.status(clock.now) == "revoked" and revoked.revoked_at == clock.now
    clock.now += 100  # b expired
    assert store.get(b.id).status(clock.now) == "expired"  # type: ignore[union-attr]
    assert [r.id for r in store.find()] == [c.id]
    assert [r.id for r in store.find(include_inactive=True)] == [a.id, b.id, c.id]
    # revoking again keeps the first time
    assert store.revoke(a.id).revoked_at == revoked.revoked_at


def test_bad_input_is_typed(store: KeyStore, clock: Clock) -> None:
    with pytest.raises(NotFound):
        store.revoke("amk_000000000000")
    with pytest.raises(ConfigError, match="not an API key id"):
        store.revoke("not-a-key")
    with pytest.raises(ConfigError, match="unknown role"):
        store.create("acme", "x", roles=["root"])
    with pytest.raises(ConfigError, match="plain name"):
        store.create("", "x")
    with pytest.raises(ConfigError, match="expire"):
        store.create("acme", "x", expires_at=clock.now - 1)
    with pytest.raises(ConfigError):
        store.create("acme", "x", limits=QuotaLimits(calls_per_minute=-1))
    assert store.find(include_inactive=True) == []


def test_replicas_see_each_others_keys(backend: tuple[Any, Any], clock: Clock) -> None:
    """Two stores on the same state (two gateway processes) create concurrently and each
    sees every key."""
    one, two = KeyStore(backend[0], clock=clock), KeyStore(backend[0], clock=clock)
    made: list[str] = []

    def create(store: KeyStore) -> None:
        for i in range(10):
            made.append(store.create("acme", f"c{i}")[0].id)

    threads = [threading.Thread(target=create, args=(s,)) for s in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.id for r in one.find()) == sorted(made) == sorted(r.id for r in two.find())
    one.revoke(made[0])
    assert two.get(made[0]).revoked_at is not None  # type: ignore[union-attr]
    one.close()
    two.close()


def test_a_dead_database_is_backend_unavailable(tmp_path: Path) -> None:
    from aios_mesh_postgres import PostgresState

    from aios_mesh.testing.processes import free_port

    state = PostgresState(f"postgresql://mesh:pw-s3cret@127.0.0.1:{free_port()}/x",
                          connect_timeout_s=1)
    store = KeyStore(state)
    with pytest.raises(BackendUnavailable) as info:
        store.get("0123456789ab")
    assert "s3cret" not in str(info.value)
    state.close()


def test_a_dropped_connection_is_reopened(postgres_url: str, clock: Clock) -> None:
    from aios_mesh_postgres import PostgresState

    state = PostgresState(postgres_url)
    store = KeyStore(state, clock=clock)
    record, _ = store.create("acme", "x")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    # the store's connection and the state's own both died: each failure is typed, and
    # each drops what died, so the store comes back on its own
    for _ in range(2):
        with contextlib.suppress(BackendUnavailable):
            store.get(record.id)
    assert store.get(record.id) == record
    store.close()
    state.close()
