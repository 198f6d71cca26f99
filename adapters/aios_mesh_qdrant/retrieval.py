"""The Retrieval port on qdrant-client: a Qdrant server, or qdrant-client's local mode.

URLs::

    qdrant://HOST:6333?api_key=...&https=true   a Qdrant server (AsyncQdrantClient, REST)
    qdrant://HOST:6333?prefer_grpc=true         ... over gRPC (grpc_port=6334 by default)
    qdrant+local:///qdrant-local                qdrant-client's local mode on a folder
                                                (relative to base_dir; ////abs for absolute)
    qdrant+local:///:memory:                    local mode in memory (nothing persists)

Common options: ``dim`` (vector size of new collections), ``distance`` (``cosine`` default,
``dot``, ``euclid``), ``index`` (``field:keyword,price:float``; payload indexes, server only —
local mode has none), ``timeout`` (seconds, server only).

Tenancy is the Edge adapter's design, point for point: every stored point carries its tenant
in the reserved payload key ``_tenant`` and the caller's id in ``_mesh_id``; every query,
count and delete adds a ``must`` condition on ``_tenant``; a caller's filter or payload may
not name a reserved key; returned payloads have them stripped; the engine's point id is
``uuid5(tenant, caller id)`` with the Edge adapter's namespace. On a server ``_tenant`` gets
a keyword payload index with ``is_tenant=true`` (Qdrant co-locates each tenant's points).

Snapshot ids are ``"<writes>-<hash>"``: a per-collection write counter and a hash chain over
every write's content, kept in the collection's own metadata (``metadata.aios_mesh``), so they
survive restarts and every process talking to the server sees the same id. The counter moves
before the write it names (after a crash the id may change without a content change, but one
id never names two contents). When the name asked for is an alias, the id is prefixed with
the collection it points at (``kb_v2:7-9f3a...``): swapping an alias (blue/green re-index)
changes the id. A collection the adapter never wrote to has ``"<collection>:unversioned"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

import httpx
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from aios_mesh.backends import BackendURL
from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    MeshError,
    NotFound,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.retrieval import Condition, Filter, ScoredPoint
from aios_mesh.ports.retrieval_scope import (
    ID_KEY,
    TENANT_KEY,
    as_vector,
    chain,
    check_collection,
    check_key,
    check_limit,
    check_payload,
    check_tenant,
    encode_payload,
    internal_id,
    public_id,
)

__all__ = ["META_KEY", "QdrantRetrieval"]

#: Key of the adapter's record inside a collection's metadata.
META_KEY: Final = "aios_mesh"
_META_FORMAT: Final = 1
_SNAPSHOT_SEED: Final = b"aios-mesh/qdrant/v1"
_DISTANCES: Final[Mapping[str, models.Distance]] = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
}
_INDEX_TYPES: Final[Mapping[str, models.PayloadSchemaType]] = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "float": models.PayloadSchemaType.FLOAT,
    "bool": models.PayloadSchemaType.BOOL,
}
_OPTIONS: Final = ("dim", "distance", "index", "api_key", "https", "prefer_grpc", "grpc_port",
                   "timeout")
_LOCAL_OPTIONS: Final = ("dim", "distance", "index")
_INT64_MAX: Final = 2**63 - 1
_MEMORY: Final = ":memory:"


# --------------------------------------------------------------------------- filters


def _match_value(value: object) -> models.MatchValue:
    if isinstance(value, bool | str):
        return models.MatchValue(value=value)
    if isinstance(value, int):
        if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            raise InvalidInput(f"eq value {value} is outside the int64 range",
                               hint="compare such numbers with op='range'")
        return models.MatchValue(value=value)
    raise InvalidInput(f"eq value {value!r} is not a string, integer or bool",
                       hint="use op='range' with gte=/lte= for floats")


def _match_any(value: object) -> models.MatchAny:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
        raise InvalidInput(f"any value {value!r} is not a list",
                           hint="pass value=[...] of strings or of integers")
    items = list(value)
    if all(isinstance(v, str) for v in items):
        return models.MatchAny(any=[str(v) for v in items])
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return models.MatchAny(any=[int(v) for v in items])
    raise InvalidInput(f"any value {value!r} mixes types or holds something other than "
                       "strings or integers",
                       hint="pass only strings or only integers; for bools use op='eq'")


def _range(cond: Condition) -> models.Range:
    if cond.value is not None:
        raise InvalidInput(f"range condition on {cond.key!r} takes gte=/lte=, not value=",
                           hint="write Condition(key, 'range', gte=..., lte=...)")
    if cond.gte is None and cond.lte is None:
        raise InvalidInput(f"range condition on {cond.key!r} has neither gte nor lte",
                           hint="set gte=, lte= or both")
    for bound in (cond.gte, cond.lte):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)
                                  or bound != bound or bound in (float("inf"), float("-inf"))):
            raise InvalidInput(f"range bound {bound!r} on {cond.key!r} is not a finite number",
                               hint="use finite int or float bounds")
    return models.Range(gte=cond.gte, lte=cond.lte)


def _condition(cond: object) -> models.FieldCondition:
    if not isinstance(cond, Condition):
        raise InvalidInput(f"{cond!r} is not a Condition",
                           hint="build filters from aios_mesh.ports.retrieval.Condition")
    key = check_key(cond.key)
    if cond.op == "eq":
        return models.FieldCondition(key=key, match=_match_value(cond.value))
    if cond.op == "any":
        return models.FieldCondition(key=key, match=_match_any(cond.value))
    if cond.op == "range":
        return models.FieldCondition(key=key, range=_range(cond))
    raise InvalidInput(f"unknown condition op {cond.op!r}",
                       hint="use op='eq', 'any' or 'range'")


def _tenant_condition(tenant: str) -> models.FieldCondition:
    return models.FieldCondition(key=TENANT_KEY, match=models.MatchValue(value=tenant))


def _scoped_filter(tenant: str, user: Filter | None) -> models.Filter:
    """The caller's filter ANDed with the tenant scope (no caller condition can widen it)."""
    must: list[Any] = [_tenant_condition(tenant)]
    must_not: list[Any] = []
    if user is not None:
        if not isinstance(user, Filter):
            raise InvalidInput(f"{user!r} is not a Filter",
                               hint="pass aios_mesh.ports.retrieval.Filter(must=..., "
                                    "must_not=...)")
        must += [_condition(c) for c in user.must]
        must_not += [_condition(c) for c in user.must_not]
    return models.Filter(must=must, must_not=must_not or None)


def _parse_indexes(spec: object) -> dict[str, str]:
    """``"category:keyword,price:float"`` or ``{"category": "keyword"}`` → field → type."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, str):
        pairs = []
        for item in spec.split(","):
            name, sep, kind = item.strip().rpartition(":")
            if not sep or not name:
                raise ConfigError(f"index entry {item!r} is not FIELD:TYPE",
                                  hint="write ?index=category:keyword,price:float")
            pairs.append((name, kind))
    elif isinstance(spec, Mapping):
        pairs = [(str(k), str(t)) for k, t in spec.items()]
    else:
        raise ConfigError(f"index={spec!r} is neither 'FIELD:TYPE,...' nor a mapping",
                          hint="write ?index=category:keyword,price:float")
    out: dict[str, str] = {}
    for name, kind in pairs:
        kind = kind.strip().lower()
        if kind not in _INDEX_TYPES:
            close = difflib.get_close_matches(kind, _INDEX_TYPES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown payload index type {kind!r} for {name!r}",
                              hint=f"{hint}types are: {', '.join(_INDEX_TYPES)}")
        try:
            check_key(name)
        except InvalidInput as exc:
            raise ConfigError(f"cannot index field {name!r}: {exc.message}",
                              hint="index only your own payload fields") from exc
        out[name] = kind
    return out


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class _Meta:
    """The adapter's record in ``metadata.aios_mesh`` of a collection."""

    collection: str
    writes: int
    digest: str

    @classmethod
    def initial(cls, name: str, dim: int, distance: str) -> _Meta:
        seed = _SNAPSHOT_SEED + f"|{name}|{dim}|{distance}".encode()
        return cls(collection=name, writes=0, digest=hashlib.sha256(seed).hexdigest())

    @classmethod
    def parse(cls, raw: object) -> _Meta | None:
        if not isinstance(raw, Mapping):
            return None
        try:
            meta = cls(collection=str(raw["collection"]), writes=int(raw["writes"]),
                       digest=str(raw["digest"]))
            bytes.fromhex(meta.digest)
        except (KeyError, TypeError, ValueError):
            return None
        return meta

    def next(self, op: bytes) -> _Meta:
        return _Meta(self.collection, self.writes + 1, chain(self.digest, op))

    def to_json(self) -> dict[str, Any]:
        return {"format": _META_FORMAT, "collection": self.collection, "writes": self.writes,
                "digest": self.digest}

    def snapshot_id(self, asked: str) -> str:
        sid = f"{self.writes}-{self.digest[:12]}"
        return sid if self.collection == asked else f"{self.collection}:{sid}"


@dataclass(slots=True)
class _Collection:
    name: str
    dim: int
    distance: str
    meta: _Meta | None
    indexed: bool = False
    locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = field(
        default_factory=weakref.WeakKeyDictionary)

    def lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        found = self.locks.get(loop)
        if found is None:
            found = self.locks[loop] = asyncio.Lock()
        return found


@dataclass(frozen=True, slots=True)
class _Prepared:
    dim: int
    points: list[models.PointStruct]
    digest: bytes


# --------------------------------------------------------------------------- errors


def _error_text(exc: UnexpectedResponse) -> str:
    try:
        raw = exc.content.decode("utf-8", "replace")
    except Exception:  # pragma: no cover - defensive
        raw = ""
    return raw[:500] or (exc.reason_phrase or "")


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code == 404
    if isinstance(exc, ValueError):  # local mode
        return "not found" in str(exc).lower()
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError
        with contextlib.suppress(Exception):
            return getattr(code(), "name", "") == "NOT_FOUND"
    return False


def _is_conflict(exc: BaseException) -> bool:
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code == 409 or "already exists" in _error_text(exc)
    return "already exists" in str(exc)


def _translate(exc: BaseException, doing: str, where: str) -> MeshError:
    """A native qdrant-client/httpx/grpc exception as a mesh error (never raised here)."""
    if isinstance(exc, MeshError):
        return exc
    if _is_not_found(exc):
        return NotFound(f"Qdrant has no such collection ({doing}): {exc}",
                        hint="upsert points into it first (collections are created by their "
                             "first upsert)")
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code
        text = _error_text(exc)
        if status in (400, 422):
            return InvalidInput(f"Qdrant rejected the {doing}: {text}",
                                hint="check vector sizes, payload values and filter keys")
        if status in (401, 403):
            return ConfigError(f"Qdrant at {where} refused the {doing} ({status}): {text}",
                               hint="set the api_key option (or AIOS_MESH_RETRIEVAL_URL with "
                                    "?api_key=...) to a key with write access")
        return BackendUnavailable(f"Qdrant at {where} failed during the {doing} "
                                  f"({status}): {text}",
                                  hint="check the Qdrant server's health and logs; retry")
    if isinstance(exc, ResponseHandlingException):
        source = exc.source
        if isinstance(source, httpx.TimeoutException):
            return BackendTimeout(f"Qdrant at {where} timed out during the {doing}",
                                  hint="raise ?timeout= or check the server's load")
        return BackendUnavailable(f"cannot reach Qdrant at {where} ({doing}): {source!r}",
                                  hint="start the Qdrant server (compose/docker-compose.yml) "
                                       "or fix the host and port in the retrieval URL")
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"Qdrant at {where} timed out during the {doing}",
                              hint="raise ?timeout= or check the server's load")
    if isinstance(exc, httpx.TransportError | ConnectionError | OSError):
        return BackendUnavailable(f"cannot reach Qdrant at {where} ({doing}): {exc!r}",
                                  hint="start the Qdrant server (compose/docker-compose.yml) "
                                       "or fix the host and port in the retrieval URL")
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError, without importing grpc
        name = ""
        with contextlib.suppress(Exception):
            name = str(getattr(code(), "name", ""))
        if name == "INVALID_ARGUMENT":
            return InvalidInput(f"Qdrant rejected the {doing}: {exc}",
                                hint="check vector sizes, payload values and filter keys")
        if name == "DEADLINE_EXCEEDED":
            return BackendTimeout(f"Qdrant at {where} timed out during the {doing}",
                                  hint="raise ?timeout= or check the server's load")
        if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return ConfigError(f"Qdrant at {where} refused the {doing}: {exc}",
                               hint="set the api_key option to a key with write access")
    if isinstance(exc, ValueError | TypeError):  # local mode validates with ValueError
        return InvalidInput(f"Qdrant rejected the {doing}: {exc}",
                            hint="check vector sizes, payload values and filter keys")
    return BackendUnavailable(f"Qdrant failed during the {doing}: {exc!r}",
                              hint="check the Qdrant server or local folder; retry")


# --------------------------------------------------------------------------- adapter


class QdrantRetrieval:
    """Retrieval on qdrant-client: a Qdrant server (async) or local mode (in a thread).

    Build it with :meth:`from_url` (``qdrant://host:6333``, ``qdrant+local:///folder``,
    ``qdrant+local:///:memory:``) or directly with exactly one of ``url``, ``path`` or
    ``memory=True``. See the module docstring for tenancy and snapshot ids.

    A server client (``AsyncQdrantClient``) is created per event loop on first use; local
    mode opens one synchronous ``QdrantClient`` at construction and runs every call in
    ``asyncio.to_thread`` under a lock. Local mode locks its folder: a second adapter on the
    same folder raises :class:`ConfigError` until the first is closed.
    """

    features: frozenset[Feature] = frozenset({Feature.FILTERED_QUERY, Feature.SNAPSHOT})

    def __init__(self, *, url: str | None = None, path: Path | str | None = None,
                 memory: bool = False, api_key: str | None = None,
                 prefer_grpc: bool = False, grpc_port: int | None = None,
                 timeout: float | None = None, dim: int | None = None,
                 distance: str = "cosine", index: str | Mapping[str, str] | None = None,
                 _explicit_distance: bool | None = None) -> None:
        if sum((url is not None, path is not None, bool(memory))) != 1:
            raise ConfigError("QdrantRetrieval needs exactly one of url=, path= or memory=True",
                              hint="use from_url('qdrant://host:6333') or "
                                   "from_url('qdrant+local:///folder')")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ConfigError(f"dim={dim!r} is not a positive integer",
                              hint="write ?dim=384 (or leave it out to take it from the first "
                                   "upsert)")
        if distance not in _DISTANCES:
            raise ConfigError(f"unknown distance {distance!r}",
                              hint=f"use one of {', '.join(_DISTANCES)}")
        self.dim = dim
        self.distance = distance
        self.indexes = _parse_indexes(index)
        self._explicit_distance = (_explicit_distance if _explicit_distance is not None
                                   else distance != "cosine")
        self._collections: dict[str, _Collection] = {}
        self._closed = False
        self._local: QdrantClient | None = None
        self._local_lock = threading.RLock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                 AsyncQdrantClient] = weakref.WeakKeyDictionary()
        self._server_kwargs: dict[str, Any] = {}
        self.location: str
        if url is not None:
            self.location = url
            self._server_kwargs = {"url": url, "api_key": api_key, "prefer_grpc": prefer_grpc,
                                   "timeout": int(timeout) if timeout else None,
                                   "check_compatibility": False}
            if grpc_port is not None:
                self._server_kwargs["grpc_port"] = grpc_port
            return
        self.location = _MEMORY if memory else str(path)
        if not memory:
            self.features = self.features | {Feature.DURABLE}
        try:
            if memory:
                self._local = QdrantClient(location=_MEMORY)
            else:
                Path(str(path)).mkdir(parents=True, exist_ok=True)
                self._local = QdrantClient(path=str(path))
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise ConfigError(
                    f"the Qdrant local folder {path} is already open in another "
                    "QdrantClient (this process or another one)",
                    hint="close the other adapter first (await adapter.aclose()), give this "
                         "one its own folder, or run a Qdrant server (qdrant://host:6333) "
                         "for concurrent access", path=str(path)) from exc
            raise ConfigError(f"cannot open the Qdrant local folder {path}: {exc}",
                              hint="check the folder and its permissions") from exc
        except OSError as exc:
            raise ConfigError(f"cannot open the Qdrant local folder {path}: {exc}",
                              hint="check the folder and its permissions") from exc

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """Build from ``qdrant://host:6333?...`` or ``qdrant+local:///folder?...``.

        Keyword arguments win over the URL's query options. ``api_key`` may also be given as
        the URL's password (``qdrant://:KEY@host:6333``) or as a pydantic ``SecretStr``.
        """
        merged: dict[str, Any] = {**url.options, **options}
        local = url.scheme == "qdrant+local"
        allowed = _LOCAL_OPTIONS if local else _OPTIONS
        where = _safe_url(url)
        unknown = sorted(set(merged) - set(allowed))
        if unknown:
            close = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown {url.scheme} option(s) {unknown} in {where}",
                              hint=f"{hint}options are: {', '.join(allowed)}")
        dim = _int_option(merged, "dim")
        dist_opt = merged.get("distance")
        distance = str(dist_opt).lower() if dist_opt not in (None, "") else "cosine"
        if distance not in _DISTANCES:
            close = difflib.get_close_matches(distance, _DISTANCES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown distance {dist_opt!r} in {where}",
                              hint=f"{hint}use one of {', '.join(_DISTANCES)}")
        common: dict[str, Any] = {"dim": dim, "distance": distance,
                                  "index": merged.get("index"),
                                  "_explicit_distance": dist_opt not in (None, "")}
        if local:
            if url.host and url.host != "localhost":
                raise ConfigError(f"{where} names a host; local mode takes a folder",
                                  hint="write qdrant+local:///relative/folder, "
                                       "qdrant+local:////absolute/folder or "
                                       "qdrant+local:///:memory:")
            if url.path.strip("/") == _MEMORY:
                return cls(memory=True, **common)
            return cls(path=url.resolve_path(base_dir), **common)
        if not url.host:
            raise ConfigError(f"{where} names no host",
                              hint="write qdrant://HOST:6333, e.g. qdrant://127.0.0.1:6333")
        https = _flag(merged, "https", False)
        server = f"{'https' if https else 'http'}://{url.host}:{url.port or 6333}"
        if url.path.strip("/"):
            server += "/" + url.path.strip("/")
        api_key = merged.get("api_key") or url.password
        if api_key is not None and hasattr(api_key, "get_secret_value"):
            api_key = api_key.get_secret_value()
        timeout = merged.get("timeout")
        try:
            timeout_s = float(timeout) if timeout not in (None, "") else None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"timeout={timeout!r} is not a number of seconds",
                              hint="write ?timeout=10") from exc
        return cls(url=server, api_key=str(api_key) if api_key else None,
                   prefer_grpc=_flag(merged, "prefer_grpc", False),
                   grpc_port=_int_option(merged, "grpc_port"), timeout=timeout_s, **common)

    @property
    def is_local(self) -> bool:
        """True for qdrant-client's local mode (folder or memory)."""
        return self._local is not None or not self._server_kwargs

    # ----------------------------------------------------------------- port methods

    async def upsert(self, collection: str, points: Sequence[Any], *, tenant: str) -> None:
        """Insert or replace ``points`` of ``tenant``. Validates the whole batch first."""
        self._check_open()
        check_tenant(tenant)
        check_collection(collection)
        batch = list(points)
        if not batch:
            return
        prepared = await asyncio.to_thread(self._prepare_upsert, tenant, batch) \
            if len(batch) > 256 else self._prepare_upsert(tenant, batch)
        coll = await self._ensure(collection, prepared.dim)
        if prepared.dim != coll.dim:
            raise InvalidInput(f"vectors have {prepared.dim} dimensions, collection "
                               f"{collection!r} has {coll.dim}",
                               hint="embed with the model the collection was built with")
        await self._write(coll, prepared.digest, "upsert",
                          lambda c: c.upsert(collection, prepared.points, wait=True))

    async def query(self, collection: str, vector: Sequence[float], *, tenant: str,
                    limit: int = 10, filter: Filter | None = None) -> list[ScoredPoint]:
        """The ``limit`` points of ``tenant`` nearest ``vector``, best first.

        Raises :class:`NotFound` for a collection that does not exist.
        """
        self._check_open()
        check_tenant(tenant)
        check_collection(collection)
        check_limit(limit)
        scoped = _scoped_filter(tenant, filter)
        vec = as_vector(vector, "query vector")
        coll = await self._open(collection)
        if vec.shape[0] != coll.dim:
            raise InvalidInput(f"query vector has {vec.shape[0]} dimensions, collection "
                               f"{collection!r} has {coll.dim}",
                               hint="embed the query with the collection's model")
        response = await self._call(
            "query", lambda c: c.query_points(collection, query=vec.tolist(),
                                              query_filter=scoped, limit=limit,
                                              with_payload=True, with_vectors=False))
        out: list[ScoredPoint] = []
        for hit in response.points:
            payload = dict(hit.payload or {})
            owner = payload.pop(TENANT_KEY, None)
            public = payload.pop(ID_KEY, None)
            if owner != tenant or public is None:  # defence in depth; the filter has it
                continue
            out.append(ScoredPoint(id=public, score=float(hit.score), payload=payload))
        return out

    async def delete(self, collection: str, ids: Sequence[int | str], *, tenant: str) -> None:
        """Delete ``tenant``'s points with these ids. Unknown ids/collections are a no-op."""
        self._check_open()
        check_tenant(tenant)
        check_collection(collection)
        publics = sorted({public_id(i) for i in ids}, key=lambda p: (type(p).__name__, p))
        if not publics:
            return
        coll = await self._open(collection, missing_ok=True)
        if coll is None:
            return
        internal = sorted({internal_id(tenant, p) for p in publics})
        scope = models.Filter(must=[_tenant_condition(tenant),
                                    models.HasIdCondition(has_id=[str(u) for u in internal])])
        counted = await self._call(
            "delete", lambda c: c.count(collection, count_filter=scope, exact=True))
        if counted.count == 0:
            return  # nothing of this tenant's to delete: contents and snapshot unchanged
        op = hashlib.sha256(b"delete|" + tenant.encode() + b"|"
                            + b"".join(u.bytes for u in internal)).digest()
        selector = models.FilterSelector(filter=scope)
        await self._write(coll, op, "delete",
                          lambda c: c.delete(collection, points_selector=selector, wait=True))

    async def snapshot(self, collection: str) -> str:
        """``"<writes>-<hash>"`` naming the collection's current contents (see the module)."""
        self._check_open()
        check_collection(collection)
        if self.is_local:
            coll: _Collection = await self._open(collection)
            if coll.meta is None:
                return f"{collection}:unversioned"
            return coll.meta.snapshot_id(collection)
        fresh = await self._fetch(collection)  # other processes may have written
        if fresh is None:
            raise NotFound(f"retrieval collection {collection!r} does not exist",
                           hint="upsert points into it first (collections are created by "
                                "their first upsert)", collection=collection)
        if fresh.meta is None:
            return f"{await self._physical(collection)}:unversioned"
        return fresh.meta.snapshot_id(collection)

    async def health(self) -> None:
        """Raise :class:`BackendUnavailable` (or ConfigError) unless Qdrant answers."""
        await self._call("health check", lambda c: c.get_collections())

    async def aclose(self) -> None:
        """Close the local client (releasing its folder) or this loop's server client.

        Idempotent; later calls raise :class:`MeshError`.
        """
        if self._closed:
            return
        self._closed = True
        if self._local is not None:
            local, self._local = self._local, None
            await asyncio.to_thread(self._close_local, local)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - aclose is always awaited in a loop
            loop = None
        clients = list(self._clients.items())
        self._clients.clear()
        for owner, client in clients:
            if owner is loop:
                with contextlib.suppress(Exception):
                    await client.close()
        self._collections.clear()

    # ----------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise MeshError("this QdrantRetrieval is closed",
                            hint="load a new retrieval adapter; aclose() is final")

    def _close_local(self, local: QdrantClient) -> None:
        with self._local_lock, contextlib.suppress(Exception):
            local.close()

    def _client(self) -> AsyncQdrantClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = AsyncQdrantClient(**self._server_kwargs)
            self._clients[loop] = client
        return client

    async def _call(self, doing: str, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(client)``: in a thread under the lock (local) or awaited (server)."""
        self._check_open()
        try:
            if self._local is not None:
                return await asyncio.to_thread(self._locked, fn)
            result = fn(self._client())
            if isinstance(result, Awaitable):
                result = await result
            return result
        except Exception as exc:
            raise _translate(exc, doing, self.location) from exc

    def _locked(self, fn: Callable[[QdrantClient], Any]) -> Any:
        with self._local_lock:
            local = self._local
            if local is None:
                raise MeshError("this QdrantRetrieval is closed",
                                hint="load a new retrieval adapter; aclose() is final")
            return fn(local)

    async def _fetch(self, name: str) -> _Collection | None:
        """The collection as the backend describes it now, or None when it does not exist."""
        try:
            info = await self._call("collection lookup", lambda c: c.get_collection(name))
        except NotFound:
            self._collections.pop(name, None)
            return None
        vectors = info.config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise ConfigError(f"collection {name!r} uses named vectors, which this adapter "
                              "does not read", hint="use a collection with a single unnamed "
                                                    "vector, or another collection name")
        distance = {v: k for k, v in _DISTANCES.items()}.get(vectors.distance)
        if distance is None:
            raise ConfigError(f"collection {name!r} uses distance {vectors.distance}",
                              hint=f"use one of {', '.join(_DISTANCES)}")
        metadata = getattr(info.config, "metadata", None) or {}
        meta = _Meta.parse(metadata.get(META_KEY)) if isinstance(metadata, Mapping) else None
        coll = _Collection(name=name, dim=int(vectors.size), distance=distance, meta=meta)
        if self.dim is not None and coll.dim != self.dim:
            raise ConfigError(f"collection {name!r} has dim={coll.dim}, the adapter is "
                              f"configured with dim={self.dim}",
                              hint="fix ?dim= or use another collection")
        if self._explicit_distance and coll.distance != self.distance:
            raise ConfigError(f"collection {name!r} uses distance={coll.distance}, the "
                              f"adapter is configured with distance={self.distance}",
                              hint="fix ?distance= or use another collection")
        return coll

    async def _open(self, name: str, *, missing_ok: bool = False) -> Any:
        """The known collection ``name`` (cached), or NotFound / None."""
        coll = self._collections.get(name)
        if coll is not None:
            return coll
        coll = await self._fetch(name)
        if coll is None:
            if missing_ok:
                return None
            raise NotFound(f"retrieval collection {name!r} does not exist",
                           hint="upsert points into it first (collections are created by "
                                "their first upsert)", collection=name)
        await self._ensure_indexes(coll)
        return self._collections.setdefault(name, coll)

    async def _ensure(self, name: str, dim: int) -> _Collection:
        """The collection ``name``, created with ``dim`` when it does not exist yet."""
        coll: _Collection | None = await self._open(name, missing_ok=True)
        if coll is not None:
            return coll
        want = self.dim if self.dim is not None else dim
        if want != dim:
            raise InvalidInput(f"vectors have {dim} dimensions, the adapter is configured "
                               f"with dim={want}",
                               hint="embed with the configured model or change ?dim=")
        meta = _Meta.initial(name, dim, self.distance)
        params = models.VectorParams(size=dim, distance=_DISTANCES[self.distance])
        try:
            await self._call("create collection", lambda c: c.create_collection(
                name, vectors_config=params, metadata={META_KEY: meta.to_json()}))
        except MeshError as exc:
            if not _is_conflict(exc.__cause__ or exc):  # created by someone else meanwhile
                raise
        if not self.is_local:
            await self._call("create tenant index", lambda c: c.create_payload_index(
                name, TENANT_KEY, field_schema=models.KeywordIndexParams(
                    type=models.KeywordIndexType.KEYWORD, is_tenant=True), wait=True))
        found: _Collection = await self._open(name)
        return found

    async def _ensure_indexes(self, coll: _Collection) -> None:
        if self.is_local or coll.indexed or not self.indexes:
            coll.indexed = True
            return
        for field_name, kind in self.indexes.items():
            schema = _INDEX_TYPES[kind]

            def create(c: Any, f: str = field_name, s: Any = schema) -> Any:
                return c.create_payload_index(coll.name, f, field_schema=s, wait=True)

            await self._call("create payload index", create)
        coll.indexed = True

    async def _physical(self, name: str) -> str:
        """The collection an alias points at (``name`` itself when it is no alias)."""
        aliases = await self._call("alias lookup", lambda c: c.get_aliases())
        for alias in aliases.aliases:
            if alias.alias_name == name:
                return str(alias.collection_name)
        return name

    async def _write(self, coll: _Collection, op: bytes, doing: str,
                     apply: Callable[[Any], Any]) -> None:
        """Move the write counter and hash chain, then apply the write.

        Local mode: one thread call under the client lock (the folder is ours alone).
        Server: under a per-collection lock of this loop, re-reading the record first so
        writes from other adapters are chained too.
        """
        if self._local is not None:
            def run(client: QdrantClient) -> None:
                base = coll.meta or _Meta.initial(coll.name, coll.dim, coll.distance)
                meta = base.next(op)
                client.update_collection(coll.name, metadata={META_KEY: meta.to_json()})
                coll.meta = meta
                apply(client)
            await self._call(doing, run)
            return
        async with coll.lock():
            fresh = await self._fetch(coll.name)
            if fresh is None:
                self._collections.pop(coll.name, None)
                raise NotFound(f"retrieval collection {coll.name!r} was dropped meanwhile",
                               hint="retry the call; the next upsert recreates it")
            base = fresh.meta or _Meta.initial(coll.name, coll.dim, coll.distance)
            meta = base.next(op)
            await self._call(doing, lambda c: c.update_collection(
                coll.name, metadata={META_KEY: meta.to_json()}))
            coll.meta = meta
            await self._call(doing, apply)

    @staticmethod
    def _prepare_upsert(tenant: str, batch: list[Any]) -> _Prepared:
        """Validate every point and build engine points; nothing is written here."""
        digest = hashlib.sha256(b"upsert|")
        engine_points: list[models.PointStruct] = []
        dims: set[int] = set()
        for n, point in enumerate(batch):
            what = f"point #{n}"
            if not all(hasattr(point, a) for a in ("id", "vector")):
                raise InvalidInput(f"{what} is not a Point",
                                   hint="pass aios_mesh.ports.retrieval.Point objects")
            public = public_id(point.id)
            row = as_vector(point.vector, f"vector of {what} (id {public!r})")
            dims.add(row.shape[0])
            payload = check_payload(getattr(point, "payload", None), f"{what} (id {public!r})")
            payload[TENANT_KEY] = tenant
            payload[ID_KEY] = public
            uid = internal_id(tenant, public)
            engine_points.append(models.PointStruct(id=str(uid), vector=row.tolist(),
                                                    payload=payload))
            digest.update(uid.bytes)
            digest.update(row.tobytes())
            digest.update(encode_payload(payload))
        if len(dims) != 1:
            raise InvalidInput(f"the batch mixes vector sizes {sorted(dims)}",
                               hint="every vector of a collection has the same size")
        return _Prepared(dim=dims.pop(), points=engine_points, digest=digest.digest())

    def __repr__(self) -> str:
        kind = "local" if self.is_local else "server"
        return f"QdrantRetrieval({kind} {self.location!r})"


def _safe_url(url: BackendURL) -> str:
    """The URL for messages: password masked, api_key dropped from the query."""
    text = url.redacted()
    if "api_key=" in text:
        head, _, query = text.partition("?")
        kept = [p for p in query.split("&") if not p.startswith("api_key=")]
        text = head + "?" + "&".join([*kept, "api_key=***"])
    return text


def _int_option(options: Mapping[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={value!r} is not an integer",
                          hint=f"write ?{name}=<integer>") from exc


def _flag(options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = options.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"option {name}={value!r} is not a boolean",
                      hint=f"write {name}=true or {name}=false")
