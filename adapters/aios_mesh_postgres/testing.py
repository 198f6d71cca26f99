"""Test helpers for PostgreSQL: throw-away databases and a :class:`Tamperer` that edits the
audit table in SQL.

:func:`postgres_database` (the ``postgres`` launcher of :func:`aios_mesh.testing.launcher`)
creates a database with a unique name on an existing server and drops it on exit::

    with postgres_database() as url:         # postgresql://postgres@127.0.0.1:5432/aios_mesh_…
        audit = load_adapter("audit", url, base_dir=tmp_path)

:class:`PostgresTamperer` is used with :class:`aios_mesh.testing.conformance.audit.AuditTamper`::

    @pytest.fixture
    def tamper(self, adapter):
        return PostgresTamperer(adapter.conninfo, adapter.table)

Each method connects, edits the table behind the adapter's back (as someone with write
access to the table would: ``UPDATE``/``DELETE``/``INSERT``), commits and disconnects.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
from psycopg import sql

from aios_mesh.errors import BackendUnavailable
from aios_mesh.ports.audit_chain import GENESIS_HASH, canonical_record, chain_hash

__all__ = ["PostgresTamperer", "postgres_database"]


@contextlib.contextmanager
def postgres_database(admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres", *,
                      prefix: str = "aios_mesh") -> Iterator[str]:
    """Create a database with a unique name on the server of ``admin_url``; yield its URL
    (``postgresql://user@host:port/NAME``) and drop it on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        raise BackendUnavailable(f"PostgreSQL at {admin_url} is not reachable: {exc}",
                                 hint="start it: pg_ctlcluster --skip-systemctl-redirect "
                                      "$(ls /etc/postgresql) main start") from exc
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


class PostgresTamperer:
    """Edits an audit table in SQL (see the Tamperer protocol of the audit conformance kit).

    The table keys rows by ``seq``, so a row's place *is* its key: ``insert`` renumbers the
    rows after the forged one (``seq + 1``), ``swap`` exchanges the keys of two rows (each
    keeps its hashes and record).
    """

    def __init__(self, conninfo: str, table: str = "audit_log") -> None:
        self.conninfo = conninfo
        self.ident = sql.Identifier(*table.split("."))

    def _run(self, *statements: tuple[sql.Composed, tuple[Any, ...]]) -> None:
        with psycopg.connect(self.conninfo) as conn, conn.transaction():
            for query, params in statements:
                conn.execute(query, params)

    def change(self, seq: int) -> None:
        """Alter the record of ``seq``, keeping its hashes."""
        self._run((sql.SQL("UPDATE {} SET record = (record::jsonb || '{{\"tampered\": true}}'"
                           "::jsonb)::json WHERE seq = %s").format(self.ident), (seq,)))

    def delete(self, seq: int) -> None:
        """Delete the row of ``seq``."""
        self._run((sql.SQL("DELETE FROM {} WHERE seq = %s").format(self.ident), (seq,)))

    def insert(self, after_seq: int) -> None:
        """Forge entry ``after_seq + 1`` linking to ``after_seq``; later rows move up one."""
        with psycopg.connect(self.conninfo) as conn, conn.transaction():
            prev = GENESIS_HASH
            if after_seq:
                row = conn.execute(sql.SQL("SELECT hash FROM {} WHERE seq = %s").format(
                    self.ident), (after_seq,)).fetchone()
                assert row is not None, f"no entry {after_seq}"
                prev = row[0]
            record = {"forged": True}
            seq = after_seq + 1
            conn.execute(sql.SQL("UPDATE {} SET seq = -seq WHERE seq > %s").format(
                self.ident), (after_seq,))
            conn.execute(sql.SQL("UPDATE {} SET seq = 1 - seq WHERE seq < 0").format(
                self.ident), ())
            conn.execute(sql.SQL("INSERT INTO {} (seq, prev_hash, hash, record) "
                                 "VALUES (%s, %s, %s, %s::json)").format(self.ident),
                         (seq, prev, chain_hash(prev, seq, record),
                          orjson.dumps(record).decode()))

    def truncate(self, keep: int) -> None:
        """Delete every row after ``keep``."""
        self._run((sql.SQL("DELETE FROM {} WHERE seq > %s").format(self.ident), (keep,)))

    def rehash(self, seq: int) -> None:
        """Rewrite the record of row ``seq`` and recompute its hash (the chain stays valid
        if it is the last row)."""
        with psycopg.connect(self.conninfo) as conn, conn.transaction():
            row = conn.execute(sql.SQL("SELECT prev_hash, record::text FROM {} WHERE seq = %s"
                                       ).format(self.ident), (seq,)).fetchone()
            assert row is not None, f"no entry {seq}"
            record = {**orjson.loads(row[1]), "tampered": True}
            conn.execute(sql.SQL("UPDATE {} SET record = %s::json, hash = %s WHERE seq = %s"
                                 ).format(self.ident),
                         (canonical_record(record).decode(), chain_hash(row[0], seq, record),
                          seq))

    def swap(self, seq_a: int, seq_b: int) -> None:
        """Exchange the keys of the rows ``seq_a`` and ``seq_b``."""
        q = sql.SQL("UPDATE {} SET seq = %s WHERE seq = %s").format(self.ident)
        self._run((q, (-seq_a, seq_a)), (q, (seq_a, seq_b)), (q, (seq_b, -seq_a)))
