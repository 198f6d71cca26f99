"""The tenant-scoping design every Qdrant-family Retrieval adapter shares, as pure helpers.

Reserved payload keys, the id namespace and the ``uuid5`` id mapping live here once, so a
point written through the Edge adapter or the qdrant-client adapter has the same engine id
and payload shape, and the caller-facing checks (tenant, collection name, filter keys,
payloads, vectors) behave the same on both. So does everything between the port and an
engine's own types: the adapters' shared options (``dim``, ``distance``, ``index``) and their
checks, filter validation (:func:`check_filter` gives engine-neutral
:class:`CheckedCondition` objects that each adapter maps onto its SDK's classes in a few
lines), upsert preparation with the snapshot hash (:func:`prepare_points`), the delete
operation's hash, the snapshot-id format, and turning engine hits into tenant-checked
:class:`~aios_mesh.ports.retrieval.ScoredPoint` objects (:func:`scored_points`).

Nothing here imports a vector engine; numpy is imported only when a vector is checked.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from aios_mesh.errors import ConfigError, InvalidInput
from aios_mesh.ports.retrieval import Condition, Filter, ScoredPoint

if TYPE_CHECKING:
    import numpy as np

    from aios_mesh.backends import BackendURL

__all__ = [
    "DISTANCES",
    "ID_KEY",
    "ID_NAMESPACE",
    "INDEX_TYPES",
    "RESERVED",
    "TENANT_KEY",
    "CheckedCondition",
    "IndexOptions",
    "PreparedBatch",
    "PreparedPoint",
    "as_vector",
    "chain",
    "check_collection",
    "check_config",
    "check_filter",
    "check_index_config",
    "check_key",
    "check_limit",
    "check_payload",
    "check_tenant",
    "delete_op",
    "encode_payload",
    "index_options",
    "initial_digest",
    "internal_id",
    "parse_indexes",
    "prepare_points",
    "public_id",
    "scored_points",
    "snapshot_label",
]

#: Reserved payload key holding the tenant of a point (same as the Edge adapter).
TENANT_KEY: Final = "_tenant"
#: Reserved payload key holding the caller's own point id (same as the Edge adapter).
ID_KEY: Final = "_mesh_id"
RESERVED: Final = frozenset({TENANT_KEY, ID_KEY})
#: uuid5 namespace of engine point ids — the Edge adapter's, so ids agree across adapters.
ID_NAMESPACE: Final = uuid.UUID("6f1c3c2e-3d1a-5b7e-9a55-0a105e5a0001")

#: Distance names of the adapters' ``distance=`` option (Euclid scores are distances).
DISTANCES: Final = ("cosine", "dot", "euclid")
#: Payload index types of the adapters' ``index=`` option.
INDEX_TYPES: Final = ("keyword", "integer", "float", "bool")

_COLLECTION_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_UINT64_MAX: Final = 2**64 - 1
_INT64_MAX: Final = 2**63 - 1


def check_tenant(tenant: object) -> str:
    """``tenant`` if it is a non-empty string, else :class:`InvalidInput`."""
    if not isinstance(tenant, str) or not tenant:
        raise InvalidInput(f"tenant must be a non-empty string, got {tenant!r}",
                           hint="pass tenant='<tenant id>' on every retrieval call")
    return tenant


def check_collection(name: object) -> str:
    """A collection name of 1-128 characters from ``A-Za-z0-9_-``."""
    if not isinstance(name, str) or _COLLECTION_RE.fullmatch(name) is None:
        raise InvalidInput(f"invalid collection name {name!r}",
                           hint="use 1-128 characters from A-Z a-z 0-9 _ -, starting with a "
                                "letter or digit")
    return name


def check_limit(limit: object) -> int:
    """A positive integer ``limit``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be a positive integer, got {limit!r}",
                           hint="pass limit=1 or more")
    return limit


def public_id(point_id: object) -> int | str:
    """The caller's id in canonical form: ints as they are, UUID strings lower-cased."""
    if isinstance(point_id, bool):
        raise InvalidInput(f"point id {point_id!r} is a bool",
                           hint="use a non-negative integer or a string")
    if isinstance(point_id, int):
        if not 0 <= point_id <= _UINT64_MAX:
            raise InvalidInput(f"point id {point_id} is out of range",
                               hint="integer ids must be between 0 and 2**64-1")
        return point_id
    if isinstance(point_id, uuid.UUID):
        return str(point_id)
    if isinstance(point_id, str) and point_id:
        try:
            return str(uuid.UUID(point_id))
        except ValueError:
            return point_id
    raise InvalidInput(f"point id {point_id!r} is neither an integer nor a string",
                       hint="use a non-negative integer or a (UUID) string")


def internal_id(tenant: str, public: int | str) -> uuid.UUID:
    """Deterministic engine id of (tenant, caller id); length-prefixed so no two pairs clash."""
    kind = "i" if isinstance(public, int) else "s"
    return uuid.uuid5(ID_NAMESPACE, f"{len(tenant)}:{tenant}|{kind}:{public}")


def as_vector(vector: object, what: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A finite float32 vector, or :class:`InvalidInput` naming ``what`` is wrong."""
    import numpy as np
    if isinstance(vector, str | bytes) or not isinstance(vector, Sequence | np.ndarray):
        raise InvalidInput(f"{what} is not a sequence of numbers",
                           hint="pass a list of floats")
    try:
        raw = np.asarray(vector)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not a flat sequence of numbers",
                           hint="pass a list of floats") from exc
    if raw.ndim != 1 or raw.size == 0 or raw.dtype.kind not in "biuf":
        raise InvalidInput(f"{what} is not a flat, non-empty sequence of numbers",
                           hint="pass a list of floats")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = raw.astype(np.float32)
    if not bool(np.isfinite(arr).all()):
        raise InvalidInput(f"{what} contains NaN or infinity (or a value too large for "
                           "float32)", hint="check the embedding model's output")
    return arr


def _path_head(key: str) -> str:
    """The first segment of a Qdrant JSON path: ``a`` of ``a.b``, ``a[]``, ``"a".b``."""
    if key.startswith('"'):
        end = key.find('"', 1)
        return key[1:end] if end > 0 else key[1:]
    return re.split(r"[.\[]", key, maxsplit=1)[0]


def check_key(key: object) -> str:
    """A payload key a filter may name: non-empty, never a reserved key (in any spelling)."""
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"filter key {key!r} is not a non-empty string",
                           hint="name a payload field, e.g. 'category' or 'meta.lang'")
    if _path_head(key) in RESERVED:
        raise InvalidInput(f"filter key {key!r} names a reserved field",
                           hint="tenant scoping is added by the adapter; pass tenant=... "
                                f"and never filter on {sorted(RESERVED)}")
    return key


def _check_json(value: object, where: str, depth: int = 0) -> None:
    if depth > 64:
        raise InvalidInput(f"{where} is nested too deeply", hint="flatten the payload")
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where} holds {value!r}, which JSON cannot carry",
                               hint="replace NaN/infinity with null or a number")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where} has a non-string key {key!r}",
                                   hint="use str keys in payloads")
            _check_json(item, where, depth + 1)
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json(item, where, depth + 1)
        return
    raise InvalidInput(f"{where} holds a {type(value).__name__}, which is not JSON",
                       hint="use str keys and JSON values (no NaN, no objects)")


def check_payload(payload: object, what: str) -> dict[str, Any]:
    """A copy of a caller's payload: a JSON object that uses no reserved key."""
    if payload is None:
        return {}
    if not isinstance(payload, Mapping):
        raise InvalidInput(f"payload of {what} is not a mapping", hint="pass a dict")
    clash = RESERVED & set(payload)
    if clash:
        raise InvalidInput(f"payload of {what} uses reserved key(s) {sorted(clash)}",
                           hint=f"rename the field; the adapter owns {sorted(RESERVED)}")
    _check_json(payload, f"payload of {what}")
    return dict(payload)


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """Canonical JSON of a checked payload (sorted keys), for the snapshot hash chain."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def chain(prev: str, op: bytes) -> str:
    """The next link of a snapshot hash chain."""
    return hashlib.sha256(bytes.fromhex(prev) + op).hexdigest()


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class IndexOptions:
    """The options every Qdrant-family adapter takes: vector size and distance of new
    collections, payload indexes, and whether the distance was asked for explicitly (then an
    existing collection with another distance is a :class:`ConfigError`)."""

    dim: int | None
    distance: str
    index: object
    explicit_distance: bool


def index_options(url: BackendURL) -> IndexOptions:
    """``dim``, ``distance`` and ``index`` read from ``url`` (keyword options applied)."""
    distance = url.choice_option("distance", DISTANCES, "cosine")
    return IndexOptions(dim=url.int_option("dim"), distance=distance,
                        index=url.value("index"),
                        explicit_distance=url.value("distance") is not None)


def check_index_config(dim: object, distance: object) -> None:
    """:class:`ConfigError` unless ``dim`` is ``None`` or a positive int and ``distance`` is
    one of :data:`DISTANCES` (the constructors' checks)."""
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ConfigError(f"dim={dim!r} is not a positive integer",
                          hint="write ?dim=384 (or leave it out to take it from the first "
                               "upsert)")
    if distance not in DISTANCES:
        raise ConfigError(f"unknown distance {distance!r}",
                          hint=f"use one of {', '.join(DISTANCES)}")


def check_config(name: str, *, dim: int, distance: str, want_dim: int | None,
                 want_distance: str, explicit_distance: bool) -> None:
    """:class:`ConfigError` when an existing collection disagrees with the configured ``dim``
    (when one is set) or the explicitly configured distance."""
    if want_dim is not None and dim != want_dim:
        raise ConfigError(f"collection {name!r} has dim={dim}, the adapter is configured "
                          f"with dim={want_dim}",
                          hint="fix ?dim= or use another collection/folder")
    if explicit_distance and distance != want_distance:
        raise ConfigError(f"collection {name!r} uses distance={distance}, the adapter is "
                          f"configured with distance={want_distance}",
                          hint="fix ?distance= or use another collection/folder")


def parse_indexes(spec: object) -> dict[str, str]:
    """``"category:keyword,price:float"`` or ``{"category": "keyword"}`` → field → type
    (one of :data:`INDEX_TYPES`); a reserved or empty field is a :class:`ConfigError`."""
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
        if kind not in INDEX_TYPES:
            close = difflib.get_close_matches(kind, INDEX_TYPES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown payload index type {kind!r} for {name!r}",
                              hint=f"{hint}types are: {', '.join(INDEX_TYPES)} (use float "
                                   "for any field holding non-integer numbers)")
        try:
            check_key(name)
        except InvalidInput as exc:
            raise ConfigError(f"cannot index field {name!r}: {exc.message}",
                              hint="index only your own payload fields") from exc
        out[name] = kind
    return out


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True, slots=True)
class CheckedCondition:
    """A caller's condition, validated; what an adapter maps onto its engine's classes.

    ``eq``: ``value`` is a str, an int in the int64 range or a bool. ``any``: ``value`` is a
    list of only strs or only ints. ``range``: finite ``gte``/``lte``, at least one set.
    """

    key: str
    op: Literal["eq", "any", "range"]
    value: str | int | bool | list[str] | list[int] | None = None
    gte: float | None = None
    lte: float | None = None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checked_eq(key: str, value: object) -> CheckedCondition:
    if isinstance(value, bool | str):
        return CheckedCondition(key, "eq", value)
    if isinstance(value, int):
        if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            raise InvalidInput(f"eq value {value} is outside the int64 range",
                               hint="compare such numbers with op='range'")
        return CheckedCondition(key, "eq", value)
    raise InvalidInput(f"eq value {value!r} is not a string, integer or bool",
                       hint="use op='range' with gte=/lte= for floats")


def _checked_any(key: str, value: object) -> CheckedCondition:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
        raise InvalidInput(f"any value {value!r} is not a list",
                           hint="pass value=[...] of strings or of integers")
    items = list(value)
    if all(isinstance(v, str) for v in items):
        return CheckedCondition(key, "any", [str(v) for v in items])
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return CheckedCondition(key, "any", [int(v) for v in items])
    raise InvalidInput(f"any value {value!r} mixes types or holds something other than "
                       "strings or integers",
                       hint="pass only strings or only integers; for bools use op='eq'")


def _checked_range(key: str, cond: Condition) -> CheckedCondition:
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
    return CheckedCondition(key, "range", gte=cond.gte, lte=cond.lte)


def check_condition(cond: object) -> CheckedCondition:
    """One caller condition, validated (:class:`InvalidInput` naming what is wrong)."""
    if not isinstance(cond, Condition):
        raise InvalidInput(f"{cond!r} is not a Condition",
                           hint="build filters from aios_mesh.ports.retrieval.Condition")
    key = check_key(cond.key)
    if cond.op == "eq":
        return _checked_eq(key, cond.value)
    if cond.op == "any":
        return _checked_any(key, cond.value)
    if cond.op == "range":
        return _checked_range(key, cond)
    raise InvalidInput(f"unknown condition op {cond.op!r}",
                       hint="use op='eq', 'any' or 'range'")


def check_filter(user: Filter | None) -> tuple[list[CheckedCondition], list[CheckedCondition]]:
    """The caller's ``must`` and ``must_not`` conditions, validated. The adapter ANDs them
    with its tenant condition, so no caller condition can widen the tenant scope."""
    if user is None:
        return [], []
    if not isinstance(user, Filter):
        raise InvalidInput(f"{user!r} is not a Filter",
                           hint="pass aios_mesh.ports.retrieval.Filter(must=..., must_not=...)")
    return [check_condition(c) for c in user.must], [check_condition(c) for c in user.must_not]


# --------------------------------------------------------------------------- writes


@dataclass(frozen=True, slots=True)
class PreparedPoint:
    """A validated point: engine id, vector and payload (with the reserved keys set)."""

    uid: uuid.UUID
    vector: list[float]
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A validated upsert batch and the hash of its content (the snapshot chain's link)."""

    dim: int
    points: list[PreparedPoint]
    digest: bytes


def prepare_points(tenant: str, batch: Sequence[Any], *,
                   encode: Callable[[dict[str, Any]], bytes] = encode_payload
                   ) -> PreparedBatch:
    """Validate every point of ``batch`` (ids, vectors, payloads; one vector size) and hash
    the batch as ``sha256("upsert|" + per point: uid, float32 vector bytes, encoded
    payload)``. ``encode`` writes a payload canonically for the hash (an adapter may pass its
    engine's encoder; a payload it cannot encode is :class:`InvalidInput`). Nothing is
    written."""
    rows: list[np.ndarray[Any, np.dtype[np.float32]]] = []
    payloads: list[dict[str, Any]] = []
    uids: list[uuid.UUID] = []
    for n, point in enumerate(batch):
        what = f"point #{n}"
        if not all(hasattr(point, a) for a in ("id", "vector")):
            raise InvalidInput(f"{what} is not a Point",
                               hint="pass aios_mesh.ports.retrieval.Point objects")
        public = public_id(point.id)
        rows.append(as_vector(point.vector, f"vector of {what} (id {public!r})"))
        payload = check_payload(getattr(point, "payload", None), f"{what} (id {public!r})")
        payload[TENANT_KEY] = tenant
        payload[ID_KEY] = public
        payloads.append(payload)
        uids.append(internal_id(tenant, public))
    dims = {r.shape[0] for r in rows}
    if len(dims) != 1:
        raise InvalidInput(f"the batch mixes vector sizes {sorted(dims)}",
                           hint="every vector of a collection has the same size")
    digest = hashlib.sha256(b"upsert|")
    points: list[PreparedPoint] = []
    for uid, row, payload in zip(uids, rows, payloads, strict=True):
        try:
            encoded = encode(payload)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(f"payload of point {payload[ID_KEY]!r} is not JSON: {exc}",
                               hint="use str keys and JSON values (no NaN, no objects, no "
                                    "integers beyond 64 bits)") from exc
        digest.update(uid.bytes)
        digest.update(row.tobytes())
        digest.update(encoded)
        points.append(PreparedPoint(uid, row.tolist(), payload))
    return PreparedBatch(dim=dims.pop(), points=points, digest=digest.digest())


def delete_op(tenant: str, internal: Iterable[uuid.UUID]) -> bytes:
    """The snapshot chain's link for deleting these engine ids of ``tenant``."""
    return hashlib.sha256(b"delete|" + tenant.encode() + b"|"
                          + b"".join(u.bytes for u in sorted(internal))).digest()


def initial_digest(seed: bytes, name: str, dim: int, distance: str) -> str:
    """The first link of a collection's snapshot chain (``seed`` names the adapter)."""
    return hashlib.sha256(seed + f"|{name}|{dim}|{distance}".encode()).hexdigest()


def snapshot_label(writes: int, digest: str) -> str:
    """A snapshot id: ``"<writes>-<first 12 hex digits of the chain>"``."""
    return f"{writes}-{digest[:12]}"


# --------------------------------------------------------------------------- reads


def scored_points(hits: Iterable[Any], tenant: str) -> list[ScoredPoint]:
    """Engine hits (objects with ``payload`` and ``score``) as the caller's points, best
    first as given: reserved keys stripped, anything not ``tenant``'s dropped (defence in
    depth: the query's filter already scopes it)."""
    out: list[ScoredPoint] = []
    for hit in hits:
        payload = dict(hit.payload or {})
        owner = payload.pop(TENANT_KEY, None)
        public = payload.pop(ID_KEY, None)
        if owner != tenant or public is None:
            continue
        out.append(ScoredPoint(id=public, score=float(hit.score), payload=payload))
    return out
