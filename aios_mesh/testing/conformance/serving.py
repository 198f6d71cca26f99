"""Conformance suite for the Serving port.

Mix the classes your adapter supports into one test class. It provides an ``adapter`` fixture
(closed by the fixture) and a ``model_ref`` fixture naming a model the backend serves under the
**echo-upper** contract below; ``ServingStreaming`` also needs ``stream_model_ref`` (the
**echo-upper-stream** contract)::

    class TestMine(ServingBasic, ServingErrors, ServingStreaming):
        @pytest.fixture
        async def adapter(self, tmp_path):
            a = load_adapter("serving", "mine://127.0.0.1:8000", base_dir=tmp_path)
            yield a
            await a.aclose()

        @pytest.fixture
        def model_ref(self):
            return ModelRef(name="echo-upper", version="1")

        @pytest.fixture
        def stream_model_ref(self):          # only ServingStreaming needs it
            return ModelRef(name="echo-upper-stream", version="1")

The test models
    **echo-upper** — input ``{"text": str, "n": int}``, output
    ``{"text": text.upper(), "n": n * 2}`` with ``Prediction.confidence == 1.0``. Upper-casing
    is Python's ``str.upper`` (``"ß"`` → ``"SS"``); ``n`` is a signed 64-bit integer and the
    suite keeps ``|n| < 2**62``. The output may also hold ``"confidence": 1.0`` (that is how
    a model reports its confidence: adapters lift a numeric ``confidence`` output into
    ``Prediction.confidence``, as :func:`aios_mesh.embedded.serving.as_prediction` does) and
    nothing else. A payload without ``text`` or ``n``, or with a value of the wrong type,
    is rejected. :func:`echo_upper` is the reference implementation (a batch predictor for
    :class:`~aios_mesh.embedded.serving.InProcessServing`).

    **echo-upper-stream** — same input; streams ``n`` chunks
    ``{"index": i, "text": text.upper()}`` for ``i`` in ``0 .. n-1`` (``n == 0`` is an empty
    stream; the suite sends ``0 <= n <= 50``). :func:`echo_upper_stream` is the reference.
    It needs no ``infer`` behaviour of its own.

    As tensors (Triton and other tensor servers), per request item:

    ======================  =========  =======  =====================================
    tensor                  direction  dtype    shape (per item; batched: ``[B, 1]``)
    ======================  =========  =======  =====================================
    ``text``                input      BYTES    ``[1]``, UTF-8
    ``n``                   input      INT64    ``[1]``
    ``text``                output     BYTES    ``[1]``, UTF-8 — adapters decode to str
    ``n``                   output     INT64    ``[1]`` — adapters return a Python int
    ``confidence``          output     FP32     ``[1]`` (optional; lifted to confidence)
    ``index`` (stream)      output     INT64    ``[1]``, one response per chunk
    ======================  =========  =======  =====================================

    Scalars of shape ``[1]`` come back as plain JSON values, not one-element lists.

The contract the mixins pin down:

* ``ServingBasic``: ``infer`` answers one payload; ``infer_batch`` answers 0, 1, 7 and 64
  items with one :class:`Prediction` per input, **in input order** (adapters split batches
  larger than the server's maximum batch size themselves); ``infer`` equals a batch of one;
  outputs are JSON-safe ``dict``\\ s (``str`` keys; ``str``/``int`` values, never bytes or
  numpy scalars); ``usage.calls >= 1``; ``timeout=`` is accepted — an adapter declaring
  ``Feature.DEADLINE`` raises :class:`~aios_mesh.errors.BackendTimeout` when it passes (the
  pipeline then sets no timer of its own), any other answers or raises just that, never a
  native timeout error, and keeps answering afterwards; the caller's payload is
  never mutated; 40 concurrent ``infer`` calls from separate asyncio tasks each get their own
  answer; ``aclose()`` is idempotent. Declaring ``Feature.STREAMING`` obliges the class to
  include ``ServingStreaming``; without it ``stream()`` raises ``FeatureNotSupported``
  (at the call or at the first iteration).
* ``ServingErrors``: **an unknown model name, or an unknown version of a served model, raises**
  :class:`~aios_mesh.errors.NotFound` — never ``BackendUnavailable``, which is retryable and
  would make the mesh retry a call that cannot succeed, and never an answer from another
  version (the decision record names the version that answered). The suite builds these
  refs as ``ModelRef(name, version)`` with an empty ``source``. A payload missing ``text`` or
  ``n``, or with ``n`` not an integer, raises :class:`~aios_mesh.errors.InvalidInput`
  (``InvalidOutput`` is accepted where the backend can only report it as a bad answer), for
  ``infer`` and for a batch with one bad item. Never a raw native exception; every error
  carries a ``hint``; the adapter keeps answering after errors.
* ``ServingStreaming`` (adapters that declare ``Feature.STREAMING``): ``stream`` yields the
  chunks of echo-upper-stream in order, as JSON-safe dicts; an empty stream ends cleanly; a
  stream abandoned after its first chunk (closed with ``aclose()``) leaves the adapter
  usable; concurrent streams do not mix; a bad payload raises ``InvalidInput`` (or
  ``InvalidOutput``); streaming ``model_ref`` — a model that does not stream — raises
  :class:`~aios_mesh.errors.FeatureNotSupported`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from aios_mesh.errors import (
    BackendTimeout,
    FeatureNotSupported,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Prediction, Serving, Usage

__all__ = [
    "ECHO_UPPER_SOURCE",
    "ECHO_UPPER_STREAM_SOURCE",
    "ServingBasic",
    "ServingErrors",
    "ServingStreaming",
    "echo_upper",
    "echo_upper_stream",
]

#: ``ModelRef.source`` that makes :class:`InProcessServing` load :func:`echo_upper` itself.
ECHO_UPPER_SOURCE = "python:aios_mesh.testing.conformance.serving:echo_upper"
#: Where :func:`echo_upper_stream` lives (register it with ``stream=``).
ECHO_UPPER_STREAM_SOURCE = "python:aios_mesh.testing.conformance.serving:echo_upper_stream"

_BAD_INPUT = (InvalidInput, InvalidOutput)


def _fields(item: Mapping[str, Any]) -> tuple[str, int]:
    """``(text, n)`` of an echo-upper payload, or :class:`InvalidInput`."""
    if not isinstance(item, Mapping):
        raise InvalidInput(f"echo-upper takes a mapping, not {type(item).__name__}",
                           hint='send {"text": "...", "n": 1}')
    text = item.get("text")
    n = item.get("n")
    if not isinstance(text, str):
        raise InvalidInput("echo-upper needs 'text', a string",
                           hint='send {"text": "...", "n": 1}')
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidInput("echo-upper needs 'n', an integer",
                           hint='send {"text": "...", "n": 1}')
    return text, n


def echo_upper(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reference echo-upper model (a batch predictor): ``{"text": t, "n": n}`` →
    ``{"text": t.upper(), "n": n * 2, "confidence": 1.0}``, one answer per input, in order.

    Raises :class:`InvalidInput` when an item lacks ``text``/``n`` or has the wrong types.
    """
    out = []
    for item in batch:
        text, n = _fields(item)
        out.append({"text": text.upper(), "n": n * 2, "confidence": 1.0})
    return out


def echo_upper_stream(payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Reference echo-upper-stream model: ``n`` chunks ``{"index": i, "text": t.upper()}``.

    The payload is checked before the first chunk (:class:`InvalidInput` for a bad one).
    """
    text, n = _fields(payload)
    upper = text.upper()

    def chunks() -> Iterator[dict[str, Any]]:
        for i in range(n):
            yield {"index": i, "text": upper}

    return chunks()


def _expected(text: str, n: int) -> dict[str, Any]:
    return {"text": text.upper(), "n": n * 2}


def _assert_hint(exc: MeshError) -> None:
    assert exc.hint, f"{type(exc).__name__} without a hint: {exc.message}"


def _assert_json_safe(doc: Any) -> None:
    assert type(doc) is dict, f"expected a dict, got {type(doc).__name__}"
    assert all(isinstance(k, str) for k in doc), f"non-str keys in {doc!r}"
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc, f"not JSON-safe: {doc!r}"


async def _close(it: AsyncIterator[dict[str, Any]]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


async def _drain(it: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every chunk of a stream; the stream is closed afterwards, even on error."""
    try:
        return [chunk async for chunk in it]
    finally:
        await _close(it)


class _ServingBase:
    """Shared helpers; the concrete class provides ``adapter`` and ``model_ref``."""

    def payload(self, i: int) -> dict[str, Any]:
        """A distinct, valid echo-upper payload per ``i`` (mixed case, unicode, signs)."""
        return {"text": f"Item {i} grüße 世界", "n": (i * 7919 - 5000) * (1 if i % 2 else -1)}

    def check(self, prediction: Prediction, payload: Mapping[str, Any]) -> None:
        """``prediction`` is echo-upper's answer to ``payload``."""
        assert isinstance(prediction, Prediction)
        _assert_json_safe(prediction.output)
        out = prediction.output
        assert {"text", "n"} <= set(out) <= {"text", "n", "confidence"}, out
        assert type(out["text"]) is str
        assert type(out["n"]) is int
        assert {"text": out["text"], "n": out["n"]} == _expected(payload["text"], payload["n"])
        assert prediction.confidence == 1.0
        assert isinstance(prediction.usage, Usage)
        assert prediction.usage.calls >= 1
        assert prediction.usage.tokens >= 0
        assert prediction.usage.gpu_seconds >= 0


class ServingBasic(_ServingBase):
    """infer, ordered infer_batch, JSON-safe outputs, usage, concurrency, aclose."""

    async def test_is_a_serving(self, adapter: Serving) -> None:
        assert isinstance(adapter, Serving)
        assert isinstance(adapter.features, frozenset)
        assert all(isinstance(f, Feature) for f in adapter.features)

    async def test_declared_features_have_their_suite(self, adapter: Serving) -> None:
        if Feature.STREAMING in adapter.features:
            assert isinstance(self, ServingStreaming), "add ServingStreaming to the class"

    async def test_infer_one(self, adapter: Serving, model_ref: ModelRef) -> None:
        payload = {"text": "Hello, World", "n": 21}
        prediction = await adapter.infer(model_ref, payload)
        self.check(prediction, payload)
        assert prediction.output["text"] == "HELLO, WORLD"
        assert prediction.output["n"] == 42

    async def test_unicode_and_int64_round_trip(self, adapter: Serving,
                                                model_ref: ModelRef) -> None:
        cases = [{"text": "Grüße, 世界", "n": 2**40}, {"text": "", "n": 0},
                 {"text": "ünïcödé ǆ", "n": -(2**61)}, {"text": "a\nb\tc", "n": -1}]
        predictions = await adapter.infer_batch(model_ref, cases)
        for prediction, payload in zip(predictions, cases, strict=True):
            self.check(prediction, payload)
        assert predictions[0].output["text"] == "GRÜSSE, 世界"
        assert predictions[0].output["n"] == 2**41

    @pytest.mark.parametrize("size", [1, 7, 64])
    async def test_infer_batch_keeps_order_and_length(self, adapter: Serving,
                                                      model_ref: ModelRef, size: int) -> None:
        payloads = [self.payload(i) for i in range(size)]
        predictions = await adapter.infer_batch(model_ref, payloads)
        assert isinstance(predictions, list)
        assert len(predictions) == size
        for prediction, payload in zip(predictions, payloads, strict=True):
            self.check(prediction, payload)

    async def test_empty_batch(self, adapter: Serving, model_ref: ModelRef) -> None:
        assert await adapter.infer_batch(model_ref, []) == []

    async def test_infer_is_a_batch_of_one(self, adapter: Serving, model_ref: ModelRef) -> None:
        payload = self.payload(3)
        one = await adapter.infer(model_ref, payload)
        (batched,) = await adapter.infer_batch(model_ref, [payload])
        assert one.output == batched.output
        assert one.confidence == batched.confidence

    async def test_timeout_is_accepted(self, adapter: Serving, model_ref: ModelRef) -> None:
        payload = self.payload(5)
        self.check(await adapter.infer(model_ref, payload, timeout=30.0), payload)
        (prediction,) = await adapter.infer_batch(model_ref, [payload], timeout=30.0)
        self.check(prediction, payload)

    async def test_deadline(self, adapter: Serving, model_ref: ModelRef) -> None:
        payload = self.payload(6)
        # 1 µs: no real server answers that fast, an in-process model may answer before
        # anything checks the clock.
        for attempt in (lambda: adapter.infer(model_ref, payload, timeout=1e-6),
                        lambda: adapter.infer_batch(model_ref, [payload, payload],
                                                    timeout=1e-6)):
            timed_out: BackendTimeout | None = None
            try:
                await attempt()
            except BackendTimeout as exc:
                timed_out = exc
            if timed_out is not None:
                assert timed_out.hint, "a BackendTimeout must say what to change"
            else:
                assert Feature.DEADLINE not in adapter.features, \
                    "declares Feature.DEADLINE but answered after its timeout had passed"
        self.check(await adapter.infer(model_ref, payload, timeout=30.0), payload)

    async def test_payload_is_not_mutated(self, adapter: Serving, model_ref: ModelRef) -> None:
        payloads = [self.payload(i) for i in range(3)]
        before = copy.deepcopy(payloads)
        await adapter.infer(model_ref, payloads[0])
        await adapter.infer_batch(model_ref, payloads)
        assert payloads == before

    async def test_concurrent_infer(self, adapter: Serving, model_ref: ModelRef) -> None:
        payloads = [self.payload(i) for i in range(40)]

        async def one(payload: dict[str, Any]) -> Prediction:
            await asyncio.sleep(0)
            return await adapter.infer(model_ref, payload)

        tasks = [asyncio.create_task(one(p)) for p in payloads]
        predictions = await asyncio.gather(*tasks)
        for prediction, payload in zip(predictions, payloads, strict=True):
            self.check(prediction, payload)

    async def test_concurrent_batches(self, adapter: Serving, model_ref: ModelRef) -> None:
        batches = [[self.payload(100 * b + i) for i in range(size)]
                   for b, size in enumerate((1, 7, 64, 3, 64, 7))]
        results = await asyncio.gather(*(adapter.infer_batch(model_ref, b) for b in batches))
        for predictions, batch in zip(results, batches, strict=True):
            assert len(predictions) == len(batch)
            for prediction, payload in zip(predictions, batch, strict=True):
                self.check(prediction, payload)

    async def test_stream_needs_the_feature(self, adapter: Serving,
                                            model_ref: ModelRef) -> None:
        if Feature.STREAMING in adapter.features:
            return  # ServingStreaming covers it
        with pytest.raises(FeatureNotSupported) as info:
            await _drain(adapter.stream(model_ref, {"text": "x", "n": 1}))
        _assert_hint(info.value)

    async def test_aclose_is_idempotent(self, adapter: Serving, model_ref: ModelRef) -> None:
        self.check(await adapter.infer(model_ref, self.payload(1)), self.payload(1))
        await adapter.aclose()
        await adapter.aclose()


class ServingErrors(_ServingBase):
    """Unknown models → NotFound; bad payloads → InvalidInput; always typed, with a hint."""

    async def test_unknown_model_name(self, adapter: Serving, model_ref: ModelRef) -> None:
        missing = ModelRef(name=f"conf-missing-{uuid.uuid4().hex[:8]}", version="1")
        with pytest.raises(NotFound) as info:
            await adapter.infer(missing, self.payload(1))
        _assert_hint(info.value)
        assert not info.value.retryable
        with pytest.raises(NotFound):
            await adapter.infer_batch(missing, [self.payload(1), self.payload(2)])
        self.check(await adapter.infer(model_ref, self.payload(1)), self.payload(1))

    async def test_unknown_version(self, adapter: Serving, model_ref: ModelRef) -> None:
        missing = ModelRef(name=model_ref.name, version="987654321")
        with pytest.raises(NotFound) as info:
            await adapter.infer(missing, self.payload(1))
        _assert_hint(info.value)
        self.check(await adapter.infer(model_ref, self.payload(1)), self.payload(1))

    @pytest.mark.parametrize("payload", [
        {"text": "no n"},
        {"n": 3},
        {},
        {"text": "n is text", "n": "seven"},
        {"text": 12, "n": 3},
    ], ids=["missing-n", "missing-text", "empty", "n-not-int", "text-not-str"])
    async def test_bad_payload(self, adapter: Serving, model_ref: ModelRef,
                               payload: dict[str, Any]) -> None:
        with pytest.raises(_BAD_INPUT) as info:
            await adapter.infer(model_ref, payload)
        _assert_hint(info.value)
        self.check(await adapter.infer(model_ref, self.payload(1)), self.payload(1))

    async def test_one_bad_item_fails_the_batch(self, adapter: Serving,
                                                model_ref: ModelRef) -> None:
        batch = [self.payload(1), {"text": "no n"}, self.payload(2)]
        with pytest.raises(_BAD_INPUT) as info:
            await adapter.infer_batch(model_ref, batch)
        _assert_hint(info.value)
        good = [self.payload(1), self.payload(2)]
        for prediction, payload in zip(await adapter.infer_batch(model_ref, good), good,
                                       strict=True):
            self.check(prediction, payload)


class ServingStreaming(_ServingBase):
    """stream() on a streaming model; FeatureNotSupported on one that does not stream.

    Needs a ``stream_model_ref`` fixture (the echo-upper-stream contract).
    """

    async def test_declares_streaming(self, adapter: Serving) -> None:
        assert Feature.STREAMING in adapter.features, \
            "ServingStreaming is for adapters that declare Feature.STREAMING"

    async def test_stream_yields_chunks_in_order(self, adapter: Serving,
                                                 stream_model_ref: ModelRef) -> None:
        chunks = await _drain(adapter.stream(stream_model_ref, {"text": "Grüße", "n": 5}))
        for chunk in chunks:
            _assert_json_safe(chunk)
        assert chunks == [{"index": i, "text": "GRÜSSE"} for i in range(5)]

    async def test_long_and_empty_streams(self, adapter: Serving,
                                          stream_model_ref: ModelRef) -> None:
        assert await _drain(adapter.stream(stream_model_ref, {"text": "x", "n": 0})) == []
        chunks = await _drain(adapter.stream(stream_model_ref, {"text": "x", "n": 50}))
        assert [c["index"] for c in chunks] == list(range(50))

    async def test_abandoned_stream(self, adapter: Serving,
                                    stream_model_ref: ModelRef) -> None:
        it = adapter.stream(stream_model_ref, {"text": "abc", "n": 20})
        try:
            first = await anext(it)
        finally:
            await _close(it)
        assert first == {"index": 0, "text": "ABC"}
        chunks = await _drain(adapter.stream(stream_model_ref, {"text": "d", "n": 2}))
        assert chunks == [{"index": 0, "text": "D"}, {"index": 1, "text": "D"}]

    async def test_concurrent_streams(self, adapter: Serving,
                                      stream_model_ref: ModelRef) -> None:
        texts = [f"s{i}" for i in range(8)]
        results = await asyncio.gather(*(
            _drain(adapter.stream(stream_model_ref, {"text": t, "n": 3 + i}))
            for i, t in enumerate(texts)))
        for i, (chunks, text) in enumerate(zip(results, texts, strict=True)):
            assert chunks == [{"index": k, "text": text.upper()} for k in range(3 + i)]

    async def test_stream_bad_payload(self, adapter: Serving,
                                      stream_model_ref: ModelRef) -> None:
        with pytest.raises(_BAD_INPUT) as info:
            await _drain(adapter.stream(stream_model_ref, {"text": "no n"}))
        _assert_hint(info.value)

    async def test_non_streaming_model(self, adapter: Serving, model_ref: ModelRef) -> None:
        with pytest.raises(FeatureNotSupported) as info:
            await _drain(adapter.stream(model_ref, {"text": "x", "n": 1}))
        _assert_hint(info.value)
