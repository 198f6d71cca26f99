"""Anchoring the audit log and checking it against its anchors.

:class:`Anchorer` signs checkpoints and rebaselines; it walks the log from the latest anchor,
checking that every entry chains onto the one before (recomputed hash included), and refuses
to sign over a log that no longer holds that anchor — an anchor never launders tampering.

:func:`verify_anchored` checks a log against the latest anchor signed by the configured key:
the chain as :meth:`AuditLog.verify` sees it, plus what the chain alone cannot show —
``truncated`` (the log ends before the anchored seq), ``emptied``, ``rewritten`` (the anchored
seq holds another hash) — and the records after the anchor as *unanchored*: they may be honest
records written since, or a forged append; nothing vouches for them yet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from aios_mesh.anchoring.keys import AnchorSigner, AnchorVerifier
from aios_mesh.errors import IntegrityError, InvalidInput
from aios_mesh.ports.anchor import (
    Anchor,
    AnchorAheadError,
    AnchorMismatchError,
    AnchorSignatureError,
    AnchorStore,
)
from aios_mesh.ports.audit import AuditLog, VerifyReport
from aios_mesh.ports.audit_chain import GENESIS_HASH, chain_hash

__all__ = ["AnchorProblem", "AnchoredReport", "Anchorer", "effective_anchors",
           "verify_anchored"]

_log = logging.getLogger("aios_mesh.anchoring")
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class AnchorProblem:
    """Something the anchors show that the chain alone does not."""

    seq: int
    kind: Literal["truncated", "emptied", "rewritten", "bad-signature"]
    message: str


@dataclass(frozen=True, slots=True)
class AnchoredReport:
    """The chain's own report, the anchor it was checked against and what that showed.

    ``anchored``: records ``1..anchored`` are vouched for by a signed anchor (0: none).
    ``unanchored``: ``(first, last)`` seq of the records after the anchor, or ``None``.
    """

    chain: VerifyReport
    anchor: Anchor | None
    problems: tuple[AnchorProblem, ...] = ()
    anchored: int = 0
    unanchored: tuple[int, int] | None = None
    anchors_read: int = field(default=0)

    @property
    def ok(self) -> bool:
        """No tampering found (records may still be unanchored)."""
        return self.chain.ok and not self.problems

    @property
    def fully_anchored(self) -> bool:
        """Intact, and every record is vouched for by an anchor."""
        return self.ok and self.unanchored is None and self.anchor is not None


def effective_anchors(anchors: list[Anchor], verifier: AnchorVerifier
                      ) -> tuple[list[Anchor], list[AnchorSignatureError]]:
    """The anchors that count, oldest first — those signed by the verifier's key, from the
    latest rebaseline on (it supersedes what came before) — and the signature errors of the
    others. Raises the first ``AnchorSignatureError`` when no anchor is validly signed."""
    valid: list[Anchor] = []
    bad: list[AnchorSignatureError] = []
    for anchor in anchors:
        try:
            valid.append(verifier.check(anchor))
        except AnchorSignatureError as exc:
            bad.append(exc)
    if bad and not valid:
        raise bad[0]
    start = max((i for i, a in enumerate(valid) if a.kind == "rebaseline"), default=0)
    return valid[start:], bad


async def _entry_hash(audit: AuditLog, seq: int) -> str | None:
    """The hash of entry ``seq`` in the log, or None when the log does not hold it."""
    if seq == 0:
        return GENESIS_HASH
    found = await audit.read(since=seq - 1, limit=1)
    return found[0].hash if found and found[0].seq == seq else None


async def _check_held(audit: AuditLog, anchor: Anchor) -> None:
    held = await _entry_hash(audit, anchor.seq)
    if held is None:
        raise AnchorAheadError(
            f"the latest anchor vouches for seq {anchor.seq} ({anchor.at}) but the audit log "
            "ends before it: its tail was cut, or it was restored from an older copy",
            hint="run `aios-mesh audit verify`; if the log was restored on purpose, record it "
                 "with `aios-mesh audit rebaseline --reason ...`", seq=anchor.seq)
    if held != anchor.head:
        raise AnchorMismatchError(
            f"entry {anchor.seq} of the audit log is not the one anchored at {anchor.at}: the "
            "log was rewritten, or restored from another copy",
            hint="run `aios-mesh audit verify`; if the log was restored on purpose, record it "
                 "with `aios-mesh audit rebaseline --reason ...`", seq=anchor.seq)


def _cut(latest: Anchor, held: int) -> AnchorProblem:
    if held == 0:
        return AnchorProblem(latest.seq, "emptied", (
            f"the log is empty, but an anchor of {latest.at} vouches for {latest.seq} records"))
    return AnchorProblem(latest.seq, "truncated", (
        f"the log holds {held} records, but an anchor of {latest.at} vouches for {latest.seq}: "
        "its tail was cut (or it was restored from an older copy without a rebaseline)"))


async def verify_anchored(audit: AuditLog, store: AnchorStore,
                          verifier: AnchorVerifier) -> AnchoredReport:
    """Check ``audit`` against the latest anchor of ``store`` signed by ``verifier``'s key.

    Raises ``AnchorSignatureError`` when the store holds anchors but none signed by that key.
    """
    chain = await audit.verify()
    anchors = await store.list()
    live, bad = effective_anchors(anchors, verifier)
    problems = [AnchorProblem(e.details.get("seq", 0), "bad-signature", e.message)
                for e in bad]
    if not live:
        everything = (1, chain.records) if chain.records else None
        return AnchoredReport(chain, None, tuple(problems), 0, everything, len(anchors))
    latest = live[-1]
    matched = True
    if latest.seq == 0:  # a rebaseline of an empty log: everything since is unanchored
        rest = await audit.read()
    else:
        tail = await audit.read(since=latest.seq - 1)
        first = tail[0] if tail and tail[0].seq == latest.seq else None
        rest = tail[1:] if first is not None else []
        matched = first is not None and first.hash == latest.head
        if first is None:
            problems.append(_cut(latest, chain.records))
        elif not matched:
            kept = 0
            for older in reversed(live[:-1]):
                if await _entry_hash(audit, older.seq) == older.head:
                    kept = older.seq
                    break
            problems.append(AnchorProblem(latest.seq, "rewritten", (
                f"entry {latest.seq} is not the one anchored at {latest.at}: the log was "
                f"rewritten after seq {kept} (the newest anchor it still matches)")))
    anchored = latest.seq if matched else 0
    unanchored = (rest[0].seq, rest[-1].seq) if rest and matched else None
    return AnchoredReport(chain, latest, tuple(problems), anchored, unanchored, len(anchors))


class Anchorer:
    """Signs anchors of one audit log into one store.

    Args:
        audit: the log (an adapter of its own: it reads forward from the latest anchor).
        store: where anchors go.
        signer: the private key.
        verifier: the key anchors are checked with (default: the signer's public key).
    """

    def __init__(self, audit: AuditLog, store: AnchorStore, signer: AnchorSigner,
                 verifier: AnchorVerifier | None = None) -> None:
        self.audit = audit
        self.store = store
        self.signer = signer
        self.verifier = verifier or AnchorVerifier(signer.public_key())
        self.latest: Anchor | None = None
        self._pos: tuple[int, str] | None = None  # (seq, hash) the walk has reached

    async def refresh(self) -> Anchor | None:
        """Read the store again; check the log still holds the latest anchor and restart the
        walk there. Raises ``AnchorAheadError``/``AnchorMismatchError`` when it does not."""
        live, _bad = effective_anchors(await self.store.list(), self.verifier)
        self.latest = live[-1] if live else None
        self._pos = None
        if self.latest is not None:
            await _check_held(self.audit, self.latest)
            self._pos = (self.latest.seq, self.latest.head)
        return self.latest

    @property
    def pending(self) -> int:
        """Records walked past the latest anchor (what the next checkpoint would cover)."""
        if self._pos is None:
            return 0
        return self._pos[0] - (self.latest.seq if self.latest else 0)

    async def advance(self) -> int:
        """Walk the records written since the last call; → :attr:`pending`. A log that
        changed under the walk is re-read from the store's latest anchor once (a rebaseline
        written meanwhile is followed); if it still does not chain, ``AnchorMismatchError``."""
        if self._pos is None:
            await self.refresh()
        try:
            await self._walk()
        except AnchorMismatchError:
            await self.refresh()
            await self._walk()
        return self.pending

    async def _walk(self) -> tuple[int, str]:
        """Follow the log from :attr:`_pos` to its end; → the end reached."""
        seq, head = self._pos or (0, GENESIS_HASH)
        while True:
            batch = await self.audit.read(since=seq, limit=_BATCH)
            if not batch:
                break
            for entry in batch:
                if (entry.seq != seq + 1 or entry.prev_hash != head
                        or chain_hash(entry.prev_hash, entry.seq, entry.record) != entry.hash):
                    raise AnchorMismatchError(
                        f"entry {entry.seq} of the audit log does not chain onto entry {seq}",
                        hint="run `aios-mesh audit verify`", seq=entry.seq)
                seq, head = entry.seq, entry.hash
            self._pos = (seq, head)
        self._pos = (seq, head)
        return seq, head

    async def checkpoint(self, *, force: bool = False) -> Anchor | None:
        """Sign the log's head, if records were written since the latest anchor (or
        ``force`` and the log is not empty); None when there is nothing to anchor. Refuses
        (``AnchorAheadError``, ``AnchorMismatchError``) when the log no longer holds the
        latest anchor."""
        await self.refresh()  # another process may have anchored or re-baselined
        seq, head = await self._walk()
        if seq == 0 or (not force and self.pending == 0):
            return None
        anchor = self.signer.sign("checkpoint", seq, head)
        await self.store.put(anchor)
        self.latest = anchor
        return anchor

    async def rebaseline(self, reason: str) -> Anchor:
        """Sign "the log now ends at its current head", superseding the latest anchor. The
        chain must be intact; ``reason`` is required (it is the operator's account)."""
        if not reason.strip():
            raise InvalidInput("a rebaseline needs a reason",
                               hint='say why: --reason "restored from the 02:00 backup after '
                                    'disk failure"')
        report = await self.audit.verify()
        if not report.ok:
            raise IntegrityError(
                f"the audit chain is broken ({len(report.problems)} problems): a rebaseline "
                "vouches only for an intact log",
                hint="run `aios-mesh audit verify`; restore an intact copy first")
        live, _bad = effective_anchors(await self.store.list(), self.verifier)
        self._pos = None
        seq, head = await self._walk()
        anchor = self.signer.sign("rebaseline", seq, head, reason=reason.strip(),
                                  supersedes=live[-1] if live else None)
        await self.store.put(anchor)
        self.latest = anchor
        _log.info("audit log re-baselined at seq %s", seq)
        return anchor
