"""The token vault through whole meshes, on real Redis and PostgreSQL servers (and the state
folder's sqlite): tokens minted by one replica map back on another, survive a restart of
every mesh, stay per tenant, and are never stored in clear; a missing or wrong key is a typed
error that decrypts nothing."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from aios_mesh_postgres.testing import postgres_database
from pydantic import BaseModel

from aios_mesh import CapabilitySpec, Mesh
from aios_mesh.config import config_from_mapping
from aios_mesh.errors import ConfigError
from aios_mesh.redaction.vault import VaultKeyError, generate_key
from aios_mesh.testing import launcher

pytestmark = pytest.mark.integration

JANE, BOB = "jane@example.com", "bob@example.org"


class Mail(BaseModel):
    text: str


class Reply(BaseModel):
    text: str


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with launcher("redis")(tmp_path_factory.mktemp("redis")) as server:
        yield f"redis://{server.address}/0"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_database(prefix="aios_mesh_vault_mesh") as url:
        yield url


def _stored_redis(url: str) -> bytes:
    with redis.Redis.from_url(url) as client:
        return b"".join(k + b"".join(f + v for f, v in client.hgetall(k).items())
                        for k in client.scan_iter("aios-mesh:vault:*"))


def _stored_postgres(url: str) -> bytes:
    with psycopg.connect(url) as conn:
        return b"".join(t.encode() + k.encode() + bytes(b) for t, k, b in conn.execute(
            "SELECT tenant, token, blob FROM token_vault"))


@pytest.fixture(params=["redis", "postgres", "state"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[[], bytes]]:
    """The vault URL of each backend and a reader of everything it stores (raw bytes)."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        return url, lambda: _stored_redis(url)
    if request.param == "postgres":
        pg: str = request.getfixturevalue("postgres_url")
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS token_vault")
            conn.execute("DROP TABLE IF EXISTS aios_mesh_schema")
        return pg, lambda: _stored_postgres(pg)
    # "state": the shared state of the meshes, here one state folder's sqlite for both
    db = tmp_path / "common" / "token_vault.db"
    return "state", lambda: db.read_bytes() + b"".join(
        bytes(r[0]) for r in sqlite3.connect(db).execute("SELECT blob FROM token_vault"))


def _spec(seen: list[str]) -> CapabilitySpec:
    def remember(mail: Mail) -> Reply:
        # An external service that remembers: it answers with every text it saw, from any
        # replica, so an answer on one replica holds tokens minted on another.
        seen.append(mail.text)
        return Reply(text=" | ".join(seen))

    return CapabilitySpec(name="remember", input=Mail, output=Reply, handler=remember,
                          external=True)


def _mesh(tmp_path: Path, name: str, vault: str, key_file: Path | None,
          seen: list[str]) -> Mesh:
    state = tmp_path / ("common" if vault == "state" else name)
    config = config_from_mapping({
        "state_dir": str(state), "lock_file": None,
        "tenants": {"acme": {}, "globex": {}},
        "redaction": {"mode": "tokenize", "vault": vault,
                      **({"vault_key_file": str(key_file)} if key_file else {})},
        "telemetry": {"lineage": False, "decision_events": False}})
    return Mesh(config, capabilities=[_spec(seen)])


def _key_file(tmp_path: Path, name: str = "vault.keys") -> Path:
    path = tmp_path / name
    path.write_text(f"# the vault's keys, newest first\n{generate_key()}\n")
    path.chmod(0o600)
    return path


def test_replicas_share_tokens_and_they_survive_a_restart(
        tmp_path: Path, backend: tuple[str, Callable[[], bytes]]) -> None:
    vault, stored = backend
    keys, seen = _key_file(tmp_path), []
    with _mesh(tmp_path, "a", vault, keys, seen) as a, \
            _mesh(tmp_path, "b", vault, keys, seen) as b:
        first = a.invoke("remember", {"text": f"from {JANE}"}, tenant="acme")
        assert first.output.text == f"from {JANE}"
        second = b.invoke("remember", {"text": f"cc {BOB}, {JANE}"}, tenant="acme")
        # b maps back the token a minted; both mint the same token for the same value
        assert second.output.text == f"from {JANE} | cc {BOB}, {JANE}"
        assert JANE not in seen[0] and BOB not in seen[1]
        jane_token = seen[0].removeprefix("from ")
        assert seen[1].endswith(jane_token)
        # another tenant: acme's tokens in its answer stay tokens
        other = b.invoke("remember", {"text": "hi +49 30 1234 5678"}, tenant="globex")
        assert JANE not in other.output.text and BOB not in other.output.text
        assert jane_token in other.output.text and "+49 30 1234 5678" in other.output.text
    raw = stored()
    assert jane_token.encode() in raw or vault == "state"  # the entry is there ...
    for value in (JANE, BOB, "+49 30 1234 5678", "example.com"):
        assert value.encode() not in raw  # ... but never in clear
    with _mesh(tmp_path, "c", vault, keys, seen) as c:  # every mesh restarted
        again = c.invoke("remember", {"text": "and again"}, tenant="acme")
    assert JANE in again.output.text and BOB in again.output.text
    assert again.record.redaction == {"applied": False, "counts": {}}


def test_a_missing_or_wrong_key_is_a_typed_error(
        tmp_path: Path, backend: tuple[str, Callable[[], bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    vault, stored = backend
    monkeypatch.delenv("AIOS_MESH_VAULT_KEYS", raising=False)
    seen: list[str] = []
    with pytest.raises(VaultKeyError, match="needs a key") as info:
        _mesh(tmp_path, "nokey", vault, None, seen)
    assert "vault keygen" in info.value.hint
    with pytest.raises(VaultKeyError, match="cannot be read"):
        _mesh(tmp_path, "nofile", vault, tmp_path / "absent.keys", seen)
    bad = tmp_path / "bad.keys"
    bad.write_text("not-a-key-at-all!\n")
    with pytest.raises(VaultKeyError, match="#1") as info:
        _mesh(tmp_path, "bad", vault, bad, seen)
    assert "not-a-key" not in str(info.value)

    with _mesh(tmp_path, "a", vault, _key_file(tmp_path), seen) as a:
        a.invoke("remember", {"text": f"from {JANE}"}, tenant="acme")
    before = stored()
    with _mesh(tmp_path, "wrong", vault, _key_file(tmp_path, "other.keys"), seen) as wrong, \
            pytest.raises(VaultKeyError, match="lacks") as failed:
        wrong.invoke("remember", {"text": "no pii here, but cc bob@example.org"}, tenant="acme")
    assert JANE not in str(failed.value) and failed.value.record_id
    assert JANE.encode() not in stored() and JANE.encode() not in before


def test_the_key_from_the_environment(tmp_path: Path, redis_url: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_MESH_VAULT_KEYS", f"{generate_key()},{generate_key()}")
    seen: list[str] = []
    with _mesh(tmp_path, "a", redis_url, None, seen) as a:
        out = a.invoke("remember", {"text": f"to {JANE}"}, tenant="acme")
    assert out.output.text == f"to {JANE}" and re.fullmatch(r"to <EMAIL_[0-9a-f]{16}>", seen[0])


def test_a_bad_vault_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no vault store"):
        config_from_mapping({"redaction": {"mode": "tokenize", "vault": "reddis://x"}})
    cfg: dict[str, Any] = {"redaction": {"vault": "redis://127.0.0.1:1/0"}}
    assert config_from_mapping(cfg).redaction.vault == "redis://127.0.0.1:1/0"
