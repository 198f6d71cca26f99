"""What every model server built for the mesh (the BentoML service, the Ray Serve
application) must do beyond the Serving conformance suite, written once for both adapters'
tests: the client splits batches larger than ``max_batch``, and ``health``/``models``/
``preload`` answer against the real server; and the registered invoice classifier both
serve (:func:`train_and_register`, :class:`Invoice`, :class:`Verdict`, :data:`INVOICE`).

A test class mixes :class:`ServedModelChecks` in after
:class:`~aios_mesh.testing.conformance.serving.ServingBasic` (``payload``/``check``) and
provides the fixtures ``adapter``, ``model_ref`` (echo-upper/1) and ``small_batch_adapter``
(the same server with ``max_batch=5``).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from aios_mesh.backends import load_adapter
from aios_mesh.errors import NotFound
from aios_mesh.ports.registry import ModelRef

__all__ = ["INVOICE", "Invoice", "ServedModelChecks", "Verdict", "train_and_register"]


class ServedModelChecks:
    """Tests shared by the BentoML and Ray Serve adapters (see the module docs)."""

    payload: Any
    check: Any

    async def test_large_batches_are_split_by_the_client(self, small_batch_adapter: Any,
                                                         model_ref: ModelRef) -> None:
        payloads = [self.payload(i) for i in range(23)]
        for prediction, payload in zip(await small_batch_adapter.infer_batch(model_ref,
                                                                             payloads),
                                       payloads, strict=True):
            self.check(prediction, payload)

    async def test_health_models_and_preload(self, adapter: Any, model_ref: ModelRef) -> None:
        await adapter.health()
        served = {(m["name"], m["version"]) for m in await adapter.models()}
        assert ("echo-upper", "1") in served
        await adapter.preload(model_ref)
        with pytest.raises(NotFound):
            await adapter.preload(ModelRef("echo-upper", "2"))


class Invoice(BaseModel):
    """The registered classifier's input."""

    amount: float
    lines: float
    vendor_age: float


class Verdict(BaseModel):
    """The registered classifier's output."""

    label: str


INVOICE = {"amount": 1800.0, "lines": 3.0, "vendor_age": 0.5}


def train_and_register(base: Path, experiment: str) -> tuple[str, str]:
    """A tiny invoice classifier on generated data, logged to the MLflow sqlite registry
    under ``base`` and registered twice (v1 = champion): ``(model name, registry URL)``."""
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(11)
    x = pd.DataFrame({"amount": rng.gamma(2.0, 300.0, 200),
                      "lines": rng.integers(1, 30, 200).astype(float),
                      "vendor_age": rng.uniform(0, 10, 200)})
    score = x["amount"] / 600 - x["vendor_age"] / 5
    y = np.where(score > 0.8, "reject", np.where(score > -0.5, "review", "approve"))
    clf = LogisticRegression(max_iter=2000).fit(x, y)
    registry = load_adapter("registry", "mlflow+sqlite:///registry/mlflow.db", base_dir=base)
    name = f"invoice-clf-{uuid.uuid4().hex[:8]}"

    async def register(run_id: str) -> None:
        await registry.register(name, f"runs:/{run_id}/clf", run_id=run_id)
        await registry.register(name, f"runs:/{run_id}/clf", run_id=run_id)
        await registry.set_alias(name, "champion", "1")
        await registry.aclose()

    exp = asyncio.run(registry.ensure_experiment(experiment))
    with _use_tracking_uri(registry.tracking_uri), mlflow.start_run(experiment_id=exp) as run:
        mlflow.sklearn.log_model(clf, name="clf", signature=infer_signature(x, clf.predict(x)),
                                 pip_requirements=["scikit-learn"])
    asyncio.run(register(run.info.run_id))
    return name, f"mlflow+sqlite:///{(base / 'registry' / 'mlflow.db').absolute()}"
