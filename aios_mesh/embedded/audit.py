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
import hashlib
import logging
import os
import re
import threading
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Self

import orjson

from aios_mesh.backends import BackendURL
from aios_mesh.errors import ConfigError, IntegrityError, NotFound
from aios_mesh.ports.audit import AuditEntry, VerifyProblem, VerifyReport
from aios_mesh.ports.base import Feature

__all__ = ["GENESIS_HASH", "JsonlAuditLog", "canonical_record", "chain_hash", "verify_file"]

log = logging.getLogger(__name__)

GENESIS_HASH: Final = "0" * 64
Durability = Literal["flush", "fsync"]
_SORT: Final = orjson.OPT_SORT_KEYS
_HEX: Final = frozenset("0123456789abcdef")
_SEQ_RE: Final = re.compile(rb'"seq"\s*:\s*(\d{1,18})')
_KEYS: Final = frozenset({"seq", "prev_hash", "hash", "record"})
_BLOCK: Final = 1 << 13  # first tail read; grows x4 until a valid line is in it


def _default(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, set | frozenset):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def canonical_record(record: Mapping[str, Any]) -> bytes:
    """The canonical JSON bytes of a record, exactly as the hash chain covers them."""
    return orjson.dumps(record if isinstance(record, dict) else dict(record),
                        default=_default, option=_SORT)


def _canonical(seq: int, record_bytes: bytes) -> bytes:
    # == orjson.dumps({"seq": seq, "record": record}, option=OPT_SORT_KEYS)
    return b'{"record":' + record_bytes + b',"seq":' + str(seq).encode() + b"}"


def _line(seq: int, prev_hash: str, hash_: str, record_bytes: bytes) -> bytes:
    return (b'{"seq":' + str(seq).encode() + b',"prev_hash":"' + prev_hash.encode()
            + b'","hash":"' + hash_.encode() + b'","record":' + record_bytes + b"}\n")


def _hash(prev_hash: str, seq: int, record_bytes: bytes) -> str:
    # sha256(prev_hash + _canonical(seq, record_bytes)) without copying the record
    h = hashlib.sha256(prev_hash.encode())
    h.update(b'{"record":')
    h.update(record_bytes)
    h.update(b',"seq":' + str(seq).encode() + b"}")
    return h.hexdigest()


def chain_hash(prev_hash: str, seq: int, record: Mapping[str, Any]) -> str:
    """The hash of entry ``seq``: ``sha256(prev_hash + canonical({"seq", "record"}))``.

    Every audit adapter uses this formula, so a chain exported from one backend verifies
    with another's tools.
    """
    return _hash(prev_hash, seq, canonical_record(record))


@dataclass(frozen=True, slots=True)
class _Parsed:
    seq: int
    prev_hash: str
    hash: str
    ok: bool  # the hash matches and the line is byte-canonical
    record: dict[str, Any]


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def _parse(raw: bytes) -> _Parsed | None:
    """One line (without its newline) → entry, or ``None`` when it is not an entry."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.keys() != _KEYS:
        return None
    seq, prev, hash_, record = doc["seq"], doc["prev_hash"], doc["hash"], doc["record"]
    if (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1
            or not _is_hex64(prev) or not _is_hex64(hash_) or not isinstance(record, dict)):
        return None
    record_bytes = orjson.dumps(record, option=_SORT)
    ok = (_hash(prev, seq, record_bytes) == hash_
          and _line(seq, prev, hash_, record_bytes)[:-1] == raw)
    return _Parsed(seq, prev, hash_, ok, record)


# -- verification ------------------------------------------------------------------------


@dataclass(slots=True)
class _Node:
    seq: int
    prev_hash: str
    hash: str
    ok: bool
    pos: int  # index among well-formed entries, in file order


def _guess_seq(raw: bytes, last_seq: int) -> int:
    m = _SEQ_RE.search(raw)
    return int(m.group(1)) if m else last_seq + 1


class _Verifier:
    """Collects line metadata, then walks the chain by its links (not by file order)."""

    def __init__(self) -> None:
        self.nodes: list[_Node] = []
        self.problems: dict[tuple[int, str], VerifyProblem] = {}
        self.unreadable: set[int] = set()  # seqs reported malformed or truncated
        self.last_seq = 0
        self.line_no = 0

    def _add(self, seq: int, kind: Any, message: str) -> None:
        self.problems.setdefault((seq, kind), VerifyProblem(seq, kind, message))

    def feed(self, raw: bytes, complete: bool) -> None:
        self.line_no += 1
        p = _parse(raw)
        if p is None:
            seq = _guess_seq(raw, self.last_seq)
            self.unreadable.add(seq)
            if complete:
                self._add(seq, "malformed",
                          f"line {self.line_no} is not an audit entry (near seq {seq})")
            else:
                self._add(seq, "truncated",
                          f"the last line ({self.line_no}) is torn: a write did not finish; "
                          "the next append moves it to the .torn side file")
            self.last_seq = seq
            return
        if not complete:
            self._add(p.seq, "truncated",
                      f"the last line ({self.line_no}, seq {p.seq}) has no newline; the "
                      "next append completes it")
        self.nodes.append(_Node(p.seq, p.prev_hash, p.hash, p.ok, len(self.nodes)))
        self.last_seq = p.seq

    def finish(self) -> VerifyReport:
        nodes = self.nodes
        children: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            children.setdefault(node.prev_hash, []).append(i)
        order = sorted(range(len(nodes)), key=lambda i: (nodes[i].seq, i))
        seqs = [nodes[i].seq for i in order]
        visited = [False] * len(nodes)

        def has_next(i: int) -> bool:
            return any(not visited[j] for j in children.get(nodes[i].hash, ()))

        chain: list[int] = []
        cur_hash, n = GENESIS_HASH, 0  # n: the seq the chain has reached
        while True:
            kids = [j for j in children.get(cur_hash, ()) if not visited[j]]
            if kids:
                pick = min(kids, key=lambda j: (nodes[j].seq != n + 1, not has_next(j), j))
                n += 1
                if nodes[pick].seq != n:
                    self._add(n, "changed", f"entry {n} carries seq {nodes[pick].seq}")
            else:
                k = bisect_right(seqs, n)
                while k < len(order) and visited[order[k]]:
                    k += 1
                if k == len(order):
                    break
                s = seqs[k]
                group = [order[m] for m in range(k, bisect_right(seqs, s))
                         if not visited[order[m]]]
                pick = min(group, key=lambda j: (not has_next(j), j))
                for missing in range(n + 1, s):
                    if missing not in self.unreadable:
                        self._add(missing, "deleted", f"entry {missing} is missing")
                if s == n + 1 and nodes[pick].ok:
                    if n == 0:
                        self._add(s, "changed", f"entry {s} does not link to the start")
                    else:
                        self._add(n, "changed", f"entry {n} differs from the one entry "
                                                f"{s} was chained to")
                n = s
            visited[pick] = True
            chain.append(pick)
            if not nodes[pick].ok:
                self._add(n, "changed", f"entry {n} does not match its hash")
            cur_hash = nodes[pick].hash
        for i, node in enumerate(nodes):
            if not visited[i]:
                self._add(node.seq, "inserted",
                          f"an entry claiming seq {node.seq} is not part of the chain")
        positions = [nodes[i].pos for i in chain]
        for i, (at, want) in enumerate(zip(positions, sorted(positions), strict=True)):
            if at != want:
                seq = nodes[chain[i]].seq
                self._add(seq, "reordered", f"entry {seq} is out of its place in the file")
        problems = tuple(sorted(self.problems.values(), key=lambda p: (p.seq, p.kind)))
        return VerifyReport(ok=not problems, records=len(nodes), problems=problems)


def _snapshot_lines(path: Path, *, missing_ok: bool, start: int = 0
                    ) -> Iterator[tuple[bytes, bool]]:
    """Lines of the file as it is between two appends: ``(bytes without newline, complete)``,
    from byte ``start`` (which must be the start of a line)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 — closed below
    except FileNotFoundError as exc:
        if missing_ok:
            return
        raise NotFound(f"no audit log at {path}", hint="check the path (the audit URL of "
                       "the mesh config names it)") from exc
    except OSError as exc:
        raise IntegrityError(f"cannot read the audit log {path}: {exc}",
                             hint="check the file's permissions") from exc
    with f:
        try:
            # a shared lock only while taking the size: no append is half-written then
            fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            try:
                size = os.fstat(f.fileno()).st_size
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            left = size - start
            f.seek(start)
            for raw in f:
                if left <= 0:
                    break
                raw = raw[:left]
                left -= len(raw)
                if raw.endswith(b"\n"):
                    yield raw[:-1], True
                else:
                    yield raw, False
        except OSError as exc:
            raise IntegrityError(f"cannot read the audit log {path}: {exc}",
                                 hint="check the file and the disk") from exc


def verify_file(path: str | os.PathLike[str], *, missing_ok: bool = False) -> VerifyReport:
    """Check a JSONL audit file: every problem with its seq and kind.

    Kinds: ``changed`` (an entry does not match its hash, or the hash its successor
    recorded), ``deleted`` (a seq is missing), ``inserted`` (an entry that is not part of
    the chain, e.g. a duplicate seq), ``reordered`` (entries out of their place in the
    file), ``malformed`` (a line that is not an entry), ``truncated`` (a torn last line).
    Raises ``NotFound`` for a missing file unless ``missing_ok``.
    """
    verifier = _Verifier()
    for raw, complete in _snapshot_lines(Path(path), missing_ok=missing_ok):
        verifier.feed(raw, complete)
    return verifier.finish()


def _read_file(path: Path, since: int, limit: int | None, start: int = 0
               ) -> tuple[list[AuditEntry], int]:
    """Entries after ``since`` from byte ``start``; also the offset after the last complete
    line read (a resume point for the next read)."""
    out: list[AuditEntry] = []
    offset = start
    if limit is not None and limit <= 0:
        return out, offset
    for raw, complete in _snapshot_lines(path, missing_ok=True, start=start):
        if not complete:
            break
        offset += len(raw) + 1
        p = _parse(raw)
        if p is None or p.seq <= since:
            continue
        out.append(AuditEntry(p.seq, p.hash, p.prev_hash, p.record))
        if limit is not None and len(out) >= limit:
            break
    return out, offset


# -- the writer --------------------------------------------------------------------------


def _scan_tail(data: bytes, at_start: bool) -> tuple[int, _Parsed | None] | None:
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
        p = _parse(raw)
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
        unknown = sorted((set(options) | set(url.options)) - {"durability"})
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r} for {url.redacted()}",
                              hint="the jsonl:// audit log takes durability=flush|fsync")
        durability = options.get("durability") or url.option("durability", "flush")
        return cls(url.resolve_path(base_dir), durability=str(durability))

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
            p = _parse(torn)
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
            hash_ = _hash(prev, seq, record_bytes)
            line = _line(seq, prev, hash_, record_bytes)
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
