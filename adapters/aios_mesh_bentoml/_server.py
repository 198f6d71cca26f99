"""What the BentoML service serves, and how it answers a batch — without ``bentoml``.

:mod:`aios_mesh_bentoml.service` is a thin BentoML wrapper around :class:`ServedModels`, so
the logic here is importable (and testable) wherever aios-mesh is.

Environment (read by :meth:`ServedModels.from_env` when the service starts):

``AIOS_MESH_MODEL``
    ``name@alias`` or ``name/version``: a model of the registry, resolved once at start-up
    and loaded with :func:`aios_mesh_mlflow.loading.load_predictor`. The service then serves
    exactly that version (the alias is not followed afterwards).
``AIOS_MESH_REGISTRY``
    the registry URL (``mlflow+sqlite:////abs/mlflow.db``, ``mlflow+http://host:5000``);
    default: the embedded default (``mlflow+sqlite:///registry/mlflow.db``).
``AIOS_MESH_BASE_DIR``
    the folder relative registry URLs resolve against, like a mesh's state folder
    (default: ``./.aios-mesh``).
``AIOS_MESH_PYTHON_MODELS``
    extra Python batch predictors, ``name/version=package.module:callable`` separated by
    commas, e.g. ``echo-upper/1=aios_mesh_bentoml.testing:echo_upper``. When neither this
    nor ``AIOS_MESH_MODEL`` is set, the service serves ``echo-upper/1`` (the serving
    conformance contract) so a bare ``bentoml serve`` answers something.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aios_mesh.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.ports.registry import ModelRef, parse_model_spec
from aios_mesh.ports.serving import BatchPredictor, Prediction, as_prediction
from aios_mesh_bentoml._protocol import answer_error, answer_ok

__all__ = ["DEFAULT_PYTHON_MODELS", "ServedModel", "ServedModels", "parse_python_models"]

log = logging.getLogger("aios_mesh_bentoml.service")

#: What a bare ``bentoml serve aios_mesh_bentoml.service:MeshModelService`` serves.
DEFAULT_PYTHON_MODELS = "echo-upper/1=aios_mesh_bentoml.testing:echo_upper"


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One model version this service answers for."""

    ref: ModelRef
    predict: BatchPredictor

    def describe(self) -> dict[str, Any]:
        return {"name": self.ref.name, "version": self.ref.version, "alias": self.ref.alias,
                "source": self.ref.source, "run_id": self.ref.run_id}


def parse_python_models(spec: str) -> dict[tuple[str, str], str]:
    """``"a/1=pkg.mod:fn,b/2=pkg.mod:gn"`` → ``{("a", "1"): "pkg.mod:fn", ...}``."""
    found: dict[tuple[str, str], str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, sep, target = part.partition("=")
        name, alias, version = parse_model_spec(key.strip()) if sep else ("", None, None)
        if not sep or alias is not None or version is None or ":" not in target:
            raise ConfigError(f"AIOS_MESH_PYTHON_MODELS entry {part!r} is malformed",
                              hint="write name/version=package.module:callable, e.g. "
                                   "echo-upper/1=aios_mesh_bentoml.testing:echo_upper")
        found[(name, version)] = target.strip()
    return found


class ServedModels:
    """The table of model versions one service process serves, and the batch function."""

    def __init__(self, models: Sequence[ServedModel] = ()) -> None:
        self._models: dict[tuple[str, str], ServedModel] = {}
        for model in models:
            self.add(model)

    def add(self, model: ServedModel) -> None:
        self._models[(model.ref.name, model.ref.version)] = model

    def serves(self, name: str, version: str) -> bool:
        return (name, version) in self._models

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe() for m in self._models.values()]

    def not_found(self, name: str, version: str) -> NotFound:
        """The error for a version this service does not serve (answered as HTTP 404)."""
        same = sorted(v for (n, v) in self._models if n == name)
        served = ", ".join(f"{n}/{v}" for (n, v) in self._models) or "nothing"
        hint = (f"this service serves {name} version(s) {', '.join(same)}; restart it with "
                f"the version the registry resolves (aios-mesh serve bentoml {name}@ALIAS)"
                if same else f"this service serves {served}")
        return NotFound(f"model {name}/{version} is not served here", hint=hint,
                        model=name, version=version)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServedModels:
        """Build the table from the environment (see the module docstring); loads models."""
        from aios_mesh.backends import DEFAULT_URLS
        from aios_mesh.capabilities import import_object

        env = os.environ if env is None else env
        table = cls()
        spec = env.get("AIOS_MESH_MODEL", "").strip()
        python = env.get("AIOS_MESH_PYTHON_MODELS")
        if python is None and not spec:
            python = DEFAULT_PYTHON_MODELS
        for (name, version), target in parse_python_models(python or "").items():
            fn = import_object(target)
            if not callable(fn):
                raise ConfigError(f"{target} is not callable",
                                  hint="name a function batch -> list of answers")
            table.add(ServedModel(ModelRef(name, version, source=f"python:{target}"), fn))
            log.info("serving %s/%s from python:%s", name, version, target)
        if spec:
            base = Path(env.get("AIOS_MESH_BASE_DIR") or Path.cwd() / ".aios-mesh")
            registry = env.get("AIOS_MESH_REGISTRY") or DEFAULT_URLS["registry"]
            from aios_mesh_mlflow.loading import load_predictor

            from aios_mesh.resolver import resolve_on

            ref = resolve_on(registry, spec, base_dir=base)

            table.add(ServedModel(ref, load_predictor(ref)))
            log.info("serving %s/%s (%s) from %s", ref.name, ref.version, spec, ref.source)
        return table

    # -- answering ---------------------------------------------------------------------------

    def answer(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Answer ``(name, version, input)`` items — one protocol answer per item, in order.

        Items are grouped by model version and each group is one predictor call. When a
        group's call fails, its items are retried one by one so the failure lands only on the
        items that cause it (one caller's bad input never fails its batch neighbours).
        """
        answers: list[dict[str, Any] | None] = [None] * len(items)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (name, version, _) in enumerate(items):
            groups.setdefault((name, version), []).append(i)
        for (name, version), idx in groups.items():
            model = self._models.get((name, version))
            if model is None:  # checked before batching; kept for direct callers
                err = self.not_found(name, version)
                for i in idx:
                    answers[i] = answer_error(name, version, err)
                continue
            batch = [items[i][2] for i in idx]
            try:
                preds = self._predict(model, batch)
            except MeshError as exc:
                if len(idx) == 1:
                    answers[idx[0]] = answer_error(name, version, exc)
                    continue
                for i in idx:
                    try:
                        answers[i] = answer_ok(name, version,
                                               self._predict(model, [items[i][2]])[0])
                    except MeshError as one:
                        answers[i] = answer_error(name, version, one)
                continue
            for i, pred in zip(idx, preds, strict=True):
                answers[i] = answer_ok(name, version, pred)
        return [a for a in answers if a is not None]

    @staticmethod
    def _predict(model: ServedModel, batch: list[dict[str, Any]]) -> list[Prediction]:
        label = f"{model.ref.name}/{model.ref.version}"
        try:
            raw = model.predict([dict(item) for item in batch])
            preds = [as_prediction(r) for r in raw]
        except MeshError:
            raise
        except Exception as exc:  # the model itself failed
            log.exception("model %s failed on a batch of %d", label, len(batch))
            raise BackendUnavailable(f"model {label} raised {type(exc).__name__}: {exc}",
                                     hint="see the BentoML service's log") from exc
        if len(preds) != len(batch):
            raise InvalidOutput(f"model {label} returned {len(preds)} answers for "
                                f"{len(batch)} inputs",
                                hint="a batch predictor must answer every input, in order")
        return preds
