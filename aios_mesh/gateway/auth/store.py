"""API keys kept on the shared-state seam (:mod:`aios_mesh.state`): the store ``api_keys``,
one row per key, in sqlite (embedded) or PostgreSQL (replicas share it).

A row holds the key's public id, the SHA-256 digest of the key (never the key), the tenant,
the caller name, the capabilities it may call (or all), its roles, its own quota limits,
and when it was created, expires and was revoked. Revoking keeps the row (``keys list
--all`` still shows it), so an audit can name the key that made a call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from aios_mesh.errors import ConfigError, NotFound
from aios_mesh.gateway.auth.keys import KEY_PREFIX, digest, key_id_of, new_key
from aios_mesh.gateway.identity import ADMIN, REVIEWER, Principal
from aios_mesh.ports.quota import LIMIT_FIELDS, QuotaLimits
from aios_mesh.state import Database, Migration, SharedState

__all__ = ["KEYS_STORE", "MIGRATIONS", "ROLES", "KeyRecord", "KeyStore"]

#: The store's name on the shared state (and its table's name).
KEYS_STORE: Final = "api_keys"
#: The roles a key may hold.
ROLES: Final = frozenset({REVIEWER, ADMIN})

MIGRATIONS: Final = (
    Migration(1, (
        # portable DDL: sqlite and PostgreSQL read every type here the same way
        "CREATE TABLE api_keys ("
        " id TEXT PRIMARY KEY,"
        " digest TEXT NOT NULL,"
        " tenant TEXT NOT NULL,"
        " caller TEXT NOT NULL,"
        " scopes TEXT,"            # a JSON list; NULL: every capability
        " roles TEXT NOT NULL,"    # a JSON list
        " limits TEXT,"            # a JSON object of quota limits; NULL: none of its own
        " created_at DOUBLE PRECISION NOT NULL,"
        " expires_at DOUBLE PRECISION,"
        " revoked_at DOUBLE PRECISION)",
        "CREATE INDEX api_keys_tenant ON api_keys (tenant)",
    )),
)

_COLUMNS: Final = ("id, digest, tenant, caller, scopes, roles, limits, created_at, expires_at, "
                   "revoked_at")

KeyStatus = Literal["active", "expired", "revoked"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One API key as stored (its digest, never the key)."""

    id: str
    tenant: str
    caller: str
    scopes: frozenset[str] | None
    roles: frozenset[str]
    limits: QuotaLimits | None
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    digest: str = field(default="", repr=False)

    @property
    def name(self) -> str:
        """How the key is shown: ``amk_<id>``."""
        return f"{KEY_PREFIX}{self.id}"

    def status(self, now: float) -> KeyStatus:
        """``revoked``, ``expired`` or ``active`` at ``now`` (epoch seconds)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        """Who this key proves."""
        return Principal(tenant=self.tenant, caller=self.caller, scopes=self.scopes,
                         roles=self.roles, credential=self.name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe view (no digest)."""
        return {"id": self.name, "tenant": self.tenant, "caller": self.caller,
                "scopes": None if self.scopes is None else sorted(self.scopes),
                "roles": sorted(self.roles), "limits": _limits_dict(self.limits),
                "created_at": self.created_at, "expires_at": self.expires_at,
                "revoked_at": self.revoked_at}


def _limits_dict(limits: QuotaLimits | None) -> dict[str, Any] | None:
    if limits is None:
        return None
    return {n: getattr(limits, n) for n in LIMIT_FIELDS if getattr(limits, n) is not None}


def _plain(what: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip() or not value.isprintable() \
            or len(value) > 200:
        raise ConfigError(f"the key's {what} {value!r} is not a plain name",
                          hint=f"give a non-empty {what} of printable characters (at most 200)")
    return value


class KeyStore:
    """Create, find, list and revoke API keys on a shared state.

    Args:
        state: ``Gateway.state``: the mesh's sqlite state, or a ``PostgresState``
            (shared by replicas).
        clock: epoch seconds (tests move it).

    Methods block on the database; async code calls them in ``asyncio.to_thread``. One
    connection is kept (and reopened after a failure); threads take turns on it.
    """

    def __init__(self, state: SharedState, *, clock: Callable[[], float] = time.time
                 ) -> None:
        self._db = Database(state, KEYS_STORE, MIGRATIONS, what="the API key store")
        self._clock = clock

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params)

    def close(self) -> None:
        """Release the connection (the store reconnects if used again)."""
        self._db.close()

    # -- keys ----------------------------------------------------------------------------

    def create(self, tenant: str, caller: str, *, scopes: Iterable[str] | None = None,
               roles: Iterable[str] = (), limits: QuotaLimits | None = None,
               expires_at: float | None = None) -> tuple[KeyRecord, str]:
        """A new key: its record and the key itself, which exists nowhere else (show it
        once; only its digest is stored)."""
        _plain("tenant", tenant)
        _plain("caller", caller)
        scope_set = None if scopes is None else frozenset(_plain("capability", s)
                                                           for s in scopes)
        role_set = frozenset(roles)
        unknown = sorted(role_set - ROLES)
        if unknown:
            raise ConfigError(f"unknown role {unknown[0]!r}",
                              hint=f"roles are: {', '.join(sorted(ROLES))}")
        if limits is not None:
            limits = limits.check()
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ConfigError("the key would expire before it is created",
                              hint="give an expiry in the future")
        key = new_key()
        record = KeyRecord(id=key.id, tenant=tenant, caller=caller, scopes=scope_set,
                           roles=role_set, limits=limits, created_at=now,
                           expires_at=expires_at, digest=digest(key.key))
        limits_json = _limits_dict(limits)
        self._run(
            f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.id, record.digest, tenant, caller,
             None if scope_set is None else orjson.dumps(sorted(scope_set)).decode(),
             orjson.dumps(sorted(role_set)).decode(),
             None if limits_json is None else orjson.dumps(limits_json).decode(),
             now, expires_at, None))
        return record, key.key

    def get(self, key_id: str) -> KeyRecord | None:
        """The key with id ``key_id`` (revoked and expired ones too), or ``None``."""
        rows = self._run(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
        return _record(rows[0]) if rows else None

    def find(self, tenant: str | None = None, *, include_inactive: bool = False
             ) -> list[KeyRecord]:
        """Keys, oldest first: of ``tenant`` or every tenant; active ones only unless
        ``include_inactive``."""
        where, params = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
        rows = self._run(f"SELECT {_COLUMNS} FROM api_keys {where} ORDER BY created_at, id",
                         params)
        now = self._clock()
        records = [_record(row) for row in rows]
        return [r for r in records if include_inactive or r.status(now) == "active"]

    def revoke(self, key: str) -> KeyRecord:
        """Revoke the key named by ``key`` (its id, ``amk_<id>`` or the whole key); a key
        revoked before keeps its first revocation time. Raises :class:`NotFound`."""
        key_id = key_id_of(key)
        if key_id is None:
            raise ConfigError(f"{key[:16]!r}... is not an API key id",
                              hint=f"give the id shown by `aios-mesh keys list` "
                                   f"({KEY_PREFIX}<12 hex digits>)")
        self._run("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                  (self._clock(), key_id))
        record = self.get(key_id)
        if record is None:
            raise NotFound(f"there is no API key {KEY_PREFIX}{key_id}",
                           hint="`aios-mesh keys list --all` shows every key")
        return record


def _record(row: tuple[Any, ...]) -> KeyRecord:
    key_id, dig, tenant, caller, scopes, roles, limits, created, expires, revoked = row
    return KeyRecord(
        id=key_id, tenant=tenant, caller=caller,
        scopes=None if scopes is None else frozenset(orjson.loads(scopes)),
        roles=frozenset(orjson.loads(roles)),
        limits=None if limits is None else QuotaLimits.from_mapping(orjson.loads(limits),
                                                                    f"API key {key_id}"),
        created_at=float(created), expires_at=None if expires is None else float(expires),
        revoked_at=None if revoked is None else float(revoked), digest=dig)
