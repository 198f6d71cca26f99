"""Tensor maps: how JSON documents become Triton tensors and back.

A :class:`TensorMap` says, for one Triton model, which payload field feeds which input tensor
(its datatype and per-item shape), which output tensors make up the answer and under which
field, and the model's ``max_batch_size``. Where it comes from, first match wins:

1. the adapter option ``tensor_maps={"model-name": TensorMap | dict}`` (or a JSON file given
   as ``?tensor_maps=maps.json``);
2. the model's own Triton config (``GET v2/models/NAME/versions/V/config``), fetched once per
   model version (option ``model_config=false`` turns this off);
3. a default derived from the payload: one tensor per JSON field, named like the field, shape
   ``[1]`` for scalars (``str`` → BYTES, ``int`` → INT64, ``float`` → FP32, ``bool`` → BOOL)
   or the list's shape for (nested) lists; every output tensor the server returns, each under
   its own name.

Per-item shapes exclude the batch dimension. With ``max_batch_size > 0`` a batch of ``B``
items is sent as one request whose tensors have shape ``[B, *shape]`` (split into chunks of at
most ``max_batch_size``); with ``0`` (a model without batching) every item is its own request.
An item's tensor of shape ``[1]`` is a JSON scalar in both directions; BYTES tensors are UTF-8
text on the JSON side. A numeric output named ``confidence`` becomes
``Prediction.confidence`` (and stays in the output, as in-process serving does).

Dict form (options or JSON file)::

    {"inputs":  [{"name": "text", "dtype": "BYTES", "shape": [1], "field": "text"}, ...],
     "outputs": [{"name": "label", "dtype": "BYTES", "field": "queue"}],
     "max_batch_size": 64}
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aios_mesh.errors import ConfigError, InvalidInput, InvalidOutput

__all__ = ["DTYPES", "RawTensor", "TensorMap", "TensorSpec", "decode_outputs", "encode_inputs"]

#: Triton datatypes this adapter speaks, with their numpy types (BYTES: object arrays).
DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}
#: struct codes of the fixed-size datatypes (the wire layout is little-endian, row-major).
_STRUCT = {"BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q",
           "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "FP16": "e", "FP32": "f",
           "FP64": "d"}
_LENGTH = struct.Struct("<I")
_FLOAT_MAX = {"FP16": float(np.finfo(np.float16).max), "FP32": float(np.finfo(np.float32).max)}
_CONFIG_TYPES = {f"TYPE_{k}": k for k in DTYPES if k != "BYTES"} | {"TYPE_STRING": "BYTES"}
_INTS = {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
_FLOATS = {"FP16", "FP32", "FP64"}
_HINT_MAP = ("declare the model's tensors with the tensor_maps option, or fix the payload "
             "(docs/adapters/triton.md)")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor: its Triton ``name``, ``dtype`` (``"BYTES"``, ``"INT64"``, ``"FP32"`` ...),
    per-item ``shape`` (no batch dimension; ``-1`` = any size) and the JSON ``field`` it maps
    to (default: the tensor's name). ``optional`` inputs may be left out of every item."""

    name: str
    dtype: str
    shape: tuple[int, ...] = (1,)
    field: str | None = None
    optional: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"tensor {self.name!r}: unknown datatype {self.dtype!r}",
                              hint=f"use one of {', '.join(DTYPES)}")

    @property
    def key(self) -> str:
        """The JSON field of this tensor."""
        return self.field or self.name

    @property
    def scalar(self) -> bool:
        return self.shape in ((1,), ())

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TensorSpec:
        try:
            shape = doc.get("shape", doc.get("dims", (1,)))
            return cls(name=str(doc["name"]),
                       dtype=_dtype(str(doc.get("dtype", doc.get("datatype", "")))),
                       shape=tuple(int(d) for d in shape),
                       field=str(doc["field"]) if doc.get("field") else None,
                       optional=bool(doc.get("optional", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed tensor spec {dict(doc)!r}: {exc}",
                              hint='write {"name": "text", "dtype": "BYTES", "shape": [1]}'
                              ) from exc


def _dtype(value: str) -> str:
    value = value.upper()
    return _CONFIG_TYPES.get(value, value)


@dataclass(frozen=True, slots=True)
class TensorMap:
    """How one model's JSON documents map to tensors (see the module docstring).

    ``outputs`` empty means: decode every output tensor the server returns, under its name.
    ``max_batch_size`` 0 means the model takes no batch dimension (one request per item).
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = ()
    max_batch_size: int = 0

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TensorMap:
        """Build from ``{"inputs": [...], "outputs": [...], "max_batch_size": N}``."""
        if not isinstance(doc, Mapping) or not doc.get("inputs"):
            raise ConfigError("a tensor map needs a list of inputs",
                              hint='write {"inputs": [{"name": "text", "dtype": "BYTES"}]}')
        return cls(inputs=tuple(TensorSpec.from_dict(t) for t in doc["inputs"]),
                   outputs=tuple(TensorSpec.from_dict(t) for t in doc.get("outputs", ())),
                   max_batch_size=int(doc.get("max_batch_size", 0)))

    @classmethod
    def coerce(cls, value: TensorMap | Mapping[str, Any]) -> TensorMap:
        return value if isinstance(value, TensorMap) else cls.from_dict(value)

    @classmethod
    def from_triton_config(cls, config: Mapping[str, Any]) -> TensorMap | None:
        """From a model config as Triton returns it (HTTP JSON or gRPC ``as_json``; the gRPC
        form nests it under ``"config"`` and writes dims as strings). None without inputs."""
        doc = config.get("config", config)
        inputs = doc.get("input") or []
        if not inputs:
            return None

        def spec(t: Mapping[str, Any]) -> TensorSpec:
            dims = tuple(int(d) for d in t.get("dims", ()) or ())
            return TensorSpec(name=str(t["name"]), dtype=_dtype(str(t.get("data_type", ""))),
                              shape=dims or (1,), optional=bool(t.get("optional", False)))

        return cls(inputs=tuple(spec(t) for t in inputs),
                   outputs=tuple(spec(t) for t in doc.get("output") or ()),
                   max_batch_size=int(doc.get("max_batch_size", 0) or 0))

    @classmethod
    def for_payload(cls, payload: Mapping[str, Any], *, max_batch_size: int) -> TensorMap:
        """The default: one tensor per JSON field, typed by its Python value."""
        specs = []
        for key, value in payload.items():
            dtype, shape = _infer(key, value)
            specs.append(TensorSpec(name=str(key), dtype=dtype, shape=shape))
        if not specs:
            raise InvalidInput("empty payload: nothing to send as a tensor",
                               hint="send at least one field, or declare a tensor map")
        return cls(inputs=tuple(specs), max_batch_size=max_batch_size)


def _infer(key: str, value: Any) -> tuple[str, tuple[int, ...]]:
    if isinstance(value, bool):
        return "BOOL", (1,)
    if isinstance(value, int):
        return "INT64", (1,)
    if isinstance(value, float):
        return "FP32", (1,)
    if isinstance(value, str | bytes):
        return "BYTES", (1,)
    if isinstance(value, list) and value:
        arr = np.asarray(value, dtype=object)
        leaves = list(arr.reshape(-1)) if arr.dtype == object else []
        leaf = leaves[0] if leaves else None
        dtype, _ = _infer(key, leaf)
        return dtype, tuple(int(d) for d in arr.shape)
    raise InvalidInput(f"field {key!r}: cannot send {type(value).__name__} as a tensor",
                       hint=_HINT_MAP)


# --------------------------------------------------------------------------- wire layout
@dataclass(frozen=True, slots=True)
class RawTensor:
    """A tensor in the KServe v2 binary layout that Triton sends and receives: fixed-size
    values little-endian and row-major, BYTES elements each as a 4-byte little-endian length
    and the bytes. One value per item — the common case — goes straight between Python values
    and these bytes, which costs a fraction of a numpy array's round trip."""

    datatype: str
    shape: tuple[int, ...]
    raw: bytes

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @classmethod
    def pack(cls, datatype: str, shape: tuple[int, ...], leaves: list[Any]) -> RawTensor:
        """``leaves`` (checked by :func:`_leaf`, row-major) in the wire layout."""
        if datatype == "BYTES":
            raw = b"".join(_LENGTH.pack(len(v)) + v for v in leaves)
        else:
            raw = struct.pack(f"<{len(leaves)}{_STRUCT[datatype]}", *leaves)
        return cls(datatype, shape, raw)

    def values(self, label: str = "") -> list[Any]:
        """The elements, row-major, as Python values (BYTES as ``bytes``); a buffer that does
        not hold exactly ``prod(shape)`` of them raises :class:`InvalidOutput`."""
        count = math.prod(self.shape)
        raw = self.raw
        out: list[Any]
        try:
            if self.datatype == "BYTES":
                out, at, end = [], 0, len(raw)
                while at < end:
                    (size,) = _LENGTH.unpack_from(raw, at)
                    at += 4
                    if at + size > end:
                        raise struct.error("element runs past the buffer")
                    out.append(raw[at:at + size])
                    at += size
            else:
                code = _STRUCT[self.datatype]
                out = list(struct.unpack(f"<{len(raw) // struct.calcsize(code)}{code}", raw))
        except (struct.error, KeyError) as exc:
            raise InvalidOutput(f"{label}: output is not a valid {self.datatype} tensor: {exc}",
                                hint="the server answered garbage; check its version and log"
                                ) from None
        if len(out) != count:
            raise InvalidOutput(f"{label}: output holds {len(out)} {self.datatype} values for "
                                f"shape {list(self.shape)}",
                                hint="the server answered garbage; check its version and log")
        return out

    def to_numpy(self, label: str = "") -> np.ndarray[Any, Any]:
        return _array(self.datatype, self.values(label), self.shape)


# --------------------------------------------------------------------------- encoding
def _leaf(spec: TensorSpec, value: Any) -> Any:
    dtype = spec.dtype
    if dtype == "BYTES":
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, bytes):
            return value
    elif dtype == "BOOL":
        if isinstance(value, bool | np.bool_):
            return bool(value)
    elif dtype in _INTS:
        if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
            info = np.iinfo(DTYPES[dtype])
            if info.min <= int(value) <= info.max:
                return int(value)
            raise InvalidInput(f"field {spec.key!r}: {value} does not fit {dtype}",
                               hint=f"send an integer in [{info.min}, {info.max}]")
    elif dtype in _FLOATS and isinstance(value, int | float | np.integer | np.floating) \
            and not isinstance(value, bool | np.bool_):
        number = float(value)
        top = _FLOAT_MAX.get(dtype)
        if top is not None and math.isfinite(number) and abs(number) > top:
            raise InvalidInput(f"field {spec.key!r}: {value} does not fit {dtype}",
                               hint=f"send a number in [-{top}, {top}]")
        return number
    want = {"BYTES": "a string", "BOOL": "a boolean"}.get(
        dtype, "an integer" if dtype in _INTS else "a number")
    raise InvalidInput(f"field {spec.key!r} must be {want} (tensor {spec.name!r} is {dtype}), "
                       f"got {type(value).__name__}", hint=_HINT_MAP)


def _item_array(spec: TensorSpec, value: Any) -> np.ndarray[Any, Any]:
    if spec.scalar and not isinstance(value, list | tuple):
        leaves: list[Any] = [_leaf(spec, value)]
        shape: tuple[int, ...] = (1,)
    else:
        if not isinstance(value, list | tuple):
            raise InvalidInput(f"field {spec.key!r} must be a list of shape {list(spec.shape)}",
                               hint=_HINT_MAP)
        raw = np.asarray(value, dtype=object)
        if raw.dtype != object or any(isinstance(v, list | tuple) for v in raw.reshape(-1)):
            raise InvalidInput(f"field {spec.key!r} is a ragged list", hint=_HINT_MAP)
        shape = tuple(int(d) for d in raw.shape)
        if len(shape) != len(spec.shape) or any(
                w not in (-1, g) for w, g in zip(spec.shape, shape, strict=True)):
            raise InvalidInput(f"field {spec.key!r} has shape {list(shape)}, tensor "
                               f"{spec.name!r} takes {list(spec.shape)}", hint=_HINT_MAP)
        leaves = [_leaf(spec, v) for v in raw.reshape(-1)]
    return _array(spec.dtype, leaves, shape)


def _array(dtype: str, leaves: list[Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """Row-major ``leaves`` as a numpy array of ``shape`` (BYTES: an object array, which
    np.array would turn into fixed-width bytes)."""
    if dtype == "BYTES":
        arr = np.empty(len(leaves), dtype=object)
        arr[:] = leaves
        return arr.reshape(shape)
    return np.asarray(leaves, dtype=DTYPES[dtype]).reshape(shape)


def encode_inputs(tmap: TensorMap, items: Sequence[Mapping[str, Any]], *, batched: bool,
                  raw: bool = False
                  ) -> list[tuple[TensorSpec, np.ndarray[Any, Any] | RawTensor]]:
    """The input tensors for ``items`` (``[B, *shape]`` when ``batched``; else one item,
    ``shape``). Fields no input tensor names are ignored. Raises :class:`InvalidInput` for a
    missing field or a wrong type/shape. With ``raw``, tensors of one value per item come as
    :class:`RawTensor` (for a client that can send wire bytes as they are)."""
    out: list[tuple[TensorSpec, np.ndarray[Any, Any] | RawTensor]] = []
    for spec in tmap.inputs:
        key = spec.key
        present = [key in item for item in items]
        if not any(present) and spec.optional:
            continue
        if not all(present):
            raise InvalidInput(f"field {key!r} is missing (tensor {spec.name!r})",
                               hint=f"send every input field: "
                                    f"{', '.join(s.key for s in tmap.inputs)}")
        values = [item[key] for item in items]
        if spec.scalar and not any(isinstance(v, list | tuple) for v in values):
            # The common case, one value per item: one array for the whole batch, no stacking
            # (numpy's per-call overhead is most of an echo call's client time).
            out.append((spec, _scalar_raw(spec, values, batched) if raw
                        else _scalar_array(spec, values, batched)))
            continue
        arrays = [_item_array(spec, value) for value in values]
        if not batched:
            out.append((spec, arrays[0]))
            continue
        first = arrays[0].shape
        if any(a.shape != first for a in arrays[1:]):
            raise InvalidInput(f"field {key!r} has different shapes within one batch",
                               hint="pad the items to one shape or send them one by one")
        out.append((spec, np.stack(arrays)))
    return out


def _scalar_raw(spec: TensorSpec, values: list[Any], batched: bool) -> RawTensor:
    # _leaf has range-checked every value, so packing cannot overflow.
    leaves = [_leaf(spec, v) for v in values]
    return RawTensor.pack(spec.dtype, (len(leaves), 1) if batched else (1,), leaves)


def _scalar_array(spec: TensorSpec, values: list[Any], batched: bool) -> np.ndarray[Any, Any]:
    leaves = [_leaf(spec, v) for v in values]
    return _array(spec.dtype, leaves, (len(leaves), 1) if batched else (1,))


# --------------------------------------------------------------------------- decoding
def _py(value: Any, dtype: str, name: str) -> Any:
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidOutput(f"output tensor {name!r} holds bytes that are not UTF-8",
                                hint="declare the output as numeric, or make the model "
                                     "answer text") from exc
    if isinstance(value, np.generic):
        return value.item()
    return value


def _to_json(arr: np.ndarray[Any, Any], dtype: str, name: str) -> Any:
    if arr.shape in ((1,), ()):
        return _py(arr.reshape(-1)[0], dtype, name)
    if dtype == "BYTES":
        return np.vectorize(lambda v: _py(v, dtype, name), otypes=[object])(arr).tolist()
    return arr.tolist()


def _column(arr: np.ndarray[Any, Any] | RawTensor, n: int, dtype: str, name: str,
            batched: bool, label: str) -> list[Any]:
    """The JSON value of each of the ``n`` items of one output tensor."""
    item_shape = arr.shape[1:] if batched else arr.shape
    if item_shape in ((1,), ()):
        # One value per item: one list of Python values instead of per-item numpy calls.
        values = (arr.values(f"model {label}: output {name!r}") if isinstance(arr, RawTensor)
                  else arr.reshape(-1).tolist())
        if dtype == "BYTES":
            return [_py(v, dtype, name) for v in values]
        return values
    if isinstance(arr, RawTensor):
        arr = arr.to_numpy(f"model {label}: output {name!r}")
    return [_to_json(item, dtype, name) for item in (arr if batched else [arr])]


def decode_outputs(tensors: Mapping[str, tuple[str, np.ndarray[Any, Any] | RawTensor]],
                   tmap: TensorMap, n: int, *, batched: bool,
                   label: str) -> list[tuple[dict[str, Any], float | None]]:
    """``n`` output documents (and confidences) from ``{tensor: (datatype, array)}``
    (numpy arrays or :class:`RawTensor` wire buffers).

    Raises :class:`InvalidOutput` when a mapped tensor is missing, has another datatype, or
    its batch dimension / per-item shape does not match the map."""
    specs: Iterable[TensorSpec] = tmap.outputs or [
        TensorSpec(name=name, dtype=dt, shape=()) for name, (dt, _) in tensors.items()]
    docs: list[dict[str, Any]] = [{} for _ in range(n)]
    hint = "the model's answer does not match its tensor map; fix the map or the model"
    for spec in specs:
        found = tensors.get(spec.name)
        if found is None:
            if spec.optional:
                continue
            raise InvalidOutput(f"model {label} answered without output tensor {spec.name!r}",
                                hint=hint)
        datatype, arr = found
        if tmap.outputs and datatype != spec.dtype:
            raise InvalidOutput(f"model {label}: output {spec.name!r} is {datatype}, "
                                f"the map says {spec.dtype}", hint=hint)
        rows = (arr.shape[0] if arr.ndim else 1) if batched else 1
        if rows != n:
            raise InvalidOutput(f"model {label}: output {spec.name!r} has {rows} rows "
                                f"for {n} inputs", hint=hint)
        item_shape = arr.shape[1:] if batched else arr.shape
        if tmap.outputs and spec.shape and (
                len(item_shape) != len(spec.shape) or any(
                    w not in (-1, g) for w, g in zip(spec.shape, item_shape, strict=True))):
            raise InvalidOutput(f"model {label}: output {spec.name!r} has shape "
                                f"{list(item_shape)}, the map says {list(spec.shape)}",
                                hint=hint)
        key = spec.key
        column = _column(arr, n, datatype, spec.name, batched, label)
        for doc, value in zip(docs, column, strict=True):
            doc[key] = value
    out: list[tuple[dict[str, Any], float | None]] = []
    for doc in docs:
        conf = doc.get("confidence")
        if isinstance(conf, int | float) and not isinstance(conf, bool) and math.isfinite(conf):
            out.append((doc, float(conf)))
        else:
            out.append((doc, None))
    return out
