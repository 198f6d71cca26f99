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
import difflib
import hashlib
import json
import math
import os
import uuid
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
from aios_mesh.ports.retrieval import Condition, Filter, ScoredPoint
from aios_mesh.ports.retrieval_scope import ID_KEY, TENANT_KEY
from aios_mesh.ports.retrieval_scope import as_vector as _as_vector
from aios_mesh.ports.retrieval_scope import chain as _chain
from aios_mesh.ports.retrieval_scope import check_collection as _check_collection
from aios_mesh.ports.retrieval_scope import check_key as _check_key
from aios_mesh.ports.retrieval_scope import check_limit as _check_limit
from aios_mesh.ports.retrieval_scope import check_payload as _check_payload
from aios_mesh.ports.retrieval_scope import check_tenant as _check_tenant
from aios_mesh.ports.retrieval_scope import internal_id as _internal_id
from aios_mesh.ports.retrieval_scope import public_id as _public_id

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
_INT64_MAX: Final = 2**63 - 1

_T = TypeVar("_T")


# --------------------------------------------------------------------------- validation


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _match_value(value: object) -> qe.MatchValue:
    if isinstance(value, bool):
        # Trap: MatchValue(True) is read as the integer 1 by the binding and then matches
        # payload 1 but not payload true; numpy's bool_ reaches the Bool variant.
        return qe.MatchValue(cast(Any, np.bool_(value)))
    if isinstance(value, int):
        if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            raise InvalidInput(f"eq value {value} is outside the int64 range",
                               hint="compare such numbers with op='range'")
        return qe.MatchValue(value)
    if isinstance(value, str):
        return qe.MatchValue(value)
    raise InvalidInput(f"eq value {value!r} is not a string, integer or bool",
                       hint="use op='range' with gte=/lte= for floats")


def _match_any(value: object) -> qe.MatchAny:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
        raise InvalidInput(f"any value {value!r} is not a list",
                           hint="pass value=[...] of strings or of integers")
    items = list(value)
    if all(isinstance(v, str) for v in items):
        return qe.MatchAny(cast(list[str], items))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return qe.MatchAny(cast(list[int], items))
    raise InvalidInput(f"any value {value!r} mixes types or holds something other than "
                       "strings or integers",
                       hint="pass only strings or only integers; for bools use op='eq'")


def _range(cond: Condition) -> qe.RangeFloat:
    if cond.value is not None:
        raise InvalidInput(f"range condition on {cond.key!r} takes gte=/lte=, not value=",
                           hint="write Condition(key, 'range', gte=..., lte=...)")
    if cond.gte is None and cond.lte is None:
        raise InvalidInput(f"range condition on {cond.key!r} has neither gte nor lte",
                           hint="set gte=, lte= or both")
    for bound in (cond.gte, cond.lte):
        if bound is not None and (not _is_number(bound) or not math.isfinite(bound)):
            raise InvalidInput(f"range bound {bound!r} on {cond.key!r} is not a finite number",
                               hint="use finite int or float bounds")
    return qe.RangeFloat(gte=cond.gte, lte=cond.lte)


def _condition(cond: object) -> qe.FieldCondition:
    if not isinstance(cond, Condition):
        raise InvalidInput(f"{cond!r} is not a Condition",
                           hint="build filters from aios_mesh.ports.retrieval.Condition")
    key = _check_key(cond.key)
    try:
        if cond.op == "eq":
            return qe.FieldCondition(key=key, match=_match_value(cond.value))
        if cond.op == "any":
            return qe.FieldCondition(key=key, match=_match_any(cond.value))
        if cond.op == "range":
            return qe.FieldCondition(key=key, range=_range(cond))
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. "invalid JSON path"
        raise InvalidInput(f"condition {cond!r} is not valid: {exc}",
                           hint="check the key path and the value types") from exc
    raise InvalidInput(f"unknown condition op {cond.op!r}",
                       hint="use op='eq', 'any' or 'range'")


def _tenant_condition(tenant: str) -> qe.FieldCondition:
    return qe.FieldCondition(key=TENANT_KEY, match=qe.MatchValue(tenant))


def _engine_filter(tenant: str, user: Filter | None) -> qe.Filter:
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
    return qe.Filter(must=must, must_not=must_not or None)


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
                              hint=f"{hint}types are: {', '.join(_INDEX_TYPES)} (use float "
                                   "for any field holding non-integer numbers)")
        try:
            _check_key(name)
        except InvalidInput as exc:
            raise ConfigError(f"cannot index field {name!r}: {exc.message}",
                              hint="index only your own payload fields") from exc
        out[name] = kind
    return out


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Meta:
    """What ``mesh.json`` persists next to a shard."""

    dim: int
    distance: str
    writes: int = 0
    digest: str = ""

    def snapshot_id(self) -> str:
        return f"{self.writes}-{self.digest[:12]}"

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


def _initial_digest(name: str, dim: int, distance: str) -> str:
    return hashlib.sha256(_SNAPSHOT_SEED + f"|{name}|{dim}|{distance}".encode()).hexdigest()


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
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ConfigError(f"dim={dim!r} is not a positive integer",
                              hint="write ?dim=384 (or leave it out to take it from the first "
                                   "upsert)")
        if distance not in _DISTANCES:
            raise ConfigError(f"unknown distance {distance!r}",
                              hint=f"use one of {', '.join(_DISTANCES)}")
        self.root = Path(root)
        self.dim = dim
        self.distance = distance
        self.indexes = _parse_indexes(index)
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
        merged: dict[str, Any] = {**url.options, **options}
        unknown = sorted(set(merged) - set(_OPTIONS))
        if unknown:
            close = difflib.get_close_matches(unknown[0], _OPTIONS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown qdrant-edge option(s) {unknown} in {url.redacted()}",
                              hint=f"{hint}options are: {', '.join(_OPTIONS)}")
        dim_opt = merged.get("dim")
        dim: int | None = None
        if dim_opt not in (None, ""):
            try:
                dim = int(dim_opt)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"dim={dim_opt!r} is not an integer",
                                  hint="write ?dim=384") from exc
        dist_opt = merged.get("distance")
        distance = str(dist_opt).lower() if dist_opt not in (None, "") else "cosine"
        if distance not in _DISTANCES:
            close = difflib.get_close_matches(distance, _DISTANCES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown distance {dist_opt!r} in {url.redacted()}",
                              hint=f"{hint}use one of {', '.join(_DISTANCES)}")
        return cls(url.resolve_path(base_dir), dim=dim, distance=distance,
                   index=merged.get("index"), _explicit_distance=dist_opt not in (None, ""))

    # ----------------------------------------------------------------- port methods

    async def upsert(self, collection: str, points: Sequence[Any], *, tenant: str) -> None:
        """Insert or replace ``points`` of ``tenant``. Validates the whole batch first."""
        self._check_open()
        _check_tenant(tenant)
        _check_collection(collection)
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
        _check_tenant(tenant)
        _check_collection(collection)
        _check_limit(limit)
        engine_filter = _engine_filter(tenant, filter)
        vec = _as_vector(vector, "query vector")
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
        out: list[ScoredPoint] = []
        for hit in hits:
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
        _check_tenant(tenant)
        _check_collection(collection)
        publics = sorted({_public_id(i) for i in ids}, key=lambda p: (type(p).__name__, p))
        if not publics or not self._exists(collection):
            return
        coll = await self._collection(collection, create_dim=None)
        internal = {_internal_id(tenant, p) for p in publics}
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
            op = hashlib.sha256(b"delete|" + tenant.encode() + b"|"
                                + b"".join(u.bytes for u in sorted(internal))).digest()
            self._apply(coll, op, qe.UpdateOperation.delete_points_by_filter(scope), "delete")

    async def snapshot(self, collection: str) -> str:
        """``"<writes>-<hash>"`` naming the collection's current contents."""
        self._check_open()
        _check_collection(collection)
        coll = await self._collection(collection, create_dim=None)
        return coll.meta.snapshot_id()

    async def optimize(self, collection: str) -> bool:
        """Build the HNSW index and merge segments (Edge never optimizes on its own).

        Not part of the port; worth calling after a large bulk load. Runs in a thread.
        """
        self._check_open()
        coll = await self._collection(_check_collection(collection), create_dim=None)
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
        rows: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        payloads: list[dict[str, Any]] = []
        internal: list[uuid.UUID] = []
        for n, point in enumerate(batch):
            what = f"point #{n}"
            if not all(hasattr(point, a) for a in ("id", "vector")):
                raise InvalidInput(f"{what} is not a Point",
                                   hint="pass aios_mesh.ports.retrieval.Point objects")
            public = _public_id(point.id)
            rows.append(_as_vector(point.vector, f"vector of {what} (id {public!r})"))
            payload = _check_payload(getattr(point, "payload", None), f"{what} (id {public!r})")
            payload[TENANT_KEY] = tenant
            payload[ID_KEY] = public
            payloads.append(payload)
            internal.append(_internal_id(tenant, public))
        dims = {r.shape[0] for r in rows}
        if len(dims) != 1:
            raise InvalidInput(f"the batch mixes vector sizes {sorted(dims)}",
                               hint="every vector of a collection has the same size")
        digest = hashlib.sha256(b"upsert|")
        engine_points: list[qe.Point] = []
        for uid, row, payload in zip(internal, rows, payloads, strict=True):
            try:
                encoded = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
                engine_points.append(qe.Point(uid, row.tolist(), payload))
            except (TypeError, ValueError, OverflowError, orjson.JSONEncodeError) as exc:
                raise InvalidInput(f"payload of point {payload[ID_KEY]!r} is not JSON: {exc}",
                                   hint="use str keys and JSON values (no NaN, no objects)"
                                   ) from exc
            digest.update(uid.bytes)
            digest.update(row.tobytes())
            digest.update(encoded)
        return _Prepared(dim=dims.pop(), points=engine_points, digest=digest.digest())

    def _apply(self, coll: _Collection, op_digest: bytes, op: qe.UpdateOperation,
               doing: str) -> None:
        """Bump and persist the write counter, then apply ``op`` (caller holds the lock).

        The counter moves first: after a crash the id may change without a content change,
        but one id never names two different contents.
        """
        meta = _Meta(dim=coll.meta.dim, distance=coll.meta.distance,
                     writes=coll.meta.writes + 1, digest=_chain(coll.meta.digest, op_digest))
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
                         digest=_initial_digest(name, dim, self.distance))
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
        if self.dim is not None and meta.dim != self.dim:
            raise ConfigError(f"collection {name!r} has dim={meta.dim}, the adapter is "
                              f"configured with dim={self.dim}",
                              hint="fix ?dim= or use another collection/folder")
        if self._explicit_distance and meta.distance != self.distance:
            raise ConfigError(f"collection {name!r} uses distance={meta.distance}, the "
                              f"adapter is configured with distance={self.distance}",
                              hint="fix ?distance= or use another collection/folder")

    @staticmethod
    def _close_shard(coll: _Collection) -> None:
        with contextlib.suppress(Exception):
            coll.shard.flush()
        with contextlib.suppress(Exception):
            coll.shard.close()
