"""API keys as credentials: check a presented key against the store, and charge the key's
own rate limits to the quota port.

A verified key's row is kept in memory for ``cache_s`` seconds, so a request costs a dict
lookup and a SHA-256, not a database round trip; a key revoked on another replica (or by
``aios-mesh keys revoke``) stops working within that time. The digest is compared on every
request, cached or not.

A key with limits (``calls_per_minute`` ... from :class:`~aios_mesh.ports.quota.QuotaLimits`)
is a quota subject of its own, ``apikey:<id>``, on the mesh's quota store: every
authenticated request draws one call from it (``redis://`` shares the count between
replicas). Over the limit the request is refused with ``QuotaExceeded`` (HTTP 429 with
``Retry-After``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Final

from aios_mesh.errors import QuotaExceeded
from aios_mesh.gateway.auth.keys import parse_key, same_digest
from aios_mesh.gateway.auth.store import KeyRecord, KeyStore
from aios_mesh.gateway.identity import Principal, Unauthenticated
from aios_mesh.ports.quota import QuotaStore
from aios_mesh.ports.serving import Usage

__all__ = ["QUOTA_CAPABILITY", "ApiKeyAuthenticator", "quota_subject"]

#: The capability name a key's requests are counted under on its quota subject.
QUOTA_CAPABILITY: Final = "gateway-requests"
_ONE: Final = Usage(calls=1)


def quota_subject(record: KeyRecord) -> str:
    """The quota store's tenant name for ``record``'s own limits."""
    return f"apikey:{record.id}"


class ApiKeyAuthenticator:
    """Proves a principal from an API key (see the module docstring).

    Args:
        store: where the keys are.
        quota: the quota store that counts keys with limits (``lambda: mesh.ports.quota``);
            ``None``: keys' limits are not enforced.
        cache_s: how long a verified key's row is trusted (0: read it on every request).
    """

    def __init__(self, store: KeyStore, *, quota: Callable[[], QuotaStore] | None = None,
                 cache_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._quota = quota
        self.cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, KeyRecord]] = {}
        self._limited: set[str] = set()  # subjects whose limits this process set

    async def verify(self, key: str) -> Principal:
        """The principal of ``key``, after its rate limits admitted this request."""
        parsed = parse_key(key)
        if parsed is None:
            raise Unauthenticated("the credential is not an API key",
                                  hint="send the key that `aios-mesh keys create` printed")
        now = self._clock()
        record = await self._record(parsed.id, now)
        # one message for an unknown id and a wrong secret: nothing tells them apart
        if record is None or not same_digest(parsed.key, record.digest):
            raise Unauthenticated("unknown API key",
                                  hint="check the key, or create one with `aios-mesh keys "
                                       "create`")
        status = record.status(now)
        if status != "active":
            raise Unauthenticated(f"this API key ({record.name}) was {status}",
                                  hint="ask an admin for a new key (`aios-mesh keys create`)")
        if record.limits is not None and self._quota is not None:
            await self._charge(record)
        return record.principal()

    async def _record(self, key_id: str, now: float) -> KeyRecord | None:
        hit = self._cache.get(key_id)
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        record = await asyncio.to_thread(self.store.get, key_id)
        if record is None:
            self._cache.pop(key_id, None)
        elif self.cache_s > 0:
            self._cache[key_id] = (now, record)
        return record

    async def _charge(self, record: KeyRecord) -> None:
        assert self._quota is not None and record.limits is not None
        store = self._quota()
        subject = quota_subject(record)
        if subject not in self._limited:
            # a store may write limits to its server (Redis): off the event loop
            await asyncio.to_thread(store.set_limits, subject, record.limits)
            self._limited.add(subject)
        try:
            reservation = await store.reserve(subject, QUOTA_CAPABILITY, _ONE, 0.0)
        except QuotaExceeded as exc:
            wait = exc.retry_after_s
            raise QuotaExceeded(
                f"API key {record.name} is over its own {exc.details.get('limit', 'rate')} "
                "limit",
                hint=(f"retry in {math.ceil(wait)} s" if wait is not None
                      else "waiting does not help") + ", or ask an admin for a key with "
                                                      "higher limits",
                window=exc.window, retry_after_s=wait, resets_at=exc.resets_at,
                key=record.name, limit=exc.details.get("limit")) from None
        await store.settle(reservation, _ONE, 0.0)

    def forget(self, key_id: str) -> None:
        """Drop ``key_id`` from this process's cache (after revoking it here)."""
        self._cache.pop(key_id, None)
