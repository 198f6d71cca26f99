"""Append-only JSON Lines audit log with a SHA-256 hash chain (scheme ``jsonl://``).

``jsonl:///audit.jsonl`` (relative to the mesh's state folder) or ``jsonl:////var/log/a.jsonl``
(absolute); option ``durability=flush`` (default: every append is handed to the OS before it
returns, so it survives a crash of the process) or ``durability=fsync`` (also forced to the
disk, so it survives a crash of the machine).

Each line is one entry, written in a single ``write(2)``::

    {"seq":1,"prev_hash":"000…000","hash":"9f2c…","record":{…}}

* ``seq`` counts from 1 without gaps;
* ``hash = sha256(prev_hash + canonical({"seq": seq, "record": record}))`` as hex, where
  *canonical* is ``orjson.dumps(..., option=OPT_SORT_KEYS)`` (see :func:`chain_hash`);
* ``prev_hash`` of the first entry is 64 zeros (:data:`GENESIS_HASH`).

The chain and the line format are the contract every audit adapter shares; they live in
:mod:`aios_mesh.ports.audit_chain` (``GENESIS_HASH``, ``chain_hash``, ``canonical_record`` and
``verify_file`` are re-exported here).

The bytes of every line are canonical too (keys of ``record`` sorted, no whitespace), so
:func:`verify_file` detects *any* change of a byte, even one that keeps the JSON value (such
as ``1e5`` → ``1E5``).

Crash safety: an append that did not return may leave a *torn* last line (no newline). The
next append (from any process) finds it under the file lock: if the torn bytes are in fact
a complete entry that chains onto the last one, it only adds the missing newline; otherwise
it moves the bytes to the side file ``<name>.torn`` (appended, then the log is truncated
back to its last complete line) and chains onto the last valid entry. A complete record is
never dropped. Until then :func:`verify_file` reports the torn line as ``truncated``.

Several processes may append to one file: an advisory ``fcntl.flock`` is held around each
append, and a writer that finds the file longer than it left it re-reads the tail first.
A process forked after the log was opened reopens the file on its first append (an
inherited descriptor would share the parent's lock). POSIX only; the file must not be
rotated (renamed) under running writers.

What a hash chain cannot show on its own: a rewrite of the *last* entries with recomputed
hashes, or their removal. Keep the head (``seq``, ``hash`` of the latest entry) somewhere
else (the decision record, a periodic anchor) to detect those.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Self

from aios_mesh.backends import BackendURL
from aios_mesh.errors import ConfigError, IntegrityError
from aios_mesh.ports.audit import AuditEntry, VerifyReport
from aios_mesh.ports.audit_chain import (
    GENESIS_HASH,
    ParsedEntry,
    canonical_record,
    chain_hash,
    entry_hash,
    entry_line,
    parse_entry,
    read_lines,
    verify_file,
)
from aios_mesh.ports.base import Feature

__all__ = ["GENESIS_HASH", "JsonlAuditLog", "canonical_record", "chain_hash", "verify_file"]

log = logging.getLogger(__name__)

Durability = Literal["flush", "fsync"]
_BLOCK: Final = 1 << 13  # first tail read; grows x4 until a valid line is in it


def _read_file(path: Path, since: int, limit: int | None, start: int = 0
               ) -> tuple[list[AuditEntry], int]:
    """Entries after ``since`` from byte ``start``; also the offset after the last complete
    line read (a resume point for the next read)."""
    out: list[AuditEntry] = []
    offset = start
    if limit is not None and limit <= 0:
        return out, offset
    for raw, complete in read_lines(path, missing_ok=True, start=start):
        if not complete:
            break
        offset += len(raw) + 1
        p = parse_entry(raw)
        if p is None or p.seq <= since:
            continue
        out.append(AuditEntry(p.seq, p.hash, p.prev_hash, p.record))
        if limit is not None and len(out) >= limit:
            break
    return out, offset


# -- the writer --------------------------------------------------------------------------


def _scan_tail(data: bytes, at_start: bool) -> tuple[int, ParsedEntry | None] | None:
    """Where the complete lines of ``data`` end, and the last valid entry among them.

    ``None`` means "read further back" (``data`` is the end of the file, ``at_start`` says
    whether it starts at the beginning of the file).
    """
    if data.endswith(b"\n"):
        body_end = len(data)
    else:
        nl = data.rfind(b"\n")
        if nl < 0 and not at_start:
            return None
        body_end = nl + 1
    lines = data[:body_end].split(b"\n")[:-1]
    if not at_start and lines:
        lines = lines[1:]  # may be cut in the middle
    for raw in reversed(lines):
        p = parse_entry(raw)
        if p is not None and p.ok:
            return body_end, p
    return (body_end, None) if at_start else None


class JsonlAuditLog:
    """The embedded audit log: one JSON Lines file with a hash chain.

    Args:
        path: the file (created with its folder on the first append).
        durability: ``"flush"`` hands each line to the OS before :meth:`append` returns;
            ``"fsync"`` also forces it to the disk (and runs the append in a worker thread,
            so the event loop does not wait on the disk).
    """

    features: ClassVar[frozenset[Feature]] = frozenset({Feature.FSYNC})

    def __init__(self, path: str | os.PathLike[str], *,
                 durability: str = "flush") -> None:
        if durability not in ("flush", "fsync"):
            raise ConfigError(f"audit durability {durability!r} is not flush or fsync",
                              hint="write jsonl:///audit.jsonl?durability=fsync (or flush)")
        self.path = Path(path)
        self.durability: Durability = "fsync" if durability == "fsync" else "flush"
        self._lock = threading.Lock()
        self._read_hint: tuple[int, int] = (0, 0)  # (seq, byte offset after it)
        self._fd: int | None = None
        self._pid = 0  # the process that opened _fd
        self._closed = False
        self._end = -1  # file size after our last append; -1: re-read the tail
        self._seq = 0
        self._prev = GENESIS_HASH

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """``jsonl:///rel/path.jsonl[?durability=flush|fsync]``; ``durability=`` wins."""
        url = url.with_options(options)
        url.check_options({"durability"}, what="jsonl:// audit")
        return cls(url.resolve_path(base_dir),
                   durability=url.choice_option("durability", ("flush", "fsync"), "flush"))

    # -- writing -------------------------------------------------------------------------

    def _open(self) -> int:
        if self._fd is not None:  # inherited through fork(): the lock would be shared
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self._end = -1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if not existed and self.durability == "fsync":
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._fd, self._pid = fd, os.getpid()
        return fd

    def _resync(self, fd: int, size: int) -> int:
        """Re-read the tail (another writer appended, or a write was torn); → new size."""
        block = _BLOCK
        while True:
            start = max(0, size - block)
            data = os.pread(fd, size - start, start)
            if len(data) != size - start:
                raise OSError(errno.EIO, "short read of the audit log tail")
            found = _scan_tail(data, start == 0)
            if found is not None:
                break
            block *= 4
        body_end, last = found
        torn = data[body_end:]
        if torn:
            p = parse_entry(torn)
            follows = (p is not None and p.ok and p.seq == (last.seq if last else 0) + 1
                       and p.prev_hash == (last.hash if last else GENESIS_HASH))
            if follows and p is not None:
                os.write(fd, b"\n")  # the entry was complete: keep it
                last, size = p, size + 1
            else:
                side = self.path.with_name(self.path.name + ".torn")
                with open(side, "ab") as f:
                    f.write(torn + b"\n")
                    f.flush()
                    if self.durability == "fsync":
                        os.fsync(f.fileno())
                os.ftruncate(fd, start + body_end)
                size = start + body_end
                log.warning("audit log %s: moved a torn last line (%d bytes) to %s",
                            self.path, len(torn), side)
        self._seq, self._prev = (last.seq, last.hash) if last else (0, GENESIS_HASH)
        return size

    def _write_locked(self, record_bytes: bytes) -> tuple[int, str, str]:
        fd = self._fd
        if fd is None or self._pid != os.getpid():
            fd = self._open()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)  # cheaper than fstat; O_APPEND ignores it
            if size != self._end:
                size = self._resync(fd, size)
                self._end = size
            seq, prev = self._seq + 1, self._prev
            hash_ = entry_hash(prev, seq, record_bytes)
            line = entry_line(seq, prev, hash_, record_bytes)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                if self.durability == "fsync":
                    os.fsync(fd)
            except OSError:
                self._end = -1
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # take back a partial line if we can
                raise
            self._end = size + len(line)
            self._seq, self._prev = seq, hash_
            return seq, prev, hash_
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _append_bytes(self, record_bytes: bytes, record: dict[str, Any]) -> AuditEntry:
        with self._lock:
            if self._closed:
                raise IntegrityError(f"the audit log {self.path} is closed",
                                     hint="append before aclose(), or open a new log")
            try:
                seq, prev, hash_ = self._write_locked(record_bytes)
            except OSError as exc:
                self._end = -1
                raise IntegrityError(
                    f"could not append to the audit log {self.path}: {exc}",
                    hint="check the disk (space, permissions, mount); the call fails "
                         "rather than lose its record", path=str(self.path)) from exc
        return AuditEntry(seq, hash_, prev, record)

    @staticmethod
    def _prepare(record: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
        try:
            return canonical_record(record), dict(record)
        except (TypeError, ValueError) as exc:  # orjson.JSONEncodeError is a TypeError
            raise IntegrityError(f"the audit record cannot be written as JSON: {exc}",
                                 hint="records must hold JSON values with string keys "
                                      "(str, int, float, bool, None, lists, dicts)") from exc

    def append_sync(self, record: Mapping[str, Any]) -> AuditEntry:
        """Thread- and process-safe :meth:`append`."""
        return self._append_bytes(*self._prepare(record))

    async def append(self, record: Mapping[str, Any]) -> AuditEntry:
        """Chain and write the record; it is with the OS (``fsync``: on disk) on return.

        Raises ``IntegrityError`` when the line cannot be written.
        """
        record_bytes, copy = self._prepare(record)
        if self.durability == "fsync":
            return await asyncio.to_thread(self._append_bytes, record_bytes, copy)
        return self._append_bytes(record_bytes, copy)

    # -- reading -------------------------------------------------------------------------

    def verify_sync(self) -> VerifyReport:
        """:meth:`verify` without the event loop."""
        return verify_file(self.path, missing_ok=True)

    async def verify(self) -> VerifyReport:
        """Check the whole file (see :func:`verify_file`); a missing file is an empty log."""
        return await asyncio.to_thread(self.verify_sync)

    def read_sync(self, since: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """:meth:`read` without the event loop. A reader that follows the log (the signal
        relay) resumes from where its last read ended instead of rescanning the file."""
        hint_seq, hint_offset = self._read_hint
        start = hint_offset if since >= hint_seq > 0 else 0
        entries, offset = _read_file(self.path, since, limit, start)
        if entries:
            self._read_hint = (entries[-1].seq, offset)
        return entries

    async def read(self, since: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """Entries with ``seq > since`` in file order, at most ``limit``; lines that are
        not entries are skipped (``verify`` reports them)."""
        return await asyncio.to_thread(self.read_sync, since, limit)

    def close(self) -> None:
        """Close the file; later appends raise ``IntegrityError``."""
        with self._lock:
            self._closed = True
            if self._fd is not None:
                fd, self._fd = self._fd, None
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def aclose(self) -> None:
        """Close the file."""
        self.close()
