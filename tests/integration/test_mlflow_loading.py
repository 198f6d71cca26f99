"""load_predictor: registered MLflow models (trained here on generated data) become batch
predictors — from a local sqlite registry and from a real ``mlflow server``."""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from aios_mesh_mlflow import TRACKING_URI_TAG, MlflowRegistry
from aios_mesh_mlflow.loading import load_predictor, to_predictions
from aios_mesh_mlflow.testing import (
    prestart_mlflow_servers,
    shared_mlflow_servers,
    stop_shared_mlflow_servers,
)
from mlflow.models import infer_signature
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from sklearn.linear_model import LinearRegression, LogisticRegression

from aios_mesh.backends import load_adapter
from aios_mesh.errors import InvalidInput, InvalidOutput, NotFound
from aios_mesh.ports.registry import ModelRef

pytestmark = pytest.mark.integration

COLUMNS = ["amount", "lines", "vendor_age"]


class TotalsModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A custom pyfunc that answers a DataFrame with its own confidence column."""

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        total = model_input["amount"] * model_input["lines"]
        return pd.DataFrame({"total": total, "confidence": 0.75})


def _data() -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(7)
    x = pd.DataFrame({"amount": rng.gamma(2.0, 300.0, 300),
                      "lines": rng.integers(1, 30, 300).astype(float),
                      "vendor_age": rng.uniform(0, 10, 300)})
    score = x["amount"] / 600 - x["vendor_age"] / 5
    labels = np.where(score > 0.8, "reject", np.where(score > -0.5, "review", "approve"))
    return x, labels


@dataclass
class Trained:
    registry: MlflowRegistry
    x: pd.DataFrame
    clf: LogisticRegression
    reg: LinearRegression
    run_id: str
    names: dict[str, str]


def _log_and_register(registry: MlflowRegistry, x: pd.DataFrame, y: Any, *,
                      only_clf: bool = False
                      ) -> tuple[LogisticRegression, LinearRegression, str, dict[str, str]]:
    """Train, log (``mlflow.sklearn.log_model``) and register: ``clf`` twice (v1 from the
    run-relative URI, v2 from the logged-model URI, both MLflow 3 idioms; ``@champion`` → 1),
    and unless ``only_clf`` a regressor ``reg`` and a custom pyfunc ``totals``."""
    clf = LogisticRegression(max_iter=2000).fit(x, y)
    reg = LinearRegression().fit(x, x["amount"] * 1.2 + 5)
    exp = asyncio.run(registry.ensure_experiment("loading-tests"))
    # log_model only speaks to the global tracking URI; scope it to this block (test only —
    # the adapter and the loader never touch it). pip_requirements skips slow inference.
    with _use_tracking_uri(registry.tracking_uri), mlflow.start_run(experiment_id=exp) as run:
        clf_info = mlflow.sklearn.log_model(
            clf, name="clf", signature=infer_signature(x, clf.predict(x)),
            pip_requirements=["scikit-learn"])
        if not only_clf:
            mlflow.sklearn.log_model(reg, name="reg",
                                     signature=infer_signature(x, reg.predict(x)),
                                     pip_requirements=["scikit-learn"])
            totals = mlflow.pyfunc.log_model(name="totals", python_model=TotalsModel(),
                                             pip_requirements=["pandas"])
    run_id = run.info.run_id
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"{k}-{suffix}" for k in ("clf", "reg", "totals")}

    async def register() -> None:
        await registry.register(names["clf"], f"runs:/{run_id}/clf", run_id=run_id)
        await registry.register(names["clf"], clf_info.model_uri)
        await registry.set_alias(names["clf"], "champion", "1")
        if not only_clf:
            await registry.register(names["reg"], f"runs:/{run_id}/reg")
            await registry.register(names["totals"], totals.model_uri, tags={"kind": "custom"})

    asyncio.run(register())
    return clf, reg, run_id, names


@pytest.fixture(scope="module")
def server_url(request: pytest.FixtureRequest) -> str:
    """A real ``mlflow server`` (sqlite store), shared with the conformance tests."""
    request.session.addfinalizer(stop_shared_mlflow_servers)
    return shared_mlflow_servers("sqlite", "postgresql")["sqlite"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[Trained]:
    if any("server_url" in getattr(item, "fixturenames", ()) for item in request.session.items):
        prestart_mlflow_servers("sqlite", "postgresql")  # boots while these tests run
        request.session.addfinalizer(stop_shared_mlflow_servers)
    base = tmp_path_factory.mktemp("mlflow-loading")
    registry = load_adapter("registry", "mlflow+sqlite:///registry/mlflow.db", base_dir=base)
    x, y = _data()
    clf, reg, run_id, names = _log_and_register(registry, x, y)
    yield Trained(registry, x, clf, reg, run_id, names)
    asyncio.run(registry.aclose())


def _batch(x: pd.DataFrame, n: int = 6) -> list[dict[str, Any]]:
    return [{k: float(v) for k, v in row.items()} for row in x.head(n).to_dict("records")]


async def test_resolve_names_local_artifacts_and_signature(trained: Trained) -> None:
    ref = await trained.registry.resolve(f"{trained.names['clf']}@champion")
    assert (ref.version, ref.alias, ref.run_id) == ("1", "champion", trained.run_id)
    assert ref.source.startswith("file://")
    assert str(trained.registry.artifact_root) in ref.source  # beside the db, not ./mlruns
    assert ref.tags[TRACKING_URI_TAG] == trained.registry.tracking_uri
    assert ref.signature is not None
    assert [c["name"] for c in ref.signature["inputs"]] == COLUMNS


async def test_classifier_labels_and_max_probability_confidence(trained: Trained) -> None:
    ref = await trained.registry.resolve(f"{trained.names['clf']}@champion")
    predict = await asyncio.to_thread(load_predictor, ref)
    batch = _batch(trained.x)
    preds = predict(batch)
    frame = pd.DataFrame(batch)
    assert [p.output for p in preds] == [{"label": str(v)} for v in trained.clf.predict(frame)]
    expected = trained.clf.predict_proba(frame).max(axis=1)
    for p, conf in zip(preds, expected, strict=True):
        assert p.confidence is not None
        assert math.isclose(p.confidence, float(conf), rel_tol=1e-9)
        assert 1 / 3 <= p.confidence <= 1
    # column order in the input documents does not matter
    shuffled = [dict(reversed(list(item.items()))) for item in batch]
    assert [p.output for p in predict(shuffled)] == [p.output for p in preds]
    assert predict([]) == []


async def test_logged_model_uri_version_loads_the_same_model(trained: Trained) -> None:
    v1 = await trained.registry.resolve(f"{trained.names['clf']}/1")
    v2 = await trained.registry.resolve(f"{trained.names['clf']}/2")
    assert v2.run_id == trained.run_id  # taken from the logged model
    assert v1.source == v2.source  # both point at the logged model's folder
    batch = _batch(trained.x, 4)
    assert [p.output for p in load_predictor(v2)(batch)] == \
        [p.output for p in load_predictor(v1)(batch)]


async def test_regressor_has_no_confidence(trained: Trained) -> None:
    ref = await trained.registry.resolve(trained.names["reg"])
    preds = load_predictor(ref)(_batch(trained.x, 3))
    expected = trained.reg.predict(trained.x.head(3))
    assert [p.confidence for p in preds] == [None, None, None]
    for p, value in zip(preds, expected, strict=True):
        assert isinstance(p.output["label"], float)
        assert math.isclose(p.output["label"], float(value), rel_tol=1e-9)


async def test_dataframe_output_becomes_rows_and_confidence_column(trained: Trained) -> None:
    ref = await trained.registry.resolve(trained.names["totals"])
    assert ref.tags["kind"] == "custom"
    preds = load_predictor(ref)([{"amount": 2.0, "lines": 3.0, "vendor_age": 1.0},
                                 {"amount": 5.0, "lines": 1.0, "vendor_age": 1.0}])
    assert [p.output for p in preds] == [{"total": 6.0, "confidence": 0.75},
                                         {"total": 5.0, "confidence": 0.75}]
    assert [p.confidence for p in preds] == [0.75, 0.75]


async def test_input_off_signature_is_invalid_input(trained: Trained) -> None:
    predict = load_predictor(await trained.registry.resolve(trained.names["clf"]))
    with pytest.raises(InvalidInput):
        predict([{"amount": 1.0}])


async def test_indirect_sources_load_with_the_tracking_uri_tag(trained: Trained) -> None:
    tags = {TRACKING_URI_TAG: trained.registry.tracking_uri}
    batch = _batch(trained.x, 3)
    expected = [{"label": str(v)} for v in trained.clf.predict(pd.DataFrame(batch))]
    for ref in (ModelRef(trained.names["clf"], "1", source="", tags=tags),  # models:/name/1
                ModelRef(trained.names["clf"], "1", source=f"models:/{trained.names['clf']}"
                                                           "@champion", tags=tags),
                ModelRef("x", "1", source=f"runs:/{trained.run_id}/clf", tags=tags)):
        assert [p.output for p in load_predictor(ref)(batch)] == expected


async def test_loading_leaves_no_state_in_the_working_directory(
        trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    before = mlflow.get_tracking_uri()
    tags = {TRACKING_URI_TAG: trained.registry.tracking_uri}
    ref = await trained.registry.resolve(trained.names["clf"])
    load_predictor(ref)
    load_predictor(ModelRef("x", "1", source=f"runs:/{trained.run_id}/clf", tags=tags))
    assert await asyncio.to_thread(os.listdir, tmp_path) == []  # no ./mlflow.db, no ./mlruns
    assert mlflow.get_tracking_uri() == before


async def test_missing_artifacts_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as info:
        load_predictor(ModelRef("gone", "1", source=(tmp_path / "nothing").as_uri()))
    assert info.value.hint


def test_output_mapping_rules() -> None:
    arr2d = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert [p.output for p in to_predictions(arr2d, 2)] == [{"output": [0.1, 0.9]},
                                                           {"output": [0.8, 0.2]}]
    assert [p.output for p in to_predictions(pd.Series([1, 2]), 2)] == [{"label": 1},
                                                                       {"label": 2}]
    cols = {"a": np.array([1, 2]), "b": ["x", "y"]}
    assert [p.output for p in to_predictions(cols, 2)] == [{"a": 1, "b": "x"},
                                                          {"a": 2, "b": "y"}]
    assert to_predictions([{"confidence": 0.5, "y": 1}], 1)[0].confidence == 0.5
    assert to_predictions(np.int64(3), 1)[0].output == {"label": 3}
    with pytest.raises(InvalidOutput):
        to_predictions(np.array([1, 2, 3]), 2)


async def test_inprocess_serving_runs_a_registered_model(trained: Trained) -> None:
    import aios_mesh.embedded.serving as serving_mod
    serving = serving_mod.InProcessServing()
    ref = await trained.registry.resolve(f"{trained.names['clf']}@champion")
    preds = await serving.infer_batch(ref, _batch(trained.x, 3))
    assert [p.output["label"] for p in preds] == \
        [str(v) for v in trained.clf.predict(trained.x.head(3))]
    assert all(p.confidence is not None for p in preds)


async def test_model_on_a_tracking_server_loads_through_mlflow_artifacts(
        server_url: str, tmp_path: Path) -> None:
    url = server_url
    registry = load_adapter("registry", f"mlflow+{url}", base_dir=tmp_path)
    x, y = _data()
    clf, _, run_id, names = await asyncio.to_thread(
        lambda: _log_and_register(registry, x, y, only_clf=True))
    ref = await registry.resolve(f"{names['clf']}@champion")
    assert ref.source.startswith("mlflow-artifacts:")
    assert ref.run_id == run_id
    assert ref.tags[TRACKING_URI_TAG] == url
    v2 = await registry.resolve(f"{names['clf']}/2")  # registered from models:/m-<id>
    assert v2.source == ref.source  # the server resolved both to the logged model's files
    batch = _batch(x, 4)
    expected = [{"label": str(v)} for v in clf.predict(pd.DataFrame(batch))]
    preds = await asyncio.to_thread(lambda: load_predictor(ref)(batch))
    assert [p.output for p in preds] == expected
    assert all(p.confidence is not None for p in preds)
    await registry.aclose()
