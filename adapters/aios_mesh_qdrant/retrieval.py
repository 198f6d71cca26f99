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
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self, cast

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
from aios_mesh.ports.retrieval import Filter, ScoredPoint
from aios_mesh.ports.retrieval_scope import (
    TENANT_KEY,
    CheckedCondition,
    as_vector,
    chain,
    check_collection,
    check_config,
    check_filter,
    check_index_config,
    check_limit,
    check_tenant,
    delete_op,
    index_options,
    initial_digest,
    internal_id,
    parse_indexes,
    prepare_points,
    public_id,
    scored_points,
    snapshot_label,
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
_MEMORY: Final = ":memory:"


# --------------------------------------------------------------------------- filters


def _condition(cond: CheckedCondition) -> models.FieldCondition:
    """A checked condition as qdrant-client's model (see ``retrieval_scope.check_filter``)."""
    if cond.op == "eq":
        return models.FieldCondition(key=cond.key, match=models.MatchValue(value=cast(
            "str | int | bool", cond.value)))
    if cond.op == "any":
        return models.FieldCondition(key=cond.key, match=models.MatchAny(any=cast(
            "list[str] | list[int]", cond.value)))
    return models.FieldCondition(key=cond.key, range=models.Range(gte=cond.gte, lte=cond.lte))


def _tenant_condition(tenant: str) -> models.FieldCondition:
    return models.FieldCondition(key=TENANT_KEY, match=models.MatchValue(value=tenant))


def _scoped_filter(tenant: str, user: Filter | None) -> models.Filter:
    """The caller's filter ANDed with the tenant scope (no caller condition can widen it)."""
    must, must_not = check_filter(user)
    return models.Filter(must=[_tenant_condition(tenant), *map(_condition, must)],
                         must_not=[_condition(c) for c in must_not] or None)


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class _Meta:
    """The adapter's record in ``metadata.aios_mesh`` of a collection."""

    collection: str
    writes: int
    digest: str

    @classmethod
    def initial(cls, name: str, dim: int, distance: str) -> _Meta:
        return cls(collection=name, writes=0,
                   digest=initial_digest(_SNAPSHOT_SEED, name, dim, distance))

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
        sid = snapshot_label(self.writes, self.digest)
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
        check_index_config(dim, distance)
        self.dim = dim
        self.distance = distance
        self.indexes = parse_indexes(index)
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
        local = url.scheme == "qdrant+local"
        url = url.with_options(options)
        url.check_options(_LOCAL_OPTIONS if local else _OPTIONS, what=url.scheme)
        opts = index_options(url)
        common: dict[str, Any] = {"dim": opts.dim, "distance": opts.distance,
                                  "index": opts.index,
                                  "_explicit_distance": opts.explicit_distance}
        if local:
            if url.host and url.host != "localhost":
                raise ConfigError(f"{url.redacted()} names a host; local mode takes a folder",
                                  hint="write qdrant+local:///relative/folder, "
                                       "qdrant+local:////absolute/folder or "
                                       "qdrant+local:///:memory:")
            if url.path.strip("/") == _MEMORY:
                return cls(memory=True, **common)
            return cls(path=url.resolve_path(base_dir), **common)
        if not url.host:
            raise ConfigError(f"{url.redacted()} names no host",
                              hint="write qdrant://HOST:6333, e.g. qdrant://127.0.0.1:6333")
        https = url.flag("https", False)
        server = f"{'https' if https else 'http'}://{url.host}:{url.port or 6333}"
        if url.path.strip("/"):
            server += "/" + url.path.strip("/")
        return cls(url=server, api_key=url.option("api_key") or url.password or None,
                   prefer_grpc=url.flag("prefer_grpc", False),
                   grpc_port=url.int_option("grpc_port", min=1, max=65535),
                   timeout=url.seconds_option("timeout"), **common)

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
        return scored_points(response.points, tenant)

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
        op = delete_op(tenant, internal)
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
        check_config(name, dim=coll.dim, distance=coll.distance, want_dim=self.dim,
                     want_distance=self.distance, explicit_distance=self._explicit_distance)
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
        prepared = prepare_points(tenant, batch)
        return _Prepared(dim=prepared.dim, digest=prepared.digest, points=[
            models.PointStruct(id=str(p.uid), vector=p.vector, payload=p.payload)
            for p in prepared.points])

    def __repr__(self) -> str:
        kind = "local" if self.is_local else "server"
        return f"QdrantRetrieval({kind} {self.location!r})"
