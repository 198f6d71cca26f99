"""InProcessServing beyond the conformance suite: loading, options, offloading, answer checks.

The conformance suite (tests/conformance/test_serving_inprocess.py) proves the port contract;
these tests pin the embedded adapter's own behaviour.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh.backends import load_adapter
from aios_mesh.embedded.serving import InProcessServing, as_prediction
from aios_mesh.errors import (
    BackendUnavailable,
    ConfigError,
    FeatureNotSupported,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Prediction, Usage
from aios_mesh.testing.conformance.serving import ECHO_UPPER_SOURCE

HERE = "tests.unit.test_inprocess_serving"


# --- predictors loaded through python: sources ------------------------------------------------
def doubler(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch predictor loaded by its import path in the tests below."""
    return [{"y": item["x"] * 2} for item in batch]


NOT_CALLABLE = 42


def batch(n: int) -> list[dict[str, Any]]:
    return [{"x": i} for i in range(n)]


# --- loading ---------------------------------------------------------------------------------
async def test_loads_a_python_source_on_first_use() -> None:
    serving = InProcessServing()
    ref = ModelRef("doubler", "1", source=f"python:{HERE}:doubler")
    preds = await serving.infer_batch(ref, batch(3))
    assert [p.output for p in preds] == [{"y": 0}, {"y": 2}, {"y": 4}]
    assert all(p.usage == Usage(calls=1) for p in preds)
    assert (await serving.infer(ref, {"x": 5})).output == {"y": 10}


async def test_loads_the_reference_echo_upper() -> None:
    serving = InProcessServing()
    ref = ModelRef("echo-upper", "1", source=ECHO_UPPER_SOURCE)
    pred = await serving.infer(ref, {"text": "ab", "n": 2})
    assert pred.output == {"text": "AB", "n": 4, "confidence": 1.0}
    assert pred.confidence == 1.0


async def test_concurrent_first_calls_load_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    real = InProcessServing._load

    def counting(model: ModelRef) -> Any:
        loads.append(model.source)
        return real(model)

    monkeypatch.setattr(InProcessServing, "_load", staticmethod(counting))
    serving = InProcessServing()
    ref = ModelRef("doubler", "1", source=f"python:{HERE}:doubler")
    results = await asyncio.gather(*(serving.infer(ref, {"x": i}) for i in range(20)))
    assert [r.output["y"] for r in results] == [2 * i for i in range(20)]
    assert loads == [ref.source]
    await serving.preload(ref)  # already loaded: no second load
    assert len(loads) == 1


async def test_preload_loads_ahead_of_the_first_call(monkeypatch: pytest.MonkeyPatch) -> None:
    serving = InProcessServing()
    ref = ModelRef("doubler", "1", source=f"python:{HERE}:doubler")
    await serving.preload(ref)
    monkeypatch.setattr(InProcessServing, "_load", staticmethod(_never_load))
    assert (await serving.infer(ref, {"x": 1})).output == {"y": 2}


def _never_load(model: ModelRef) -> Any:
    raise AssertionError("loaded twice")


@pytest.mark.parametrize("source", [
    f"python:{HERE}:no_such_function",
    "python:tests.unit.no_such_module:fn",
    "python:not-an-import-path",
    f"python:{HERE}:NOT_CALLABLE",
])
async def test_unloadable_python_source_is_a_config_error(source: str) -> None:
    serving = InProcessServing()
    with pytest.raises(ConfigError) as info:
        await serving.infer(ModelRef("m", "1", source=source), {"x": 1})
    assert info.value.hint


async def test_module_that_raises_on_import(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_model_mod.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    serving = InProcessServing()
    with pytest.raises(ConfigError) as info:
        await serving.infer(ModelRef("m", "1", source="python:broken_model_mod:fn"), {"x": 1})
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "boom at import" in info.value.message


@pytest.mark.parametrize("source", ["", "inprocess:m/1"])
async def test_unregistered_model_is_not_found(source: str) -> None:
    serving = InProcessServing()
    with pytest.raises(NotFound) as info:
        await serving.infer(ModelRef("m", "1", source=source), {"x": 1})
    assert not info.value.retryable
    assert info.value.hint


async def test_missing_model_artifacts_are_not_found(tmp_path: Path) -> None:
    serving = InProcessServing()
    with pytest.raises(NotFound):  # goes to the MLflow loader: no MLmodel file there
        await serving.infer(ModelRef("m", "1", source=str(tmp_path / "gone")), {"x": 1})


async def test_registered_version_is_exact() -> None:
    serving = InProcessServing()
    ref = serving.register("m", "1", doubler)
    assert ref == ModelRef("m", "1", source="inprocess:m/1")
    with pytest.raises(NotFound):
        await serving.infer(ModelRef("m", "2", source="inprocess:m/2"), {"x": 1})
    fn_ref = serving.register_function("single", "1", lambda d: {"y": d["x"] + 1})
    assert [p.output for p in await serving.infer_batch(fn_ref, batch(2))] == [{"y": 1},
                                                                              {"y": 2}]


# --- from_url options ------------------------------------------------------------------------
def test_from_url_default_and_options(tmp_path: Path) -> None:
    assert load_adapter("serving", "inprocess://", base_dir=tmp_path).offload_threshold == 64
    url = "inprocess://?offload_threshold=8"
    assert load_adapter("serving", url, base_dir=tmp_path).offload_threshold == 8
    kwarg = load_adapter("serving", url, base_dir=tmp_path, offload_threshold=3)
    assert kwarg.offload_threshold == 3  # a keyword argument wins over the URL
    unset = load_adapter("serving", url, base_dir=tmp_path, offload_threshold=None)
    assert unset.offload_threshold == 8  # a keyword given as None counts as not given


@pytest.mark.parametrize(("url", "options", "words"), [
    ("inprocess://?offload_threshold=many", {}, "not an integer"),
    ("inprocess://", {"offload_threshold": 2.5}, "not an integer"),
    ("inprocess://?offload_threshold=-1", {}, "below the minimum 0"),
    ("inprocess://?offload_treshold=8", {}, "did you mean 'offload_threshold'"),
    ("inprocess://", {"workers": 4}, "unknown option 'workers'"),
])
def test_from_url_rejects_bad_options(tmp_path: Path, url: str, options: dict[str, Any],
                                      words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_adapter("serving", url, base_dir=tmp_path, **options)
    assert words in str(info.value)
    assert info.value.hint


# --- offloading to a worker thread -----------------------------------------------------------
async def test_large_batches_run_in_a_worker_thread() -> None:
    seen: list[int] = []

    def where(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen.append(threading.get_ident())
        return [{"ok": True} for _ in items]

    serving = InProcessServing(offload_threshold=4)
    ref = serving.register("where", "1", where)
    loop_thread = threading.get_ident()
    await serving.infer_batch(ref, batch(3))  # below the threshold: inline on the loop
    await serving.infer(ref, {"x": 0})
    await serving.infer_batch(ref, batch(4))  # at the threshold: offloaded
    await serving.infer_batch(ref, batch(50))
    assert seen[0] == loop_thread
    assert seen[1] == loop_thread
    assert seen[2] != loop_thread
    assert seen[3] != loop_thread


async def test_threshold_zero_offloads_everything() -> None:
    seen: list[int] = []
    serving = InProcessServing(offload_threshold=0)
    ref = serving.register("where", "1", lambda items: seen.append(threading.get_ident())
                           or [{} for _ in items])
    await serving.infer(ref, {"x": 1})
    assert seen != [threading.get_ident()]


# --- async predictors ------------------------------------------------------------------------
async def test_async_predictors_are_awaited() -> None:
    calls: list[int] = []

    async def apredict(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        calls.append(len(items))
        return [{"y": item["x"] + 100} for item in items]

    serving = InProcessServing(offload_threshold=5)
    ref = serving.register("async", "1", apredict)
    assert (await serving.infer(ref, {"x": 1})).output == {"y": 101}
    big = await serving.infer_batch(ref, batch(8))  # offloaded batch of an async predictor
    assert [p.output["y"] for p in big] == [100 + i for i in range(8)]
    assert calls == [1, 8]


async def test_async_predictor_errors_are_translated() -> None:
    async def broken(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise ValueError("async boom")

    serving = InProcessServing(offload_threshold=2)
    ref = serving.register("async-broken", "1", broken)
    for size in (1, 2):
        with pytest.raises(BackendUnavailable) as info:
            await serving.infer_batch(ref, batch(size))
        assert isinstance(info.value.__cause__, ValueError)


# --- failures and answer checks --------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 70])  # inline and offloaded
async def test_predictor_that_raises_is_backend_unavailable(size: int) -> None:
    def broken(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise KeyError("weights")

    serving = InProcessServing()
    ref = serving.register("broken", "1", broken)
    with pytest.raises(BackendUnavailable) as info:
        await serving.infer_batch(ref, batch(size))
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.retryable
    assert "broken/1" in info.value.message
    assert info.value.hint


async def test_mesh_errors_from_a_predictor_pass_through() -> None:
    def picky(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise InvalidInput("x must be positive", hint="send x > 0")

    serving = InProcessServing()
    ref = serving.register("picky", "1", picky)
    with pytest.raises(InvalidInput, match="x must be positive"):
        await serving.infer(ref, {"x": -1})


@pytest.mark.parametrize("answers", [[], [{"y": 1}] * 4], ids=["too-few", "too-many"])
async def test_wrong_number_of_answers_is_invalid_output(answers: list[Any]) -> None:
    serving = InProcessServing()
    ref = serving.register("miscount", "1", lambda items: answers)
    with pytest.raises(InvalidOutput) as info:
        await serving.infer_batch(ref, batch(2))
    assert "2 inputs" in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("answer", [["label"], [42], [None], [["y", 1]]])
async def test_non_mapping_answer_is_invalid_output(answer: list[Any]) -> None:
    serving = InProcessServing()
    ref = serving.register("odd", "1", lambda items: answer)
    with pytest.raises(InvalidOutput):
        await serving.infer(ref, {"x": 1})


@pytest.mark.parametrize("raw", [None, {"y": 1}, "yy", 3], ids=["none", "dict", "str", "int"])
async def test_answer_that_is_not_a_list_is_invalid_output(raw: Any) -> None:
    serving = InProcessServing()
    ref = serving.register("odd", "1", lambda items: raw)
    with pytest.raises(InvalidOutput) as info:
        await serving.infer(ref, {"x": 1})
    assert info.value.hint


class Answer(BaseModel):
    label: str
    confidence: float


async def test_answer_shapes_are_normalised() -> None:
    given = Prediction({"a": 1}, confidence=0.5, usage=Usage(calls=1, tokens=7))

    def mixed(items: list[dict[str, Any]]) -> Sequence[Any]:
        return [given, {"label": "x", "confidence": 0.9}, Answer(label="y", confidence=0.25),
                {"label": "z"}]

    serving = InProcessServing()
    ref = serving.register("mixed", "1", mixed)
    preds = await serving.infer_batch(ref, batch(4))
    assert preds[0] is given
    assert (preds[1].output, preds[1].confidence) == ({"label": "x", "confidence": 0.9}, 0.9)
    assert (preds[2].output, preds[2].confidence) == ({"label": "y", "confidence": 0.25}, 0.25)
    assert preds[3].confidence is None
    with pytest.raises(InvalidOutput):
        as_prediction(object())


async def test_predictor_gets_copies_of_the_payloads() -> None:
    def mutating(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items:
            item["x"] = "changed"
        return [{"ok": True}] * len(items)

    serving = InProcessServing()
    ref = serving.register("mutating", "1", mutating)
    payloads = batch(2)
    await serving.infer_batch(ref, payloads)
    assert payloads == batch(2)


# --- streaming -------------------------------------------------------------------------------
async def test_stream_translates_failures() -> None:
    def words(payload: dict[str, Any]) -> Iterator[Any]:
        yield {"w": 1}
        if payload["mode"] == "raise":
            raise OSError("disk gone")
        yield "not a mapping"

    serving = InProcessServing()
    ref = serving.register("words", "1", doubler, stream=words)
    got: list[Any] = []

    async def collect() -> None:
        async for chunk in serving.stream(ref, {"mode": "raise"}):
            got.append(chunk)

    with pytest.raises(BackendUnavailable) as info:
        await collect()
    assert got == [{"w": 1}]
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(InvalidOutput):
        async for _ in serving.stream(ref, {"mode": "odd"}):
            pass


async def test_stream_of_a_model_without_stream_fn() -> None:
    serving = InProcessServing()
    ref = serving.register("plain", "1", doubler)
    with pytest.raises(FeatureNotSupported) as info:
        async for _ in serving.stream(ref, {"x": 1}):
            pass
    assert isinstance(info.value, MeshError)
    assert info.value.hint
