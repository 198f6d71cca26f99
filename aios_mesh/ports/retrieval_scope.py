"""The tenant-scoping design every Qdrant-family Retrieval adapter shares, as pure helpers.

Reserved payload keys, the id namespace and the ``uuid5`` id mapping live here once, so a
point written through the Edge adapter or the qdrant-client adapter has the same engine id
and payload shape, and the caller-facing checks (tenant, collection name, filter keys,
payloads, vectors) behave the same on both. Nothing here imports a vector engine; numpy is
imported only when a vector is checked.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from aios_mesh.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ID_KEY",
    "ID_NAMESPACE",
    "RESERVED",
    "TENANT_KEY",
    "as_vector",
    "chain",
    "check_collection",
    "check_key",
    "check_limit",
    "check_payload",
    "check_tenant",
    "encode_payload",
    "internal_id",
    "public_id",
]

#: Reserved payload key holding the tenant of a point (same as the Edge adapter).
TENANT_KEY: Final = "_tenant"
#: Reserved payload key holding the caller's own point id (same as the Edge adapter).
ID_KEY: Final = "_mesh_id"
RESERVED: Final = frozenset({TENANT_KEY, ID_KEY})
#: uuid5 namespace of engine point ids — the Edge adapter's, so ids agree across adapters.
ID_NAMESPACE: Final = uuid.UUID("6f1c3c2e-3d1a-5b7e-9a55-0a105e5a0001")

_COLLECTION_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_UINT64_MAX: Final = 2**64 - 1


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
