"""Conformance suite of the audit port (:class:`aios_mesh.ports.audit.AuditLog`).

Mixins expect a fixture ``adapter``: a fresh, empty audit log per test. :class:`AuditTamper`
also needs a fixture ``tamper``: an object (see :class:`Tamperer`) that edits the *backing
store* of that same log behind the adapter's back, the way an attacker with write access
would (a file editor for JSONL, ``UPDATE``/``DELETE`` for a database table)::

    class TestJsonl(AuditBasic, AuditTamper):
        @pytest.fixture
        async def adapter(self, tmp_path):
            log = JsonlAuditLog.from_url(parse_url("jsonl:///audit.jsonl"), base_dir=tmp_path)
            yield log
            await log.aclose()

        @pytest.fixture
        def tamper(self, adapter):
            return JsonlTamperer(adapter.path)

The chain formula is shared by every adapter (:func:`aios_mesh.ports.audit_chain.chain_hash`),
so a chain exported from one backend verifies with another's tools.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest

from aios_mesh.errors import IntegrityError
from aios_mesh.ports.audit import AuditLog
from aios_mesh.ports.audit_chain import GENESIS_HASH, canonical_record, chain_hash, entry_line

__all__ = ["AuditBasic", "AuditTamper", "JsonlTamperer", "Tamperer"]


class Tamperer(Protocol):
    """Edits the backing store of a log; methods may be sync or async.

    * ``change(seq)``: alter the record of entry ``seq``, leaving its stored hashes;
    * ``delete(seq)``: remove entry ``seq``;
    * ``insert(after_seq)``: add a forged entry right after ``after_seq`` that claims seq
      ``after_seq + 1`` and links to entry ``after_seq`` with a correctly computed hash;
    * ``swap(seq_a, seq_b)``: exchange the positions of two entries (each keeps its content).
    """

    def change(self, seq: int) -> Any: ...

    def delete(self, seq: int) -> Any: ...

    def insert(self, after_seq: int) -> Any: ...

    def swap(self, seq_a: int, seq_b: int) -> Any: ...

    def truncate(self, keep: int) -> Any:
        """Cut the tail: keep entries ``1..keep`` only (``0`` empties the log)."""
        ...

    def rehash(self, seq: int) -> Any:
        """Rewrite the record of the *last* entry ``seq`` and recompute its hash, so the
        chain alone still verifies."""
        ...


class JsonlTamperer:
    """:class:`Tamperer` for a JSON Lines audit file; edits the file in place (same inode,
    as an editor with write access would), never through the log's API."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _lines(self) -> list[bytes]:
        return self.path.read_bytes().splitlines(keepends=True)

    def _write(self, lines: list[bytes]) -> None:
        with open(self.path, "r+b") as f:
            f.write(b"".join(lines))
            f.truncate()

    def _index(self, lines: list[bytes], seq: int) -> int:
        for i, line in enumerate(lines):
            if orjson.loads(line)["seq"] == seq:
                return i
        raise LookupError(f"no entry {seq} in {self.path}")

    def change(self, seq: int) -> None:
        """Alter the record of ``seq``, keeping its hashes."""
        lines = self._lines()
        i = self._index(lines, seq)
        doc = orjson.loads(lines[i])
        doc["record"]["tampered"] = True
        lines[i] = orjson.dumps(doc) + b"\n"
        self._write(lines)

    def delete(self, seq: int) -> None:
        """Remove the line of ``seq``."""
        lines = self._lines()
        del lines[self._index(lines, seq)]
        self._write(lines)

    def insert(self, after_seq: int) -> None:
        """Add a well-forged entry (seq ``after_seq + 1``, valid hash) after ``after_seq``."""
        lines = self._lines()
        if after_seq == 0:
            at, prev = 0, GENESIS_HASH
        else:
            at = self._index(lines, after_seq) + 1
            prev = orjson.loads(lines[at - 1])["hash"]
        record = {"forged": True}
        seq = after_seq + 1
        doc = {"seq": seq, "prev_hash": prev, "hash": chain_hash(prev, seq, record),
               "record": record}
        lines.insert(at, orjson.dumps(doc) + b"\n")
        self._write(lines)

    def swap(self, seq_a: int, seq_b: int) -> None:
        """Exchange the lines of ``seq_a`` and ``seq_b``."""
        lines = self._lines()
        a, b = self._index(lines, seq_a), self._index(lines, seq_b)
        lines[a], lines[b] = lines[b], lines[a]
        self._write(lines)

    def truncate(self, keep: int) -> None:
        """Keep the lines of entries ``1..keep``."""
        self._write([line for line in self._lines() if orjson.loads(line)["seq"] <= keep])

    def rehash(self, seq: int) -> None:
        """Rewrite entry ``seq`` (the last one) with a changed record and a valid hash."""
        lines = self._lines()
        i = self._index(lines, seq)
        doc = orjson.loads(lines[i])
        doc["record"]["tampered"] = True
        doc["hash"] = chain_hash(doc["prev_hash"], seq, doc["record"])
        lines[i] = entry_line(seq, doc["prev_hash"], doc["hash"],
                              canonical_record(doc["record"]))
        self._write(lines)


def _record(i: int) -> dict[str, Any]:
    return {"record_id": f"r-{i}", "tenant": "acme", "outcome": "ok", "cost": i * 0.25,
            "usage": {"calls": 1, "tokens": i}, "note": "naïve ✓"}


class AuditBasic:
    """Append and read back; the chain links; verify says ok."""

    async def test_is_an_audit_log(self, adapter: Any) -> None:
        assert isinstance(adapter, AuditLog)
        assert isinstance(adapter.features, frozenset)

    async def test_empty_log_verifies(self, adapter: Any) -> None:
        report = await adapter.verify()
        assert report.ok
        assert report.records == 0
        assert await adapter.read() == []

    async def test_append_chains_entries(self, adapter: Any) -> None:
        entries = [await adapter.append(_record(i)) for i in range(1, 4)]
        assert [e.seq for e in entries] == [1, 2, 3]
        assert entries[0].prev_hash == GENESIS_HASH
        assert entries[1].prev_hash == entries[0].hash
        assert entries[2].prev_hash == entries[1].hash
        assert len({e.hash for e in entries}) == 3

    async def test_hash_formula(self, adapter: Any) -> None:
        first = await adapter.append(_record(1))
        second = await adapter.append(_record(2))
        assert first.hash == chain_hash(GENESIS_HASH, 1, _record(1))
        assert second.hash == chain_hash(first.hash, 2, _record(2))

    async def test_read_round_trip(self, adapter: Any) -> None:
        written = [await adapter.append(_record(i)) for i in range(1, 6)]
        read = await adapter.read()
        assert read == written
        assert [e.record for e in read] == [_record(i) for i in range(1, 6)]

    async def test_read_since_and_limit(self, adapter: Any) -> None:
        for i in range(1, 8):
            await adapter.append(_record(i))
        assert [e.seq for e in await adapter.read(since=3)] == [4, 5, 6, 7]
        assert [e.seq for e in await adapter.read(since=2, limit=2)] == [3, 4]
        assert await adapter.read(since=7) == []
        assert await adapter.read(limit=0) == []

    async def test_verify_ok_after_appends(self, adapter: Any) -> None:
        for i in range(1, 11):
            await adapter.append(_record(i))
        report = await adapter.verify()
        assert report.ok, report.problems
        assert report.records == 10
        assert report.problems == ()

    async def test_concurrent_appends_get_distinct_seqs(self, adapter: Any) -> None:
        entries = await asyncio.gather(*(adapter.append(_record(i)) for i in range(30)))
        assert sorted(e.seq for e in entries) == list(range(1, 31))
        assert (await adapter.verify()).ok

    async def test_unserializable_record_is_refused(self, adapter: Any) -> None:
        with pytest.raises(IntegrityError):
            await adapter.append({"when": object()})
        entry = await adapter.append(_record(1))
        assert entry.seq == 1


class AuditTamper:
    """Every kind of tampering is named with the right seq and kind."""

    async def _fill(self, adapter: Any, n: int = 6) -> None:
        for i in range(1, n + 1):
            await adapter.append(_record(i))
        assert (await adapter.verify()).ok

    async def _found(self, adapter: Any) -> set[tuple[int, str]]:
        report = await adapter.verify()
        assert not report.ok
        assert all(p.message for p in report.problems)
        return {(p.seq, p.kind) for p in report.problems}

    @staticmethod
    async def _do(result: Any) -> None:
        if inspect.isawaitable(result):
            await result

    async def test_changed_record(self, adapter: Any, tamper: Any) -> None:
        await self._fill(adapter)
        await self._do(tamper.change(3))
        assert await self._found(adapter) == {(3, "changed")}

    async def test_changed_first_and_last(self, adapter: Any, tamper: Any) -> None:
        await self._fill(adapter)
        await self._do(tamper.change(1))
        await self._do(tamper.change(6))
        assert await self._found(adapter) == {(1, "changed"), (6, "changed")}

    async def test_deleted_entry(self, adapter: Any, tamper: Any) -> None:
        await self._fill(adapter)
        await self._do(tamper.delete(3))
        assert await self._found(adapter) == {(3, "deleted")}

    async def test_deleted_first_entry(self, adapter: Any, tamper: Any) -> None:
        await self._fill(adapter)
        await self._do(tamper.delete(1))
        assert await self._found(adapter) == {(1, "deleted")}

    async def test_inserted_entry(self, adapter: Any, tamper: Any) -> None:
        await self._fill(adapter)
        await self._do(tamper.insert(3))
        assert await self._found(adapter) == {(4, "inserted")}

    async def test_inserted_at_start(self, adapter: Any, tamper: Any) -> None:
        await self._fill(adapter)
        await self._do(tamper.insert(0))
        assert await self._found(adapter) == {(1, "inserted")}

    async def test_swapped_entries(self, adapter: Any, tamper: Any) -> None:
        await self._fill(adapter)
        await self._do(tamper.swap(2, 5))
        assert await self._found(adapter) == {(2, "reordered"), (5, "reordered")}

    async def test_swapped_neighbours(self, adapter: Any, tamper: Any) -> None:
        await self._fill(adapter)
        await self._do(tamper.swap(3, 4))
        assert await self._found(adapter) == {(3, "reordered"), (4, "reordered")}

    async def test_several_tamperings_at_once(self, adapter: Any, tamper: Any) -> None:
        await self._fill(adapter, 10)
        await self._do(tamper.change(2))
        await self._do(tamper.delete(5))
        await self._do(tamper.insert(7))
        assert await self._found(adapter) == {(2, "changed"), (5, "deleted"),
                                              (8, "inserted")}

    async def test_appends_after_tampering_still_chain(self, adapter: Any,
                                                       tamper: Any) -> None:
        await self._fill(adapter)
        await self._do(tamper.change(2))
        entry = await adapter.append(_record(7))
        assert entry.seq == 7
        assert await self._found(adapter) == {(2, "changed")}
