"""The audit hash chain and its JSON Lines interchange format: the contract every AuditLog
adapter shares, so a chain written by one backend verifies with another's tools.

* ``hash = sha256(prev_hash + canonical({"seq": seq, "record": record}))`` as hex
  (:func:`chain_hash`), where *canonical* is ``orjson.dumps(..., option=OPT_SORT_KEYS)``
  (:func:`canonical_record`); the first entry's ``prev_hash`` is :data:`GENESIS_HASH`
  (64 zeros).
* One entry per line, keys in this order and no whitespace::

      {"seq":1,"prev_hash":"000…000","hash":"9f2c…","record":{…}}

  (:func:`entry_line`); :func:`parse_entry` reads one back and says whether it is intact
  (its hash matches and its bytes are canonical).
* :func:`verify_file` checks a whole file and reports every ``changed``, ``deleted``,
  ``inserted``, ``reordered``, ``malformed`` or ``truncated`` entry.

The embedded JSONL log (:mod:`aios_mesh.embedded.audit`) writes this format; the PostgreSQL
adapter hashes with the same formula and exports to it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from aios_mesh.errors import IntegrityError, NotFound
from aios_mesh.ports.audit import VerifyProblem, VerifyReport

__all__ = ["GENESIS_HASH", "ParsedEntry", "canonical_record", "chain_hash", "entry_hash",
           "entry_line", "parse_entry", "read_lines", "verify_file"]

#: ``prev_hash`` of the first entry of every chain.
GENESIS_HASH: Final = "0" * 64
_SORT: Final = orjson.OPT_SORT_KEYS
_HEX: Final = frozenset("0123456789abcdef")
_SEQ_RE: Final = re.compile(rb'"seq"\s*:\s*(\d{1,18})')
_KEYS: Final = frozenset({"seq", "prev_hash", "hash", "record"})


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


def entry_line(seq: int, prev_hash: str, hash_: str, record_bytes: bytes) -> bytes:
    """One entry as its canonical line (newline included); ``record_bytes`` from
    :func:`canonical_record`."""
    return (b'{"seq":' + str(seq).encode() + b',"prev_hash":"' + prev_hash.encode()
            + b'","hash":"' + hash_.encode() + b'","record":' + record_bytes + b"}\n")


def entry_hash(prev_hash: str, seq: int, record_bytes: bytes) -> str:
    """:func:`chain_hash` of a record already in canonical bytes."""
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
    return entry_hash(prev_hash, seq, canonical_record(record))


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One line read back by :func:`parse_entry`."""

    seq: int
    prev_hash: str
    hash: str
    ok: bool  # the hash matches and the line is byte-canonical
    record: dict[str, Any]


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


def parse_entry(raw: bytes) -> ParsedEntry | None:
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
    ok = (entry_hash(prev, seq, record_bytes) == hash_
          and entry_line(seq, prev, hash_, record_bytes)[:-1] == raw)
    return ParsedEntry(seq, prev, hash_, ok, record)


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
        p = parse_entry(raw)
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


def read_lines(path: Path, *, missing_ok: bool, start: int = 0
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
    for raw, complete in read_lines(Path(path), missing_ok=missing_ok):
        verifier.feed(raw, complete)
    return verifier.finish()

