"""Redis vault store of aios-mesh (``[redaction] vault = "redis://..."``): the token vault's
sealed entries shared by every replica (see :mod:`aios_mesh.ports.vault`).

URL::

    redis://[user:password@]host:port/db?prefix=aios-mesh:vault&timeout_s=2&connect_timeout_s=1

One hash per tenant, ``<prefix>:{<tenant>}`` (the braces keep a tenant on one cluster
slot), field = token, value = the sealed entry (AES-GCM ciphertext; the value is never
stored in clear, see :class:`aios_mesh.redaction.vault.TokenVault`). Entries are kept until
deleted: make the server durable (``appendonly yes``) if tokens must survive a Redis
restart. A rotation's compare-and-set is one Lua script per tenant batch, so it never
overwrites a newer entry or revives a deleted one.

The client is redis-py's thread-safe sync client (its connection pool), driven from
``asyncio.to_thread``, so the store works from any thread's event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Self

import redis
from redis.exceptions import RedisError
from redis.typing import EncodableT

from aios_mesh.backends import BackendURL, redact_url
from aios_mesh.errors import BackendUnavailable, ConfigError
from aios_mesh.ports.vault import VaultEntry

__all__ = ["RedisVaultStore"]

_OPTIONS: Final = frozenset({"prefix", "timeout_s", "connect_timeout_s"})
_GLOB: Final = re.compile(r"([*?\[\]\\])")
_REPLACE: Final = """
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    n = n + 1
  end
end
return n
"""


class RedisVaultStore:
    """Sealed token entries in Redis, one hash per tenant.

    Args:
        url: ``redis://`` or ``rediss://`` URL of the server (no options).
        prefix: the keys' prefix (no braces).
        timeout_s / connect_timeout_s: socket timeouts of every command.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *,
                 prefix: str = "aios-mesh:vault", timeout_s: float = 2.0,
                 connect_timeout_s: float = 1.0) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigError(f"vault option prefix={prefix!r} must be non-empty, without "
                              "braces", hint="write e.g. prefix=aios-mesh:vault")
        self.prefix = prefix
        self._shown_url = redact_url(url)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                            socket_connect_timeout=connect_timeout_s)
        self._replace = self._client.register_script(_REPLACE)

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path | None = None,
                 **options: Any) -> Self:
        """Build from ``redis://host:port/db?prefix=&timeout_s=&connect_timeout_s=``."""
        del base_dir  # nothing on disk
        url = url.with_options(options)
        url.check_options(_OPTIONS, what="redis:// vault")
        if not url.host:
            raise ConfigError(f"{url.redacted()} names no Redis server",
                              hint="write redis://HOST:PORT/DB, e.g. redis://127.0.0.1:6379/0")
        seconds = {name: value for name in ("timeout_s", "connect_timeout_s")
                   if (value := url.seconds_option(name, min=0.001)) is not None}
        return cls(str(url.without_options(_OPTIONS)),
                   prefix=url.option("prefix", "aios-mesh:vault") or "aios-mesh:vault",
                   **seconds)

    def _key(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant}}}"

    async def _run(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(
                f"the Redis token vault {self._shown_url} is unavailable ({what}: "
                f"{type(exc).__name__})",
                hint="start Redis or fix [redaction] vault (check with `aios-mesh doctor`); "
                     "then try again", url=self._shown_url) from exc

    async def put(self, tenant: str, blobs: Mapping[str, bytes]) -> None:
        if blobs:
            fields: dict[EncodableT, EncodableT] = dict(blobs.items())
            await self._run("put", lambda: self._client.hset(self._key(tenant),
                                                             mapping=fields))

    async def get(self, tenant: str, tokens: Collection[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(tokens))
        if not wanted:
            return {}
        got = await self._run("get", self._client.hmget, self._key(tenant), wanted)
        return {t: bytes(b) for t, b in zip(wanted, got, strict=True) if b is not None}

    async def delete(self, tenant: str, tokens: Collection[str]) -> int:
        wanted = list(set(tokens))
        if not wanted:
            return 0
        return int(await self._run("delete", self._client.hdel, self._key(tenant), *wanted))

    async def replace(self, tenant: str, changes: Mapping[str, tuple[bytes, bytes]]) -> int:
        if not changes:
            return 0
        args = [part for token, (old, new) in changes.items() for part in (token, old, new)]
        return int(await self._run("replace", lambda: self._replace(
            keys=[self._key(tenant)], args=args)))

    async def entries(self, *, batch: int = 500) -> AsyncIterator[list[VaultEntry]]:
        pages = self._pages(batch)
        while True:
            page = await self._run("scan", next, pages, None)
            if page is None:
                return
            yield page

    def _pages(self, batch: int) -> Iterator[list[VaultEntry]]:
        # SCAN/HSCAN may return an entry twice (Redis's guarantee is "at least once"); a
        # rotation's compare-and-set makes a repeat harmless.
        match = _GLOB.sub(r"\\\1", self.prefix) + ":{*}"
        page: list[VaultEntry] = []
        start = len(self.prefix) + 2
        for raw in self._client.scan_iter(match=match, count=batch):
            key = raw.decode()
            tenant = key[start:-1]
            for token, blob in self._client.hscan_iter(raw, count=batch):
                page.append(VaultEntry(tenant, token.decode(), bytes(blob)))
                if len(page) >= batch:
                    yield page
                    page = []
        if page:
            yield page

    async def aclose(self) -> None:
        await asyncio.to_thread(self._client.close)
