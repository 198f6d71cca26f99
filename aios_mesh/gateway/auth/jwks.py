"""Where the public keys of JWT bearer tokens come from: a JWKS (RFC 7517) in a file or at
a URL, read again after a TTL.

Only signing keys of an asymmetric type are kept (``RSA``, ``EC``, ``OKP``): a symmetric
(``oct``) key in a JWKS is dropped, so a token can never be checked with HMAC. When a token
names a key id the cached set lacks (the issuer rotated its keys), the set is read again at
once, but at most every ``min_refresh_s``, so made-up key ids cannot make the gateway hammer
the issuer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson

from aios_mesh.errors import BackendUnavailable, ConfigError
from aios_mesh.redaction import describe_exception

__all__ = ["JwksSource"]

_SIGNING_TYPES: Final = frozenset({"RSA", "EC", "OKP"})
_MAX_BYTES: Final = 1 << 20


class JwksSource:
    """The signing keys of one JWKS (file path or ``http(s)://`` URL).

    Args:
        location: a path (relative ones resolve against ``base_dir``) or a URL.
        ttl_s: how long a read set is used before it is read again.
        timeout_s: the limit of one fetch from a URL.
        min_refresh_s: the least time between two reads forced by an unknown key id.
    """

    def __init__(self, location: str, *, base_dir: Path, ttl_s: float = 300.0,
                 timeout_s: float = 5.0, min_refresh_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = location if location.startswith(("http://", "https://")) else None
        path = Path(location.removeprefix("file://"))
        self.path = None if self.url else (path if path.is_absolute() else base_dir / path)
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.min_refresh_s = min_refresh_s
        self._clock = clock
        self._keys: list[dict[str, Any]] | None = None
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()
        self._client: Any = None

    @property
    def shown(self) -> str:
        """The location as it may be shown (a URL's query may hold a secret)."""
        from aios_mesh.backends import redact_url

        return redact_url(self.url) if self.url else str(self.path)

    async def keys(self, *, kid: str | None = None) -> list[dict[str, Any]]:
        """The signing keys (JWK objects); read again when older than the TTL, or when
        ``kid`` is not among them and the last read is older than ``min_refresh_s``."""
        if self._stale(kid):
            async with self._lock:
                if self._stale(kid):  # the request before us in the lock may have read it
                    await self._refresh()
        assert self._keys is not None
        return self._keys

    def _stale(self, kid: str | None) -> bool:
        if self._keys is None:
            return True
        age = self._clock() - self._read_at
        return age >= self.ttl_s or (kid is not None and age >= self.min_refresh_s
                                     and not any(k.get("kid") == kid for k in self._keys))

    async def _refresh(self) -> None:
        try:
            raw = await (self._fetch() if self.url else asyncio.to_thread(self._read_file))
            self._keys = _signing_keys(raw, self.shown)
        except (BackendUnavailable, ConfigError):
            if self._keys is None:
                raise
            # keep verifying with the keys we have; the next request tries again
        finally:
            self._read_at = self._clock()

    def _read_file(self) -> bytes:
        assert self.path is not None
        try:
            with self.path.open("rb") as f:
                return f.read(_MAX_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read the JWKS file {self.path}: {exc.strerror}",
                              hint="check [gateway.auth.jwt] jwks (a path relative to the "
                                   "config file, or an https:// URL)") from exc

    async def _fetch(self) -> bytes:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False,
                                             trust_env=False)
        try:
            response = await self._client.get(self.url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"cannot fetch the JWKS from {self.shown} ({describe_exception(exc)})",
                hint="check that the identity provider answers at [gateway.auth.jwt] jwks"
            ) from exc
        content: bytes = response.content
        return content

    async def aclose(self) -> None:
        """Close the HTTP client (if one was opened)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _signing_keys(raw: bytes, where: str) -> list[dict[str, Any]]:
    """The asymmetric signing keys of a JWKS document."""
    hint = "serve a JWKS: {\"keys\": [{\"kty\": \"RSA\", \"kid\": ..., \"n\": ..., \"e\": ...}]}"
    if len(raw) > _MAX_BYTES:
        raise ConfigError(f"the JWKS at {where} is larger than {_MAX_BYTES} bytes", hint=hint)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ConfigError(f"the JWKS at {where} is not JSON", hint=hint) from None
    found = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(found, list):
        raise ConfigError(f"the JWKS at {where} has no \"keys\" list", hint=hint)
    keys = [k for k in found if isinstance(k, dict) and k.get("kty") in _SIGNING_TYPES
            and k.get("use", "sig") == "sig"]
    if not keys:
        raise ConfigError(f"the JWKS at {where} holds no RSA, EC or OKP signing key",
                          hint=hint + " (symmetric 'oct' keys are never used)")
    return keys
