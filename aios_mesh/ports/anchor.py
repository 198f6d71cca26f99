"""Anchors of the audit log: signed statements "the log held seq N with head hash H", kept in
a store apart from the log, so a cut, rewritten or extended tail shows.

An :class:`Anchor` is either a *checkpoint* (written by the relay at an interval, or by
``aios-mesh audit anchor``) or a *rebaseline* (an operator's statement, after restoring the log
from an older copy, that the log now ends at ``seq`` with ``head``; it supersedes the anchor
named by ``supersedes_seq``/``supersedes_head`` and says why in ``reason``).

The signed bytes are :meth:`Anchor.payload`: a fixed prefix and the canonical JSON
(``orjson``, sorted keys) of every field but ``signature``. Ed25519 signs them
(:mod:`aios_mesh.anchoring.keys`); ``key_id`` names the public key (the first 16 hex digits
of the SHA-256 of its raw 32 bytes) so a verifier can say *which* key signed a stranger.

An :class:`AnchorStore` keeps anchors in the order they were written; implementations: a
JSON Lines file, a table on the shared-state seam (sqlite or PostgreSQL), a topic on the event
bus (:mod:`aios_mesh.anchoring.stores`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Final, Literal, Protocol, runtime_checkable

import orjson

from aios_mesh.errors import IntegrityError

__all__ = ["Anchor", "AnchorAheadError", "AnchorFormatError", "AnchorKind",
           "AnchorMismatchError", "AnchorSignatureError", "AnchorStore"]

AnchorKind = Literal["checkpoint", "rebaseline"]
_PREFIX: Final = b"aios-mesh-anchor/1\n"
_HEX: Final = frozenset("0123456789abcdef")


class AnchorSignatureError(IntegrityError):
    """An anchor is not signed by the configured key (forged, or signed by another key)."""

    code = "anchor_signature"


class AnchorAheadError(IntegrityError):
    """The latest anchor vouches for more records than the log holds (its tail was cut)."""

    code = "anchor_ahead"


class AnchorMismatchError(IntegrityError):
    """The log holds the anchored seq, but with another hash (its tail was rewritten)."""

    code = "anchor_mismatch"


class AnchorFormatError(IntegrityError):
    """An anchor store holds something that is not an anchor."""

    code = "anchor_format"


def _hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX


@dataclass(frozen=True, slots=True)
class Anchor:
    """One signed statement about the audit log (see the module docstring)."""

    kind: AnchorKind
    seq: int
    head: str
    at: str  #: when it was signed (ISO 8601, UTC)
    key_id: str
    signature: str = ""  #: base64 Ed25519 signature of :meth:`payload`
    reason: str = ""  #: rebaselines: why the previous anchor is superseded
    supersedes_seq: int | None = None
    supersedes_head: str | None = None

    def payload(self) -> bytes:
        """The bytes the signature covers."""
        doc = asdict(self)
        del doc["signature"]
        return _PREFIX + orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON values (what the stores keep)."""
        return asdict(self)

    def to_json(self) -> bytes:
        """One line of canonical JSON (no newline)."""
        return orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, doc: Any) -> Anchor:
        """Read an anchor back; ``AnchorFormatError`` when ``doc`` is not one."""
        hint = ("the anchor store holds something aios-mesh did not write: restore it from a "
                "copy, or move it aside and run `aios-mesh audit rebaseline`")
        if not isinstance(doc, dict) or set(doc) != _NAMES:
            raise AnchorFormatError("an entry of the anchor store is not an anchor", hint=hint)
        kind, seq, head = doc["kind"], doc["seq"], doc["head"]
        ok = (kind in ("checkpoint", "rebaseline") and isinstance(seq, int)
              and not isinstance(seq, bool) and seq >= 0 and _hex64(head)
              and all(isinstance(doc[k], str) for k in ("at", "key_id", "signature", "reason"))
              and (doc["supersedes_seq"] is None or isinstance(doc["supersedes_seq"], int))
              and (doc["supersedes_head"] is None or _hex64(doc["supersedes_head"])))
        if not ok:
            raise AnchorFormatError(f"an anchor in the anchor store is malformed (seq "
                                    f"{seq!r})", hint=hint)
        return cls(**doc)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Anchor:
        """:meth:`from_dict` of one JSON text."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        return cls.from_dict(doc)


_NAMES: Final = frozenset(f.name for f in fields(Anchor))


@runtime_checkable
class AnchorStore(Protocol):
    """Where anchors are kept, apart from the audit log."""

    async def put(self, anchor: Anchor) -> None:
        """Keep ``anchor`` durably before returning."""
        ...

    async def list(self) -> list[Anchor]:
        """Every anchor, oldest first; ``AnchorFormatError`` for one that is not an anchor."""
        ...

    async def aclose(self) -> None: ...
