"""``[backends] state``: where the mesh's stores keep state. The state folder by default; one
PostgreSQL database shared by every replica when it names one (the machine's server): two
meshes on different state folders see one review queue and one set of API keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aios_mesh import ConfigError, Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.gateway.auth.store import KeyStore
from aios_mesh.state import SqliteState

pytestmark = pytest.mark.integration

SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def database() -> Iterator[str]:
    name = f"aios_mesh_state_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield f"{SERVER}/{name}"
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def replica(folder: Path, state: str | None) -> Mesh:
    backends = {"state": state} if state else {}
    return Mesh(config_from_mapping({"state_dir": str(folder), "tenants": {"acme": {}},
                                     "backends": backends}))


def test_the_state_folder_is_the_default(tmp_path: Path) -> None:
    with replica(tmp_path, None) as mesh:
        assert isinstance(mesh.state, SqliteState) and mesh.state.folder == tmp_path
    with replica(tmp_path, "sqlite://") as mesh:
        assert isinstance(mesh.state, SqliteState) and mesh.state.folder == tmp_path


def test_replicas_share_the_review_queue_and_keys_on_postgresql(tmp_path: Path,
                                                                 database: str) -> None:
    from aios_mesh_postgres import PostgresState

    with replica(tmp_path / "one", database) as one, \
            replica(tmp_path / "two", database) as two:
        assert isinstance(one.state, PostgresState)
        item = one.review_queue().enqueue(record_id="r1", tenant="acme",
                                          capability="triage@1", reason="low confidence",
                                          payload={"text": "x"}, proposed={"label": "a"})
        seen = two.review_queue().list(tenant="acme")
        assert [i.id for i in seen] == [item]
        decided = two.resolve_review(item, approve=True, reviewer="rita")
        assert decided.status == "approved"
        assert one.review_queue().get(item).status == "approved"
        record, _ = KeyStore(one.state).create("acme", "bot")
        assert KeyStore(two.state).get(record.id) is not None
    assert not (tmp_path / "one" / "review.db").exists()  # nothing went to the folder


def test_a_misspelled_state_scheme_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean postgres"):
        replica(tmp_path, "postgress://db/mesh")
