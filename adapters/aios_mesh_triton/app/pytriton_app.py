# mypy: ignore-errors
# (runs in the Triton environment: PyTriton and numpy<2 are not in the main one)
"""A PyTriton app that serves aios-mesh models from a real Triton Inference Server.

Run it with the Triton environment's Python, never the main one (see
serving/triton/requirements.txt), as a script, not as a module of the package::

    LD_LIBRARY_PATH=$(.nox/triton/bin/python -c \
        'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))') \
    AIOS_MESH_MODEL=invoice-clf AIOS_MESH_MODEL_VERSION=3 \
    AIOS_MESH_MODEL_SOURCE=/path/to/artifacts/model \
    .nox/triton/bin/python adapters/aios_mesh_triton/app/pytriton_app.py \
        --http-port 8000 --grpc-port 8001

``aios-mesh serve triton NAME@ALIAS`` (:func:`aios_mesh_triton.serve.serve_triton`) does all
of that for a registered model. What it binds, on 127.0.0.1 only, metrics off:

echo-upper (version 1; ``--echo NAME`` renames it, ``--echo ""`` leaves it out)
    The Serving conformance contract (:mod:`aios_mesh.testing.conformance.serving`): inputs
    ``text`` BYTES [1] and ``n`` INT64 [1], outputs ``text`` BYTES [1] (upper-cased),
    ``n`` INT64 [1] (doubled) and ``confidence`` FP32 [1] (1.0). max_batch_size 16 (so the
    client's batch splitting is exercised; ``--echo-max-batch N`` changes it), dynamic
    batching on.

a registered MLflow scikit-learn model (``AIOS_MESH_MODEL``, ``AIOS_MESH_MODEL_VERSION``,
``AIOS_MESH_MODEL_SOURCE``)
    Served as Triton model ``AIOS_MESH_MODEL`` with ``model_version = AIOS_MESH_MODEL_VERSION``
    (the registry's version number *is* the Triton version). The artifacts are read straight
    from the folder (``MLmodel`` + the serialized estimator) — no MLflow in
    this environment, nothing fetched over the network. The model must have been logged with a
    signature: each input column becomes one tensor of shape [1] (``double`` → FP64, ``float``
    → FP32, ``long`` → INT64, ``integer`` → INT32, ``boolean`` → BOOL, ``string`` → BYTES);
    outputs are ``label`` (the prediction; BYTES for string labels, else its numeric type) and,
    for estimators with ``predict_proba``, ``confidence`` FP64 = the largest class probability
    — the same rules as in-process serving (:mod:`aios_mesh_mlflow.loading`). Dynamic batching
    on, max_batch_size 64. Serialization formats: skops (MLflow 3's default; trusted types
    from the MLmodel file), cloudpickle, pickle — refused when
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``, as MLflow's own loader does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

LOG = logging.getLogger("aios_mesh.triton.server")

ECHO_MAX_BATCH = 16
MODEL_MAX_BATCH = 64
QUEUE_DELAY_US = 500

# MLflow column types → numpy dtypes of the tensors (BYTES tensors are numpy ``bytes_``).
_COLUMN_DTYPES: dict[str, Any] = {
    "double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32,
    "boolean": np.bool_, "string": np.bytes_, "binary": np.bytes_,
}
_TENSOR_DTYPES: dict[str, Any] = {
    "float64": np.float64, "float32": np.float32, "int64": np.int64, "int32": np.int32,
    "bool": np.bool_, "object": np.bytes_, "str": np.bytes_,
}


# --------------------------------------------------------------------------- echo-upper
@batch
def _echo_upper(text: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
    upper = [bytes(t).decode("utf-8").upper().encode("utf-8") for t in text.reshape(-1)]
    size = len(upper)
    return {
        "text": np.array(upper, dtype=np.bytes_).reshape(size, 1),
        "n": (n.astype(np.int64) * 2).reshape(size, 1),
        "confidence": np.ones((size, 1), dtype=np.float32),
    }


def bind_echo(triton: Triton, name: str, max_batch: int = ECHO_MAX_BATCH) -> None:
    """Bind the conformance echo-upper contract as Triton model ``name``, version 1."""
    triton.bind(
        model_name=name,
        infer_func=_echo_upper,
        inputs=[Tensor(name="text", dtype=np.bytes_, shape=(1,)),
                Tensor(name="n", dtype=np.int64, shape=(1,))],
        outputs=[Tensor(name="text", dtype=np.bytes_, shape=(1,)),
                 Tensor(name="n", dtype=np.int64, shape=(1,)),
                 Tensor(name="confidence", dtype=np.float32, shape=(1,))],
        model_version=1,
        config=ModelConfig(max_batch_size=max_batch,
                           batcher=DynamicBatcher(max_queue_delay_microseconds=QUEUE_DELAY_US)),
        strict=True,
    )


# --------------------------------------------------------------------------- sklearn models
def _folder(source: str) -> Path:
    parts = urlsplit(source)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:
        raise SystemExit(f"AIOS_MESH_MODEL_SOURCE={source!r} is not a local folder; "
                         "download the artifacts first (aios-mesh serve triton does)")
    return Path(source)


def _read_mlmodel(folder: Path) -> dict[str, Any]:
    import yaml

    path = folder / "MLmodel"
    if not path.is_file():
        raise SystemExit(f"no MLmodel file in {folder}: AIOS_MESH_MODEL_SOURCE must be the "
                         "registered model version's artifact folder")
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def _load_estimator(folder: Path, mlmodel: dict[str, Any]) -> Any:
    flavor = (mlmodel.get("flavors") or {}).get("sklearn")
    if not flavor:
        raise SystemExit(f"{folder} is not an MLflow scikit-learn model (no sklearn flavor); "
                         "this server only serves mlflow.sklearn models")
    # The same switch as MLflow's own loader: loading a model can run code from its artifact.
    if os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true").lower() \
            not in ("1", "true", "yes"):
        raise SystemExit("MLFLOW_ALLOW_PICKLE_DESERIALIZATION is off: refusing to load the "
                         "model (only serve models from trusted sources)")
    fmt = flavor.get("serialization_format", "pickle")
    path = folder / flavor.get("pickled_model", "model.pkl")
    if fmt == "skops":
        import skops.io

        return skops.io.load(path, trusted=flavor.get("skops_trusted_types"))
    with path.open("rb") as fh:
        if fmt == "cloudpickle":
            import cloudpickle

            return cloudpickle.load(fh)
        if fmt == "pickle":
            return pickle.load(fh)
    raise SystemExit(f"serialization format {fmt!r} is not supported (skops, cloudpickle "
                     "and pickle are)")


def _signature(mlmodel: dict[str, Any]) -> tuple[list[tuple[str, Any]], Any]:
    sig = mlmodel.get("signature") or {}
    if not sig.get("inputs"):
        raise SystemExit("the model has no input signature; log it with "
                         "signature=mlflow.models.infer_signature(X, model.predict(X))")
    columns: list[tuple[str, Any]] = []
    for col in json.loads(sig["inputs"]):
        if col.get("type") == "tensor" or "name" not in col:
            raise SystemExit("only column-based (DataFrame) signatures are supported")
        dtype = _COLUMN_DTYPES.get(col["type"])
        if dtype is None:
            raise SystemExit(f"column {col['name']!r} has unsupported type {col['type']!r}")
        columns.append((str(col["name"]), dtype))
    label: Any = np.bytes_
    outputs = json.loads(sig["outputs"]) if sig.get("outputs") else []
    if outputs:
        first = outputs[0]
        if first.get("type") == "tensor":
            label = _TENSOR_DTYPES.get(str(first.get("tensor-spec", {}).get("dtype")), np.bytes_)
        else:
            label = _COLUMN_DTYPES.get(str(first.get("type")), np.bytes_)
    return columns, label


def _column(values: np.ndarray, dtype: Any) -> Any:
    flat = values.reshape(-1)
    if dtype is np.bytes_:
        return [bytes(v).decode("utf-8") for v in flat]
    return flat


def _as_tensor(values: Any, dtype: Any, size: int) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if dtype is np.bytes_:
        arr = np.array([str(v).encode("utf-8") for v in arr], dtype=np.bytes_)
    else:
        arr = arr.astype(dtype)
    return arr.reshape(size, 1)


def make_sklearn_infer(estimator: Any, columns: list[tuple[str, Any]],
                       label: Any) -> Callable[..., dict[str, np.ndarray]]:
    """A batched PyTriton infer function for a fitted estimator (see the module doc)."""
    import pandas as pd

    proba = getattr(estimator, "predict_proba", None)
    names = [c for c, _ in columns]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        frame = pd.DataFrame({c: _column(inputs[c], d) for c, d in columns}, columns=names)
        size = len(frame)
        out = {"label": _as_tensor(estimator.predict(frame), label, size)}
        if callable(proba):
            out["confidence"] = np.asarray(proba(frame), dtype=np.float64) \
                .max(axis=1).reshape(size, 1)
        return out

    return infer


def load_registered(name: str, version: str, source: str) -> dict[str, Any]:
    """Load the MLflow sklearn model in ``source`` and return ``Triton.bind`` arguments that
    serve it as Triton model ``name``/``version``. Runs before Triton starts, so a bad model
    fails the process at once."""
    if not version.isdigit() or int(version) < 1:
        raise SystemExit(f"AIOS_MESH_MODEL_VERSION={version!r}: Triton versions are positive "
                         "integers, like MLflow registry versions")
    folder = _folder(source)
    mlmodel = _read_mlmodel(folder)
    estimator = _load_estimator(folder, mlmodel)
    columns, label = _signature(mlmodel)
    outputs = [Tensor(name="label", dtype=label, shape=(1,))]
    if callable(getattr(estimator, "predict_proba", None)):
        outputs.append(Tensor(name="confidence", dtype=np.float64, shape=(1,)))
    LOG.info("loaded %s version %s from %s (%d inputs)", name, version, folder, len(columns))
    return {
        "model_name": name,
        "infer_func": make_sklearn_infer(estimator, columns, label),
        "inputs": [Tensor(name=c, dtype=d, shape=(1,)) for c, d in columns],
        "outputs": outputs,
        "model_version": int(version),
        "config": ModelConfig(max_batch_size=MODEL_MAX_BATCH, batcher=DynamicBatcher(
            max_queue_delay_microseconds=QUEUE_DELAY_US)),
        "strict": True,
    }


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Parse the ports, bind the models, serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http-port", type=int,
                        default=int(os.environ.get("AIOS_MESH_TRITON_HTTP_PORT", "8000")))
    parser.add_argument("--grpc-port", type=int,
                        default=int(os.environ.get("AIOS_MESH_TRITON_GRPC_PORT", "8001")))
    parser.add_argument("--echo", default=os.environ.get("AIOS_MESH_TRITON_ECHO", "echo-upper"),
                        help="model name of the conformance echo model; '' to leave it out")
    parser.add_argument("--echo-max-batch", type=int,
                        default=int(os.environ.get("AIOS_MESH_TRITON_ECHO_MAX_BATCH",
                                                   str(ECHO_MAX_BATCH))),
                        help="max_batch_size of the echo model (default %(default)s)")
    parser.add_argument("--workspace", default=os.environ.get("AIOS_MESH_TRITON_WORKSPACE"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port,
                          grpc_address="127.0.0.1", grpc_port=args.grpc_port,
                          allow_metrics=False, allow_gpu_metrics=False,
                          allow_cpu_metrics=False, log_verbose=0, exit_timeout_secs=2)
    name = os.environ.get("AIOS_MESH_MODEL")
    registered = load_registered(name, os.environ.get("AIOS_MESH_MODEL_VERSION", "1"),
                                 os.environ.get("AIOS_MESH_MODEL_SOURCE", "")) if name else None
    with Triton(config=config, workspace=args.workspace) as triton:
        if args.echo:
            bind_echo(triton, args.echo, args.echo_max_batch)
        if registered is not None:
            triton.bind(**registered)
        LOG.info("serving on http 127.0.0.1:%d, grpc 127.0.0.1:%d", args.http_port,
                 args.grpc_port)
        triton.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
