"""The Triton adapter's wire layout (RawTensor) against numpy and tritonclient's own encoders:
byte for byte the same request, value for value the same answer, typed errors for garbage."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aios_mesh_triton.tensors import (
    DTYPES,
    RawTensor,
    TensorMap,
    TensorSpec,
    decode_outputs,
    encode_inputs,
)
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.utils import serialize_byte_tensor

from aios_mesh.errors import InvalidInput, InvalidOutput

_INT_RANGES = {dt: (int(np.iinfo(DTYPES[dt]).min), int(np.iinfo(DTYPES[dt]).max))
               for dt in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                          "INT64")}


def _leaves(dtype: str) -> st.SearchStrategy[list[Any]]:
    if dtype in _INT_RANGES:
        lo, hi = _INT_RANGES[dtype]
        leaf: st.SearchStrategy[Any] = st.integers(lo, hi)
    elif dtype == "BOOL":
        leaf = st.booleans()
    elif dtype == "BYTES":
        leaf = st.text().map(lambda t: t.encode("utf-8"))
    else:
        width = {"FP16": 16, "FP32": 32, "FP64": 64}[dtype]
        leaf = st.floats(width=width, allow_nan=False)  # type: ignore[arg-type]
    return st.lists(leaf, min_size=1, max_size=70)


@st.composite
def _tensors(draw: st.DrawFn) -> tuple[str, list[Any]]:
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    return dtype, draw(_leaves(dtype))


def _numpy(dtype: str, leaves: list[Any]) -> np.ndarray[Any, Any]:
    if dtype == "BYTES":
        arr = np.empty(len(leaves), dtype=object)
        arr[:] = leaves
        return arr.reshape(len(leaves), 1)
    return np.array(leaves, dtype=DTYPES[dtype]).reshape(len(leaves), 1)


@given(_tensors())
def test_packed_bytes_are_what_tritonclient_sends(case: tuple[str, list[Any]]) -> None:
    dtype, leaves = case
    packed = RawTensor.pack(dtype, (len(leaves), 1), leaves).raw
    arr = _numpy(dtype, leaves)
    expected = (serialize_byte_tensor(arr).item() if dtype == "BYTES"
                else arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    assert packed == expected


@given(_tensors())
def test_values_round_trip_like_numpy(case: tuple[str, list[Any]]) -> None:
    dtype, leaves = case
    tensor = RawTensor.pack(dtype, (len(leaves), 1), leaves)
    assert tensor.values() == _numpy(dtype, leaves).reshape(-1).tolist()
    np.testing.assert_array_equal(tensor.to_numpy(), _numpy(dtype, leaves))


@given(st.lists(st.fixed_dictionaries({"text": st.text(), "n": st.integers(-2**63, 2**63 - 1),
                                       "x": st.floats(width=32, allow_nan=False)}),
                min_size=1, max_size=20))
def test_raw_and_numpy_encodings_agree(items: list[dict[str, Any]]) -> None:
    tmap = TensorMap(inputs=(TensorSpec("text", "BYTES"), TensorSpec("n", "INT64"),
                             TensorSpec("x", "FP32")), max_batch_size=64)
    as_raw = encode_inputs(tmap, items, batched=True, raw=True)
    as_numpy = encode_inputs(tmap, items, batched=True)
    for (spec_r, raw), (spec_n, arr) in zip(as_raw, as_numpy, strict=True):
        assert spec_r == spec_n and isinstance(raw, RawTensor)
        assert isinstance(arr, np.ndarray) and raw.shape == arr.shape
        np.testing.assert_array_equal(raw.to_numpy(), arr)


@given(st.lists(st.tuples(st.text(), st.integers(-2**63, 2**63 - 1)), min_size=1, max_size=20))
def test_raw_and_numpy_answers_decode_alike(rows: list[tuple[str, int]]) -> None:
    texts = [t.encode("utf-8") for t, _ in rows]
    ns = [n for _, n in rows]
    tmap = TensorMap(inputs=(TensorSpec("text", "BYTES"),), max_batch_size=64)
    size = len(rows)
    raw = {"text": ("BYTES", RawTensor.pack("BYTES", (size, 1), texts)),
           "n": ("INT64", RawTensor.pack("INT64", (size, 1), ns))}
    arrays = {"text": ("BYTES", _numpy("BYTES", texts)), "n": ("INT64", _numpy("INT64", ns))}
    assert decode_outputs(raw, tmap, size, batched=True, label="m/1") == \
        decode_outputs(arrays, tmap, size, batched=True, label="m/1")


@pytest.mark.parametrize(("tensor", "message"), [
    (RawTensor("BYTES", (1, 1), b"\x05\x00\x00\x00abc"), "not a valid BYTES"),
    (RawTensor("BYTES", (2, 1), b"\x01\x00\x00\x00a"), "1 BYTES values for shape"),
    (RawTensor("INT64", (2, 1), b"\x00" * 8), "1 INT64 values for shape"),
    (RawTensor("FP32", (1, 1), b"\x00" * 5), "not a valid FP32"),
])
def test_garbage_answers_are_invalid_output(tensor: RawTensor, message: str) -> None:
    with pytest.raises(InvalidOutput, match=message) as caught:
        decode_outputs({"out": (tensor.datatype, tensor)}, TensorMap(inputs=()),
                       tensor.shape[0], batched=True, label="m/1")
    assert caught.value.hint


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize(("dtype", "value"), [("FP16", 1e10), ("FP16", -70000), ("FP32", 1e39)])
def test_a_float_beyond_the_datatype_is_invalid_input(raw: bool, dtype: str,
                                                      value: float) -> None:
    tmap = TensorMap(inputs=(TensorSpec("x", dtype),), max_batch_size=8)
    with pytest.raises(InvalidInput, match=f"does not fit {dtype}"):
        encode_inputs(tmap, [{"x": value}], batched=True, raw=raw)
