"""The PostgreSQL audit log passes the audit conformance suite against a real server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from aios_mesh.backends import load_adapter
from aios_mesh.ports.audit_chain import verify_file
from aios_mesh.testing.conformance.audit import AuditBasic, AuditTamper

pytestmark = pytest.mark.integration

import psycopg  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh database for this module on the machine's PostgreSQL, dropped afterwards."""
    name = f"aios_mesh_audit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
    try:
        yield f"{SERVER}/{name}"
    finally:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class TestPostgresAudit(AuditBasic, AuditTamper):
    @pytest.fixture
    async def adapter(self, database: str, tmp_path: Path) -> AsyncIterator[Any]:
        from aios_mesh_postgres import PostgresAuditLog

        table = f"audit_{uuid.uuid4().hex[:8]}"
        log = load_adapter("audit", f"{database}?table={table}", base_dir=tmp_path)
        assert isinstance(log, PostgresAuditLog)
        yield log
        await log.aclose()

    @pytest.fixture
    def tamper(self, adapter: Any) -> Any:
        from aios_mesh_postgres.testing import PostgresTamperer

        return PostgresTamperer(adapter.conninfo, adapter.table)


class TestPostgresAuditSpecifics:
    """Writers on several connections never fork the chain; the table exports as JSONL."""

    async def test_threads_with_own_loops_never_fork_the_chain(self, database: str,
                                                               tmp_path: Path) -> None:
        from aios_mesh_postgres import PostgresAuditLog

        log = PostgresAuditLog(database, table=f"audit_{uuid.uuid4().hex[:8]}", pool_size=2)

        def writer(n: int) -> list[int]:
            async def run() -> list[int]:
                entries = await asyncio.gather(*(log.append({"w": n, "i": i})
                                                 for i in range(6)))
                return [e.seq for e in entries]
            return asyncio.run(run())

        with ThreadPoolExecutor(max_workers=4) as pool:
            seqs = [s for got in pool.map(writer, range(4)) for s in got]
        assert sorted(seqs) == list(range(1, 25))
        report = await log.verify()
        assert report.ok, report.problems
        assert report.records == 24
        path = tmp_path / "export.jsonl"
        assert await log.export_jsonl(path) == 24
        assert verify_file(path).ok  # the embedded log's own verifier accepts the export
        await log.aclose()

    async def test_numbers_round_trip_exactly(self, database: str) -> None:
        from aios_mesh_postgres import PostgresAuditLog

        log = PostgresAuditLog(database, table=f"audit_{uuid.uuid4().hex[:8]}")
        record = {"big": 1e16, "tiny": 1e-7, "third": 1 / 3, "int": 2**62, "zero": 0.0,
                  "text": "a\u0000b\n✓"}
        await log.append(record)
        assert (await log.read())[0].record == record
        assert (await log.verify()).ok
        await log.aclose()
