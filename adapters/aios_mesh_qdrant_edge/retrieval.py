"""The Retrieval port on Qdrant Edge: one in-process shard per collection.

Layout of the data folder (``qdrant-edge:///qdrant`` → ``<base_dir>/qdrant``)::

    qdrant/
      <collection>/
        mesh.json     dim, distance, write counter and hash chain (the snapshot id)
        shard/        the Qdrant Edge shard (WAL + segments)

Tenancy is enforced here, not by the caller: every stored point carries its tenant in the
reserved payload key ``_tenant`` and the caller's id in ``_mesh_id``; every query and delete
adds a ``must`` condition on ``_tenant``; a caller's filter or payload may not name a reserved
key; the payload handed back has them stripped. The engine's point id is
``uuid5(tenant, caller id)``, so two tenants may use the same id without touching each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self, TypeVar, cast

import numpy as np
import orjson
import qdrant_edge as qe

from aios_mesh.backends import BackendURL
from aios_mesh.errors import (
    BackendUnavailable,
    ConfigError,
    IntegrityError,
    InvalidInput,
    MeshError,
    NotFound,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.retrieval import Filter, ScoredPoint
from aios_mesh.ports.retrieval_scope import (
    ID_KEY,
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

__all__ = ["ID_KEY", "TENANT_KEY", "EdgeRetrieval"]


_DISTANCES: Final[Mapping[str, qe.Distance]] = {
    "cosine": qe.Distance.Cosine,
    "dot": qe.Distance.Dot,
    "euclid": qe.Distance.Euclid,
}
_INDEX_TYPES: Final[Mapping[str, qe.PayloadSchemaType]] = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
}
_OPTIONS: Final = ("dim", "distance", "index")
_SNAPSHOT_SEED: Final = b"aios-mesh/qdrant-edge/v1"
_META_FILE: Final = "mesh.json"
_SHARD_DIR: Final = "shard"
_META_FORMAT: Final = 1
#: Batches with more vector floats than this are prepared and written in a worker thread.
_INLINE_FLOATS: Final = 32_768

_T = TypeVar("_T")


# --------------------------------------------------------------------------- filters


def _engine_condition(cond: CheckedCondition) -> qe.FieldCondition:
    """A checked condition as the binding's class (see ``retrieval_scope.check_filter``)."""
    try:
        if cond.op == "eq":
            if isinstance(cond.value, bool):
                # Trap: MatchValue(True) is read as the integer 1 by the binding and then
                # matches payload 1 but not payload true; numpy's bool_ reaches the Bool variant.
                return qe.FieldCondition(key=cond.key,
                                         match=qe.MatchValue(cast(Any, np.bool_(cond.value))))
            return qe.FieldCondition(key=cond.key, match=qe.MatchValue(cast(Any, cond.value)))
        if cond.op == "any":
            return qe.FieldCondition(key=cond.key, match=qe.MatchAny(cast(Any, cond.value)))
        return qe.FieldCondition(key=cond.key, range=qe.RangeFloat(gte=cond.gte, lte=cond.lte))
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. "invalid JSON path"
        raise InvalidInput(f"condition on {cond.key!r} is not valid: {exc}",
                           hint="check the key path and the value types") from exc


def _tenant_condition(tenant: str) -> qe.FieldCondition:
    return qe.FieldCondition(key=TENANT_KEY, match=qe.MatchValue(tenant))


def _engine_filter(tenant: str, user: Filter | None) -> qe.Filter:
    """The caller's filter ANDed with the tenant scope (no caller condition can widen it)."""
    must, must_not = check_filter(user)
    return qe.Filter(must=[_tenant_condition(tenant), *map(_engine_condition, must)],
                     must_not=[_engine_condition(c) for c in must_not] or None)


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Meta:
    """What ``mesh.json`` persists next to a shard."""

    dim: int
    distance: str
    writes: int = 0
    digest: str = ""

    def snapshot_id(self) -> str:
        return snapshot_label(self.writes, self.digest)

    def to_json(self) -> bytes:
        return json.dumps({"format": _META_FORMAT, "dim": self.dim, "distance": self.distance,
                           "writes": self.writes, "digest": self.digest},
                          indent=2).encode() + b"\n"


@dataclass(slots=True)
class _Collection:
    name: str
    folder: Path
    shard: qe.EdgeShard
    meta: _Meta
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def meta_path(self) -> Path:
        return self.folder / _META_FILE


@dataclass(slots=True)
class _Prepared:
    """A validated upsert batch, ready for the engine."""

    dim: int
    points: list[qe.Point]
    digest: bytes


def _encode(payload: dict[str, Any]) -> bytes:
    """The payload as the snapshot hash has always read it (orjson, sorted keys); raises for
    what the engine cannot hold either (integers beyond 64 bits)."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def _write_meta(path: Path, meta: _Meta) -> None:
    """Atomically replace ``mesh.json`` (write, fsync, rename)."""
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "wb") as fh:
        fh.write(meta.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_meta(path: Path) -> _Meta:
    try:
        data = json.loads(path.read_bytes())
        meta = _Meta(dim=int(data["dim"]), distance=str(data["distance"]),
                     writes=int(data["writes"]), digest=str(data["digest"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"cannot read {path}: {exc}",
                             hint="restore the collection folder from a backup or delete it "
                                  "to rebuild the index") from exc
    if meta.distance not in _DISTANCES or meta.dim < 1:
        raise IntegrityError(f"{path} holds an invalid dim/distance",
                             hint="restore the collection folder from a backup")
    return meta


def _engine_error(exc: Exception, doing: str, *, write: bool) -> MeshError:
    """Translate the binding's plain ``Exception`` (it has no exception types) by message."""
    text = str(exc)
    if "dimension" in text.lower() or isinstance(exc, TypeError | ValueError):
        return InvalidInput(f"Qdrant Edge rejected the {doing}: {text}",
                            hint="check vector dimensions and payload values")
    if write:
        return IntegrityError(f"Qdrant Edge could not apply the {doing}: {text}",
                              hint="check free disk space and folder permissions")
    return BackendUnavailable(f"Qdrant Edge failed during the {doing}: {text}",
                              hint="check the data folder; reopen the adapter if it was closed")


# --------------------------------------------------------------------------- adapter


class EdgeRetrieval:
    """Retrieval on Qdrant Edge, in-process: one shard per collection under ``root``.

    Args:
        root: data folder; each collection lives in ``root/<collection>/``.
        dim: vector size of new collections; ``None`` takes it from the first upsert.
        distance: ``cosine`` (default), ``dot`` or ``euclid`` for new collections. Euclid
            scores are distances: smaller is closer, results still come best first.
        index: payload indexes to keep on every collection, ``{"field": "keyword"}`` or
            ``"field:keyword,price:float"`` (types: keyword, integer, float, bool). Filters
            on unindexed fields are correct but read every candidate's payload.

    Snapshot ids are ``"<writes>-<hash>"``: a per-collection write counter and a hash chain
    over every write's content, persisted in ``mesh.json``. The same writes in the same
    order give the same id; any accepted write changes it.
    """

    features: frozenset[Feature] = frozenset(
        {Feature.FILTERED_QUERY, Feature.SNAPSHOT, Feature.DURABLE})

    def __init__(self, root: Path, *, dim: int | None = None, distance: str = "cosine",
                 index: str | Mapping[str, str] | None = None,
                 _explicit_distance: bool | None = None) -> None:
        check_index_config(dim, distance)
        self.root = Path(root)
        self.dim = dim
        self.distance = distance
        self.indexes = parse_indexes(index)
        self._explicit_distance = (_explicit_distance if _explicit_distance is not None
                                   else distance != "cosine")
        self._collections: dict[str, _Collection] = {}
        self._open_lock: asyncio.Lock | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """Build from ``qdrant-edge:///rel/path?dim=384&distance=cosine&index=f:keyword``.

        Keyword arguments win over the URL's query options.
        """
        url = url.with_options(options)
        url.check_options(_OPTIONS, what="qdrant-edge")
        opts = index_options(url)
        return cls(url.resolve_path(base_dir), dim=opts.dim, distance=opts.distance,
                   index=cast(Any, opts.index), _explicit_distance=opts.explicit_distance)

    # ----------------------------------------------------------------- port methods

    async def upsert(self, collection: str, points: Sequence[Any], *, tenant: str) -> None:
        """Insert or replace ``points`` of ``tenant``. Validates the whole batch first."""
        self._check_open()
        check_tenant(tenant)
        check_collection(collection)
        batch = list(points)
        if not batch:
            return
        big = self._is_big(batch)
        prepared = await self._run(big, self._prepare_upsert, tenant, batch)
        coll = await self._collection(collection, create_dim=prepared.dim)
        if prepared.dim != coll.meta.dim:
            raise InvalidInput(f"vectors have {prepared.dim} dimensions, collection "
                               f"{collection!r} has {coll.meta.dim}",
                               hint="embed with the model the collection was built with")
        async with coll.lock:
            self._check_open()
            await self._run(big, self._apply, coll, prepared.digest,
                            qe.UpdateOperation.upsert_points(prepared.points), "upsert")

    async def query(self, collection: str, vector: Sequence[float], *, tenant: str,
                    limit: int = 10, filter: Filter | None = None) -> list[ScoredPoint]:
        """The ``limit`` points of ``tenant`` nearest ``vector``, best first.

        Raises :class:`NotFound` for a collection that was never written to.
        """
        self._check_open()
        check_tenant(tenant)
        check_collection(collection)
        check_limit(limit)
        engine_filter = _engine_filter(tenant, filter)
        vec = as_vector(vector, "query vector")
        coll = await self._collection(collection, create_dim=None)
        if vec.shape[0] != coll.meta.dim:
            raise InvalidInput(f"query vector has {vec.shape[0]} dimensions, collection "
                               f"{collection!r} has {coll.meta.dim}",
                               hint="embed the query with the collection's model")
        # Trap: the binding reads an ndarray element by element (8x slower than a list).
        request = qe.QueryRequest(limit=limit, query=qe.Query.Nearest(vec.tolist()),
                                  filter=engine_filter, with_payload=True, with_vector=False)
        try:
            hits = coll.shard.query(request)
        except Exception as exc:
            raise _engine_error(exc, "query", write=False) from exc
        return scored_points(hits, tenant)

    async def delete(self, collection: str, ids: Sequence[int | str], *, tenant: str) -> None:
        """Delete ``tenant``'s points with these ids. Unknown ids/collections are a no-op."""
        self._check_open()
        check_tenant(tenant)
        check_collection(collection)
        publics = sorted({public_id(i) for i in ids}, key=lambda p: (type(p).__name__, p))
        if not publics or not self._exists(collection):
            return
        coll = await self._collection(collection, create_dim=None)
        internal = {internal_id(tenant, p) for p in publics}
        scope = qe.Filter(must=[_tenant_condition(tenant),
                                qe.HasIdCondition(cast(Any, internal))])
        async with coll.lock:
            self._check_open()
            try:
                present = coll.shard.count(qe.CountRequest(exact=True, filter=scope))
            except Exception as exc:
                raise _engine_error(exc, "delete", write=False) from exc
            if present == 0:
                return  # nothing of this tenant's to delete: contents and snapshot unchanged
            self._apply(coll, delete_op(tenant, internal),
                        qe.UpdateOperation.delete_points_by_filter(scope), "delete")

    async def snapshot(self, collection: str) -> str:
        """``"<writes>-<hash>"`` naming the collection's current contents."""
        self._check_open()
        check_collection(collection)
        coll = await self._collection(collection, create_dim=None)
        return coll.meta.snapshot_id()

    async def optimize(self, collection: str) -> bool:
        """Build the HNSW index and merge segments (Edge never optimizes on its own).

        Not part of the port; worth calling after a large bulk load. Runs in a thread.
        """
        self._check_open()
        coll = await self._collection(check_collection(collection), create_dim=None)
        async with coll.lock:
            try:
                return await asyncio.to_thread(coll.shard.optimize)
            except Exception as exc:
                raise _engine_error(exc, "optimize", write=True) from exc

    async def aclose(self) -> None:
        """Flush and close every open shard. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for coll in list(self._collections.values()):
            async with coll.lock:
                await asyncio.to_thread(self._close_shard, coll)
        self._collections.clear()

    # ----------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise MeshError("this EdgeRetrieval is closed",
                            hint="load a new retrieval adapter; aclose() is final")

    def _is_big(self, batch: list[Any]) -> bool:
        first = getattr(batch[0], "vector", None)
        width = len(first) if isinstance(first, Sequence | np.ndarray) else 1
        return len(batch) * width > _INLINE_FLOATS

    @staticmethod
    async def _run(big: bool, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(fn, *args) if big else fn(*args)

    def _exists(self, name: str) -> bool:
        return name in self._collections or (self.root / name / _META_FILE).is_file()

    @staticmethod
    def _prepare_upsert(tenant: str, batch: list[Any]) -> _Prepared:
        """Validate every point and build engine points; nothing is written here."""
        prepared = prepare_points(tenant, batch, encode=_encode)
        engine_points: list[qe.Point] = []
        for point in prepared.points:
            try:
                engine_points.append(qe.Point(point.uid, point.vector, point.payload))
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidInput(f"payload of point {point.payload[ID_KEY]!r} is not JSON: "
                                   f"{exc}", hint="use str keys and JSON values (no NaN, no "
                                                  "objects)") from exc
        return _Prepared(dim=prepared.dim, points=engine_points, digest=prepared.digest)

    def _apply(self, coll: _Collection, op_digest: bytes, op: qe.UpdateOperation,
               doing: str) -> None:
        """Bump and persist the write counter, then apply ``op`` (caller holds the lock).

        The counter moves first: after a crash the id may change without a content change,
        but one id never names two different contents.
        """
        meta = _Meta(dim=coll.meta.dim, distance=coll.meta.distance,
                     writes=coll.meta.writes + 1, digest=chain(coll.meta.digest, op_digest))
        try:
            _write_meta(coll.meta_path, meta)
        except OSError as exc:
            raise IntegrityError(f"cannot write {coll.meta_path}: {exc}",
                                 hint="check free disk space and folder permissions") from exc
        coll.meta = meta
        try:
            coll.shard.update(op)
        except Exception as exc:
            raise _engine_error(exc, doing, write=True) from exc

    async def _collection(self, name: str, *, create_dim: int | None) -> _Collection:
        """The open collection ``name``; opened from disk, or created if ``create_dim``."""
        coll = self._collections.get(name)
        if coll is not None:
            return coll
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            self._check_open()
            coll = self._collections.get(name)
            if coll is None:
                if create_dim is None and not self._exists(name):
                    raise NotFound(f"retrieval collection {name!r} does not exist",
                                   hint="upsert points into it first (collections are created "
                                        "by their first upsert)", collection=name)
                coll = await asyncio.to_thread(self._open, name, create_dim)
                self._collections[name] = coll
            return coll

    def _open(self, name: str, create_dim: int | None) -> _Collection:
        folder = self.root / name
        meta_path = folder / _META_FILE
        shard_dir = folder / _SHARD_DIR
        if not meta_path.is_file():
            if create_dim is None:  # pragma: no cover - checked by the caller
                raise NotFound(f"retrieval collection {name!r} does not exist")
            dim = self.dim if self.dim is not None else create_dim
            if dim != create_dim:
                raise InvalidInput(f"vectors have {create_dim} dimensions, the adapter is "
                                   f"configured with dim={dim}",
                                   hint="embed with the configured model or change ?dim=")
            meta = _Meta(dim=dim, distance=self.distance,
                         digest=initial_digest(_SNAPSHOT_SEED, name, dim, self.distance))
            try:
                folder.mkdir(parents=True, exist_ok=True)
                _write_meta(meta_path, meta)
            except OSError as exc:
                raise ConfigError(f"cannot create collection folder {folder}: {exc}",
                                  hint="make the retrieval data folder writable") from exc
        meta = _read_meta(meta_path)
        self._check_config(name, meta)
        try:
            if (shard_dir / "edge_config.json").is_file():
                shard = qe.EdgeShard.load(str(shard_dir))
            else:  # first open, or a crash between mesh.json and the shard's creation
                config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(
                    size=meta.dim, distance=_DISTANCES[meta.distance]))
                shard = qe.EdgeShard.create(str(shard_dir), config)
                shard.update(qe.UpdateOperation.create_field_index(
                    TENANT_KEY, qe.KeywordIndexParams(is_tenant=True)))
            self._ensure_indexes(shard)
        except Exception as exc:
            locked = "WouldBlock" in str(exc) or "lock" in str(exc).lower()
            raise BackendUnavailable(
                f"cannot open Qdrant Edge shard {shard_dir}: {exc}",
                hint=("another adapter or process has this folder open; close it or give "
                      "this one its own folder") if locked else
                     "check the folder; restore it from a backup if it is damaged",
            ) from exc
        return _Collection(name=name, folder=folder, shard=shard, meta=meta)

    def _ensure_indexes(self, shard: qe.EdgeShard) -> None:
        """Create the declared payload indexes that are missing or of another type."""
        if not self.indexes:
            return
        have = {k: v.data_type for k, v in shard.info().payload_schema.items()}
        for name, kind in self.indexes.items():
            wanted = _INDEX_TYPES[kind]
            if have.get(name) != wanted:
                shard.update(qe.UpdateOperation.create_field_index(name, wanted))

    def _check_config(self, name: str, meta: _Meta) -> None:
        check_config(name, dim=meta.dim, distance=meta.distance, want_dim=self.dim,
                     want_distance=self.distance, explicit_distance=self._explicit_distance)

    @staticmethod
    def _close_shard(coll: _Collection) -> None:
        with contextlib.suppress(Exception):
            coll.shard.flush()
        with contextlib.suppress(Exception):
            coll.shard.close()
