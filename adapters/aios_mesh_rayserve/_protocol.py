"""The wire protocol between :class:`~aios_mesh_rayserve.RayServeServing` and the aios-mesh
Ray Serve deployment, and the table of model versions a replica serves — free of ``ray``
and ``httpx``, so both sides (and unit tests) import it.

The JSON shapes are those of the BentoML adapter's protocol, so one client-side reading of
an answer means the same thing on every served backend:

Request (``POST /<route>`` or ``POST /<route>/predict``)::

    {"inputs": [{"model": {"name": "ticket-clf", "version": "3"}, "input": {...}}, ...]}

Response (200): one answer per item, in order::

    [{"model": {"name": ..., "version": ...}, "output": {...}, "confidence": 0.93,
      "usage": {"calls": 1, "tokens": 0, "gpu_seconds": 0.0}},
     {"model": {...}, "error": {"type": "InvalidInput", "message": "...", "hint": "..."}}]

An item naming a version the deployment does not serve fails the whole request with 404
(JSON body) before any item joins a ``@serve.batch`` batch; a body that does not parse is
400. In handle mode the same item and answer lists travel as Python objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.ports.registry import ModelRef, parse_model_spec
from aios_mesh.ports.serving import BatchPredictor, Prediction, Usage, as_prediction

__all__ = [
    "ITEM_ERRORS",
    "ServedModel",
    "ServedModels",
    "answer_error",
    "answer_ok",
    "parse_items",
    "parse_python_models",
    "prediction_from_answer",
]

log = logging.getLogger("aios_mesh_rayserve.deployment")

#: Error types a per-item answer may carry, by name; anything else reads as BackendUnavailable.
ITEM_ERRORS: Final[Mapping[str, type[MeshError]]] = {
    cls.__name__: cls for cls in (InvalidInput, InvalidOutput, NotFound, BackendUnavailable,
                                  BackendTimeout)
}


def answer_ok(name: str, version: str, prediction: Prediction) -> dict[str, Any]:
    """The answer for one item the model answered."""
    u = prediction.usage
    return {"model": {"name": name, "version": version}, "output": prediction.output,
            "confidence": prediction.confidence,
            "usage": {"calls": u.calls, "tokens": u.tokens, "gpu_seconds": u.gpu_seconds}}


def answer_error(name: str, version: str, error: MeshError) -> dict[str, Any]:
    """The answer for one item the model could not answer."""
    kind = next((n for n, c in ITEM_ERRORS.items() if type(error) is c), None) or next(
        (n for n, c in ITEM_ERRORS.items() if isinstance(error, c)), "BackendUnavailable")
    return {"model": {"name": name, "version": version},
            "error": {"type": kind, "message": error.message, "hint": error.hint}}


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def prediction_from_answer(answer: Any, name: str, version: str, label: str) -> Prediction:
    """Check one answer and make it a :class:`Prediction`; an answer from another model
    version, or off the protocol, is :class:`InvalidOutput`; an item error is re-raised as
    its own type."""
    hint = "point the URL's route at an aios-mesh Ray Serve application"
    if not isinstance(answer, Mapping):
        raise InvalidOutput(f"{label}: answer is {type(answer).__name__}, expected an object",
                            hint=hint)
    model = answer.get("model")
    if not isinstance(model, Mapping) or str(model.get("name")) != name \
            or str(model.get("version")) != version:
        raise InvalidOutput(f"{label}: the answer came from model {model!r}, not "
                            f"{name}/{version}",
                            hint="the deployment must serve exactly the requested version")
    if "error" in answer:
        error = answer["error"]
        if not isinstance(error, Mapping):
            raise InvalidOutput(f"{label}: malformed error entry {error!r}", hint=hint)
        cls = ITEM_ERRORS.get(str(error.get("type")), BackendUnavailable)
        said = error.get("hint")
        raise cls(f"{label}: {error.get('message', 'the model failed')}",
                  hint=str(said) if said else "see the Ray Serve replica's log")
    output = answer.get("output")
    if not isinstance(output, Mapping):
        raise InvalidOutput(f"{label}: output is {type(output).__name__}, expected an object",
                            hint="the model must answer one JSON object per input")
    conf = answer.get("confidence")
    if conf is not None and (isinstance(conf, bool) or not isinstance(conf, int | float)):
        raise InvalidOutput(f"{label}: confidence {conf!r} is not a number",
                            hint="the model's confidence must be a number or null")
    raw = answer.get("usage")
    usage = Usage()
    if isinstance(raw, Mapping):
        usage = Usage(calls=int(_number(raw.get("calls"), 1)),
                      tokens=int(_number(raw.get("tokens"), 0)),
                      gpu_seconds=_number(raw.get("gpu_seconds"), 0.0))
    return Prediction(dict(output), confidence=None if conf is None else float(conf),
                      usage=usage)


def parse_items(doc: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """``{"inputs": [{"model": {...}, "input": {...}}]}`` → ``[(name, version, input)]``;
    :class:`InvalidInput` for anything else."""
    hint = 'send {"inputs": [{"model": {"name": N, "version": V}, "input": {...}}]}'
    items = doc.get("inputs") if isinstance(doc, Mapping) else None
    if not isinstance(items, list):
        raise InvalidInput("the request has no 'inputs' list", hint=hint)
    found = []
    for item in items:
        model = item.get("model") if isinstance(item, Mapping) else None
        payload = item.get("input") if isinstance(item, Mapping) else None
        if not isinstance(model, Mapping) or not isinstance(payload, dict) \
                or not isinstance(model.get("name"), str) \
                or not isinstance(model.get("version"), str):
            raise InvalidInput("an item is not {model: {name, version}, input: {...}}",
                               hint=hint)
        found.append((model["name"], model["version"], payload))
    return found


def parse_python_models(spec: str | Mapping[str, str]) -> dict[tuple[str, str], str]:
    """``"a/1=pkg.mod:fn,b/2=pkg.mod:gn"`` (or the same as a mapping) →
    ``{("a", "1"): "pkg.mod:fn", ...}``."""
    pairs = (list(spec.items()) if isinstance(spec, Mapping) else
             [tuple(p.strip().partition("=")[::2]) for p in spec.split(",") if p.strip()])
    found: dict[tuple[str, str], str] = {}
    for key, target in pairs:
        name, alias, version = parse_model_spec(key.strip())
        if alias is not None or version is None or ":" not in target:
            raise ConfigError(f"python model {key}={target} is malformed",
                              hint="write name/version=package.module:callable, e.g. "
                                   "echo-upper/1=aios_mesh_rayserve.testing:echo_upper")
        found[(name, version)] = target.strip()
    return found


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One model version a replica answers for."""

    ref: ModelRef
    predict: BatchPredictor

    def describe(self) -> dict[str, Any]:
        """Name, version, alias, source and run id (the ``/models`` answer)."""
        return {"name": self.ref.name, "version": self.ref.version, "alias": self.ref.alias,
                "source": self.ref.source, "run_id": self.ref.run_id}


class ServedModels:
    """The model versions one replica serves, and how it answers a batch of items."""

    def __init__(self, models: Sequence[ServedModel] = ()) -> None:
        self._models = {(m.ref.name, m.ref.version): m for m in models}

    @classmethod
    def load(cls, python_models: Mapping[str, str] | None = None,
             registered: Sequence[ModelRef] = (),
             loader: Callable[[ModelRef], BatchPredictor] | None = None) -> ServedModels:
        """Import the Python batch predictors (``name/version`` → ``module:callable``) and
        load each registered model version with ``loader`` (the MLflow loader by default)."""
        from aios_mesh.capabilities import import_object

        models = []
        for (name, version), target in parse_python_models(python_models or {}).items():
            fn = import_object(target)
            if not callable(fn):
                raise ConfigError(f"{target} is not callable",
                                  hint="name a function batch -> list of answers")
            models.append(ServedModel(ModelRef(name, version, source=f"python:{target}"), fn))
        if registered:
            load = loader
            if load is None:
                from aios_mesh_mlflow.loading import load_predictor

                load = load_predictor
            for ref in registered:
                models.append(ServedModel(ref, load(ref)))
                log.info("serving %s/%s from %s", ref.name, ref.version, ref.source)
        return cls(models)

    def serves(self, name: str, version: str) -> bool:
        """Whether this replica answers for ``name/version``."""
        return (name, version) in self._models

    def describe(self) -> list[dict[str, Any]]:
        """Every served version (see :meth:`ServedModel.describe`)."""
        return [m.describe() for m in self._models.values()]

    def not_found(self, name: str, version: str) -> NotFound:
        """The error for a version this deployment does not serve."""
        same = sorted(v for (n, v) in self._models if n == name)
        served = ", ".join(f"{n}/{v}" for (n, v) in self._models) or "nothing"
        hint = (f"this deployment serves {name} version(s) {', '.join(same)}; redeploy it "
                f"with the version the registry resolves (aios-mesh serve rayserve "
                f"{name}@ALIAS)" if same else f"this deployment serves {served}")
        return NotFound(f"model {name}/{version} is not served here", hint=hint,
                        model=name, version=version)

    def answer(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """One answer per ``(name, version, input)`` item, in order. Items are grouped by
        version, one predictor call per group; a failing group is retried item by item so
        one caller's bad input never fails the neighbours it was batched with."""
        answers: list[dict[str, Any]] = [{} for _ in items]
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (name, version, _) in enumerate(items):
            groups.setdefault((name, version), []).append(i)
        for (name, version), idx in groups.items():
            model = self._models.get((name, version))
            if model is None:
                err = self.not_found(name, version)
                for i in idx:
                    answers[i] = answer_error(name, version, err)
                continue
            try:
                preds = self._predict(model, [items[i][2] for i in idx])
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
        return answers

    @staticmethod
    def _predict(model: ServedModel, batch: list[dict[str, Any]]) -> list[Prediction]:
        label = f"{model.ref.name}/{model.ref.version}"
        try:
            preds = [as_prediction(r) for r in model.predict([dict(x) for x in batch])]
        except MeshError:
            raise
        except Exception as exc:  # the model itself failed
            log.exception("model %s failed on a batch of %d", label, len(batch))
            raise BackendUnavailable(f"model {label} raised {type(exc).__name__}: {exc}",
                                     hint="see the Ray Serve replica's log") from exc
        if len(preds) != len(batch):
            raise InvalidOutput(f"model {label} returned {len(preds)} answers for "
                                f"{len(batch)} inputs",
                                hint="a batch predictor must answer every input, in order")
        return preds
