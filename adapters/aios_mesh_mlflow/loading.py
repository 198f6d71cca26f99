"""Turn a registered MLflow model version into a batch predictor for in-process serving.

:func:`load_predictor` is the model loader this adapter registers for in-process serving
(entry-point group ``aios_mesh.model_loaders``):
:class:`aios_mesh.embedded.serving.InProcessServing` calls it for a
:class:`~aios_mesh.ports.registry.ModelRef` whose source is not a Python callable.
:func:`fetch_model_folder` only fetches the artifacts into a local folder.

Where the artifacts come from
    ``ModelRef.source`` as resolved by :class:`~aios_mesh_mlflow.MlflowRegistry` (a local
    folder, ``file://``, ``mlflow-artifacts:/``, an object store ...), fetched with
    ``mlflow.artifacts.download_artifacts(..., tracking_uri=ref.tags["aios_mesh.tracking_uri"])``
    — explicit URIs, never the process-global ``mlflow.set_tracking_uri``. ``runs:/`` and
    ``models:/`` sources are first turned into the logged model's own artifact location on that
    tracking URI (MLflow would otherwise look logged models up on the global URI). A ref with an
    empty source is loaded from ``ref.uri`` (``models:/name/version``).

The predictor
    ``predict(batch: list[dict]) -> list[Prediction]``, one answer per input, in order. The
    inputs become one ``pandas.DataFrame`` (one row per dict, columns by key) and go through
    ``PyFuncModel.predict`` (which enforces the logged signature). Outputs become dicts:

    * a ``DataFrame`` → one dict per row (its columns);
    * a ``Series`` or a 1-D array / list of scalars → ``{"label": value}``;
    * an N-D array → ``{"output": row as a list}``; a list of dicts → those dicts;
    * a dict of equal-length columns → one dict per row.

    numpy scalars become plain Python values.

The confidence rule
    If the underlying model (``PyFuncModel.get_raw_model()``, e.g. the scikit-learn estimator
    or pipeline) has ``predict_proba``, ``Prediction.confidence`` is the largest class
    probability of each row — the probability of the predicted class for the usual argmax
    classifiers. Otherwise, if an output row has a numeric ``"confidence"`` field, that value
    is used. Otherwise ``confidence`` is ``None`` (regressors, most custom models).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aios_mesh.errors import BackendUnavailable, InvalidInput, InvalidOutput, MeshError, NotFound
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import BatchPredictor, Prediction
from aios_mesh_mlflow._common import TRACKING_URI_TAG, local_path, storage_location, translate
from aios_mesh_mlflow._env import apply_env_defaults

__all__ = ["BatchPredictor", "fetch_model_folder", "load_predictor", "to_predictions"]


def fetch_model_folder(ref: ModelRef) -> Path:
    """A local folder holding the model's ``MLmodel`` and artifacts: ``ref.source`` itself
    when it is local, else downloaded from the artifact store of the ref's tracking URI.
    Blocking (file and network I/O). Used by :func:`load_predictor` and by servers that read
    the artifacts themselves (``aios-mesh serve triton``).

    Raises:
        NotFound: the artifacts are gone.
        BackendUnavailable: the tracking server or artifact store failed.
    """
    source = ref.source or ref.uri
    tracking_uri = ref.tags.get(TRACKING_URI_TAG)
    where = tracking_uri or "MLflow's default tracking URI"
    local = local_path(source)
    if local is not None:
        if not (local / "MLmodel").is_file():
            raise NotFound(f"model {ref.name}/{ref.version}: no MLmodel file in {local}",
                           hint="the artifacts were moved or deleted; register the model "
                                "again or point the version at its new location")
        return local
    import mlflow.artifacts
    from mlflow import MlflowClient

    try:
        if urlsplit(source).scheme in ("models", "runs") and tracking_uri:
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            if source.startswith("models:/") and not source.startswith("models:/m-"):
                # models:/name/version or models:/name@alias: ask the registry where it lives
                spec = source.removeprefix("models:/").strip("/")
                if "@" in spec:
                    name, alias = spec.split("@", 1)
                    version = str(client.get_model_version_by_alias(name, alias).version)
                else:
                    name, _, version = spec.rpartition("/")
                source = str(client.get_model_version_download_uri(name, version))
            source, _, _ = storage_location(client, source, resolve_logged_model=True)
            local = local_path(source)
            if local is not None:
                return local
        path = mlflow.artifacts.download_artifacts(artifact_uri=source,
                                                   tracking_uri=tracking_uri,
                                                   registry_uri=tracking_uri)
    except MeshError:
        raise
    except Exception as exc:
        raise translate(exc, where=where, what=f"fetch model {ref.name}/{ref.version}",
                        not_found_hint="check that the model version's artifacts exist "
                                       f"({source})") from exc
    return Path(path)


def load_predictor(ref: ModelRef) -> BatchPredictor:
    """Load ``ref``'s artifacts with ``mlflow.pyfunc.load_model`` and return a batch predictor.

    Blocking (file and network I/O, unpickling): call it from a worker thread. See the module
    docstring for the input/output mapping and the confidence rule.

    Raises:
        NotFound: the artifacts are gone.
        BackendUnavailable: the tracking server or artifact store failed, or the model could
            not be loaded.
    """
    apply_env_defaults()
    folder = fetch_model_folder(ref)
    import mlflow.pyfunc

    try:
        model = mlflow.pyfunc.load_model(str(folder))
    except Exception as exc:
        raise BackendUnavailable(f"cannot load model {ref.name}/{ref.version} from {folder}: "
                                 f"{type(exc).__name__}: {exc}",
                                 hint="check that the serving environment has the model's "
                                      "flavor and its requirements installed") from exc
    raw: Any = None
    try:
        raw = model.get_raw_model()
    except Exception:  # not every flavor exposes its raw model
        raw = None
    proba = getattr(raw, "predict_proba", None)
    columns = _input_columns(model, raw)
    label = f"{ref.name}/{ref.version}"
    pd: Any = importlib.import_module("pandas")  # a dependency of mlflow; no stubs

    def predict(batch: list[dict[str, Any]]) -> list[Prediction]:
        if not batch:
            return []
        frame = pd.DataFrame.from_records([dict(item) for item in batch])
        try:
            output = model.predict(frame)
        except Exception as exc:
            if type(exc).__name__ == "MlflowException":  # schema enforcement said no
                raise InvalidInput(f"model {label} rejected the input: {exc}",
                                   hint="send the fields of the model's signature") from exc
            raise
        confidences: list[float | None] = [None] * len(batch)
        if callable(proba):
            ordered = frame[columns] if columns and set(columns) <= set(frame.columns) \
                else frame
            probs = proba(ordered)
            confidences = [float(max(row)) for row in probs]
        return to_predictions(output, len(batch), confidences, label=label)

    return predict


def _input_columns(model: Any, raw: Any) -> list[str] | None:
    names = getattr(raw, "feature_names_in_", None)
    if names is not None:
        return [str(n) for n in names]
    try:
        schema = model.metadata.get_input_schema()
        if schema is not None and schema.has_input_names():
            return [str(n) for n in schema.input_names()]
    except Exception:
        return None
    return None


def _py(value: Any) -> Any:
    """numpy/pandas scalars and arrays → plain Python."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return value.tolist()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _rows(output: Any, n: int) -> list[dict[str, Any]]:
    type_name = type(output).__name__
    if type_name == "DataFrame":
        return [{str(k): _py(v) for k, v in row.items()}
                for row in output.to_dict(orient="records")]
    if type_name == "Series":
        return [{"label": _py(v)} for v in output.tolist()]
    if type_name == "ndarray":
        if output.ndim <= 1:
            return [{"label": _py(v)} for v in output.reshape(-1).tolist()]
        return [{"output": _py(row)} for row in output]
    if isinstance(output, Mapping):
        cols = {str(k): (v.tolist() if hasattr(v, "tolist") else v) for k, v in output.items()}
        if cols and all(isinstance(v, Sequence) and not isinstance(v, str | bytes)
                        and len(v) == n for v in cols.values()):
            return [{k: _py(v[i]) for k, v in cols.items()} for i in range(n)]
        if n == 1:
            return [{k: _py(v) for k, v in cols.items()}]
    if isinstance(output, Sequence) and not isinstance(output, str | bytes):
        return [{str(k): _py(v) for k, v in item.items()} if isinstance(item, Mapping)
                else {"label": _py(item)} for item in output]
    if n == 1:
        return [{"label": _py(output)}]
    raise InvalidOutput(f"model returned {type_name} for a batch of {n}",
                        hint="return a DataFrame, an array or a list with one entry per input")


def to_predictions(output: Any, n: int, confidences: Sequence[float | None] | None = None,
                   *, label: str = "model") -> list[Prediction]:
    """Map a pyfunc output for ``n`` inputs to ``n`` predictions (rules in the module doc)."""
    rows = _rows(output, n)
    if len(rows) != n:
        raise InvalidOutput(f"model {label} returned {len(rows)} answers for {n} inputs",
                            hint="a batch predictor must answer every input, in order")
    confs = list(confidences) if confidences is not None else [None] * n
    out: list[Prediction] = []
    for row, conf in zip(rows, confs, strict=True):
        if conf is None:
            value = row.get("confidence")
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and math.isfinite(value):
                conf = float(value)
        out.append(Prediction(row, confidence=conf))
    return out
