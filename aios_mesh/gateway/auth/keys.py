"""The API key format: ``amk_<id>_<secret>``, and how a key is kept (hashed) and checked.

    amk_3f9c1a7e52d0_Qk2v...43 characters...

* ``amk_`` makes a leaked key recognizable (secret scanners, log filters, a glance);
* ``<id>`` (12 hex digits) is public: it names the key in ``aios-mesh keys list`` and
  ``revoke`` and is how the store finds the key's row;
* ``<secret>`` is 32 random bytes (``secrets.token_urlsafe``), 256 bits.

Only the SHA-256 digest of the whole key is stored. A slow password hash (argon2, bcrypt)
exists to make *guessing* a low-entropy password expensive; a 256-bit random secret cannot
be guessed, so a fast hash already makes a stolen table useless, and it keeps the check at
microseconds on every request instead of tens of milliseconds. Digests are compared with
:func:`hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Final

__all__ = ["KEY_PREFIX", "ParsedKey", "digest", "key_id_of", "new_key", "parse_key",
           "same_digest"]

KEY_PREFIX: Final = "amk_"
_ID_HEX: Final = 12
_SECRET_BYTES: Final = 32
# token_urlsafe(32) is exactly 43 characters of the URL-safe base64 alphabet
_SECRET_CHARS: Final = 43
_KEY: Final = re.compile(rf"{KEY_PREFIX}([0-9a-f]{{{_ID_HEX}}})_([A-Za-z0-9_-]{{{_SECRET_CHARS}}})")
_ID: Final = re.compile(rf"(?:{KEY_PREFIX})?([0-9a-f]{{{_ID_HEX}}})")


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key split into its public id and the whole key (the secret is never shown)."""

    id: str
    key: str

    def __repr__(self) -> str:
        return f"ParsedKey(id={self.id!r}, key='{KEY_PREFIX}{self.id}_***')"


def new_key() -> ParsedKey:
    """A fresh random key."""
    key_id = secrets.token_hex(_ID_HEX // 2)
    return ParsedKey(key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}")


def parse_key(text: str) -> ParsedKey | None:
    """``text`` as an API key, or ``None`` when it does not have the key's shape (then it
    may be another kind of credential, e.g. a JWT)."""
    match = _KEY.fullmatch(text)
    return ParsedKey(match.group(1), text) if match else None


def key_id_of(text: str) -> str | None:
    """The key id in ``text``: an id (``3f9c1a7e52d0``), an id with the prefix
    (``amk_3f9c1a7e52d0``) or a whole key; ``None`` when it is none of them."""
    parsed = parse_key(text)
    if parsed is not None:
        return parsed.id
    match = _ID.fullmatch(text)
    return match.group(1) if match else None


def digest(key: str) -> str:
    """The stored form of ``key``: its SHA-256 digest in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def same_digest(key: str, stored: str) -> bool:
    """Whether ``key`` hashes to ``stored``, in constant time."""
    return hmac.compare_digest(digest(key), stored)
