"""The aios-mesh serving wire protocol: the JSON shapes that model servers built for the mesh
(the BentoML service, the Ray Serve deployment) and their clients exchange, the table of
model versions a server answers for, and the mapping of a per-item error back to its
:class:`~aios_mesh.errors.MeshError` — one definition, so an answer means the same thing on
every served backend. Free of any server SDK and of ``httpx``.

Request (``POST .../predict``, JSON)::

    {"inputs": [{"model": {"name": "ticket-clf", "version": "3"}, "input": {...}}, ...]}

Every item names the model version it is for (servers batch the items of many concurrent
requests, so the version travels with the item, not with the request).

Response (200, JSON): one answer per item, in order::

    [{"model": {"name": "ticket-clf", "version": "3"},
      "output": {"label": "approve"}, "confidence": 0.93,
      "usage": {"calls": 1, "tokens": 0, "gpu_seconds": 0.0}},
     {"model": {...}, "error": {"type": "InvalidInput", "message": "...", "hint": "..."}}]

A per-item ``error`` keeps one caller's bad input from failing the neighbours it was batched
with. Whole-request failures are HTTP statuses: 404 when an item names a version the server
does not serve (checked before batching), 400 for a body that does not parse.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

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
    "AnswerHints",
    "ServedModel",
    "ServedModels",
    "answer_error",
    "answer_ok",
    "check_client_limits",
    "check_serves",
    "error_from_answer",
    "parse_items",
    "parse_python_models",
    "prediction_from_answer",
    "request_chunks",
]

#: Error types a per-item answer may carry, by name; anything else reads as BackendUnavailable.
ITEM_ERRORS: Final[Mapping[str, type[MeshError]]] = {
    cls.__name__: cls for cls in (InvalidInput, InvalidOutput, NotFound, BackendUnavailable,
                                  BackendTimeout)
}


def answer_ok(name: str, version: str, prediction: Prediction) -> dict[str, Any]:
    """The JSON answer for one item the model answered."""
    usage = prediction.usage
    return {"model": {"name": name, "version": version}, "output": prediction.output,
            "confidence": prediction.confidence,
            "usage": {"calls": usage.calls, "tokens": usage.tokens,
                      "gpu_seconds": usage.gpu_seconds}}


def answer_error(name: str, version: str, error: MeshError) -> dict[str, Any]:
    """The JSON answer for one item the model could not answer."""
    kind = type(error).__name__ if type(error).__name__ in ITEM_ERRORS else \
        next((c.__name__ for c in ITEM_ERRORS.values() if isinstance(error, c)),
             "BackendUnavailable")
    return {"model": {"name": name, "version": version},
            "error": {"type": kind, "message": error.message, "hint": error.hint}}


@dataclass(frozen=True, slots=True)
class AnswerHints:
    """What a client tells its caller when an answer goes wrong, in its backend's words.

    Attributes:
        protocol: the answer is off the protocol (where to point the URL).
        version: the answer came from another model version.
        log: the item failed on the server and said no hint of its own.
        malformed: the item's error entry is not an object (default: ``protocol``).
    """

    protocol: str
    version: str
    log: str
    malformed: str | None = None


def error_from_answer(error: Any, label: str, hints: AnswerHints) -> MeshError:
    """Rebuild the :class:`MeshError` a per-item ``error`` object describes."""
    if not isinstance(error, Mapping):
        return InvalidOutput(f"{label}: malformed error entry {error!r}",
                             hint=hints.malformed or hints.protocol)
    cls = ITEM_ERRORS.get(str(error.get("type")), BackendUnavailable)
    said = error.get("hint")
    return cls(f"{label}: {error.get('message', 'the model failed')}",
               hint=str(said) if said else hints.log)


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def prediction_from_answer(answer: Any, name: str, version: str, label: str,
                           hints: AnswerHints) -> Prediction:
    """Check one answer against the protocol and turn it into a :class:`Prediction`.

    Raises :class:`InvalidOutput` for anything off-protocol — including an answer from a
    model version other than the one asked for — and the item's own error when it has one.
    """
    if not isinstance(answer, Mapping):
        raise InvalidOutput(f"{label}: answer is {type(answer).__name__}, expected an object",
                            hint=hints.protocol)
    model = answer.get("model")
    if not isinstance(model, Mapping) or str(model.get("name")) != name \
            or str(model.get("version")) != version:
        raise InvalidOutput(f"{label}: the answer came from model {model!r}, not "
                            f"{name}/{version}", hint=hints.version)
    if "error" in answer:
        raise error_from_answer(answer["error"], label, hints)
    output = answer.get("output")
    if not isinstance(output, Mapping):
        raise InvalidOutput(f"{label}: output is {type(output).__name__}, expected an object",
                            hint="the model must answer one JSON object per input")
    conf = answer.get("confidence")
    if conf is not None and (isinstance(conf, bool) or not isinstance(conf, int | float)):
        raise InvalidOutput(f"{label}: confidence {conf!r} is not a number",
                            hint="the model's confidence must be a number or null")
    raw_usage = answer.get("usage")
    usage = Usage()
    if isinstance(raw_usage, Mapping):
        usage = Usage(calls=int(_number(raw_usage.get("calls"), 1)),
                      tokens=int(_number(raw_usage.get("tokens"), 0)),
                      gpu_seconds=_number(raw_usage.get("gpu_seconds"), 0.0))
    return Prediction(dict(output), confidence=None if conf is None else float(conf),
                      usage=usage)


def check_client_limits(timeout: float, max_batch: int) -> None:
    """A client's ``timeout`` (positive seconds) and ``max_batch`` (at least 1), or
    :class:`ConfigError` naming the URL option to fix."""
    if not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"timeout={timeout!r} must be a positive number of seconds",
                          hint="write ?timeout=30")
    if max_batch < 1:
        raise ConfigError(f"max_batch={max_batch!r} must be at least 1",
                          hint="write ?max_batch=64")


def request_chunks(model: ModelRef, payloads: Sequence[Mapping[str, Any]],
                   max_batch: int) -> list[list[dict[str, Any]]]:
    """The request items for ``payloads`` (each naming ``model``'s version), in order, cut
    into requests of at most ``max_batch`` items."""
    key = {"name": model.name, "version": model.version}
    items = [{"model": key, "input": dict(p)} for p in payloads]
    return [items[i:i + max_batch] for i in range(0, len(items), max_batch)]


def check_serves(served: Sequence[Mapping[str, Any]], model: ModelRef, where: str,
                 fix: str) -> None:
    """:class:`NotFound` unless ``served`` (a ``models`` answer) lists ``model``'s version;
    the hint names what is served, then ``fix`` (formatted with ``name``)."""
    if not any(str(m.get("name")) == model.name and str(m.get("version")) == model.version
               for m in served):
        have = ", ".join(f"{m.get('name')}/{m.get('version')}" for m in served) or "nothing"
        raise NotFound(f"{where} does not serve {model.name}/{model.version}",
                       hint=f"it serves {have}; {fix.format(name=model.name)}")


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


def parse_python_models(spec: str | Mapping[str, str], *, what: str = "python model",
                        example: str = "echo-upper/1=package.module:echo_upper",
                        ) -> dict[tuple[str, str], str]:
    """``"a/1=pkg.mod:fn,b/2=pkg.mod:gn"`` (or the same as a mapping) →
    ``{("a", "1"): "pkg.mod:fn", ...}``; a malformed entry is a :class:`ConfigError` naming
    it as ``what`` and showing ``example``."""
    pairs = (list(spec.items()) if isinstance(spec, Mapping) else
             [(key, target) for key, _, target in
              (p.strip().partition("=") for p in spec.split(",") if p.strip())])
    found: dict[tuple[str, str], str] = {}
    for key, target in pairs:
        entry = f"{key}={target}" if target else key
        hint = f"write name/version=package.module:callable, e.g. {example}"
        if ":" not in target:
            raise ConfigError(f"{what} {entry!r} is malformed", hint=hint)
        name, alias, version = parse_model_spec(key.strip())
        if alias is not None or version is None:
            raise ConfigError(f"{what} {entry!r} is malformed", hint=hint)
        found[(name, version)] = target.strip()
    return found


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One model version a server answers for."""

    ref: ModelRef
    predict: BatchPredictor

    def describe(self) -> dict[str, Any]:
        """Name, version, alias, source and run id (the ``/models`` answer)."""
        return {"name": self.ref.name, "version": self.ref.version, "alias": self.ref.alias,
                "source": self.ref.source, "run_id": self.ref.run_id}


class ServedModels:
    """The table of model versions one server process serves, and how it answers a batch.

    A server adapter subclasses it to say what it is called (:attr:`unit`), how to restart
    it with another version (:attr:`restart`, formatted with ``name``), where its log is
    (:attr:`log_hint`) and which logger reports a failing model (:attr:`logger`).
    """

    unit: ClassVar[str] = "server"
    restart: ClassVar[str] = "restart it with the version the registry resolves"
    log_hint: ClassVar[str] = "see the server's log"
    logger: ClassVar[logging.Logger] = logging.getLogger("aios_mesh.serving")

    def __init__(self, models: Sequence[ServedModel] = ()) -> None:
        self._models: dict[tuple[str, str], ServedModel] = {}
        for model in models:
            self.add(model)

    def add(self, model: ServedModel) -> None:
        """Serve ``model`` (replacing the same version)."""
        self._models[(model.ref.name, model.ref.version)] = model

    def add_python(self, spec: str | Mapping[str, str], *, what: str = "python model",
                   example: str = "echo-upper/1=package.module:echo_upper") -> None:
        """Import and serve the Python batch predictors ``spec`` names (see
        :func:`parse_python_models`)."""
        from aios_mesh.capabilities import import_object

        for (name, version), target in parse_python_models(spec, what=what,
                                                           example=example).items():
            fn = import_object(target)
            if not callable(fn):
                raise ConfigError(f"{target} is not callable",
                                  hint="name a function batch -> list of answers")
            self.add(ServedModel(ModelRef(name, version, source=f"python:{target}"), fn))
            self.logger.info("serving %s/%s from python:%s", name, version, target)

    def serves(self, name: str, version: str) -> bool:
        """Whether this server answers for ``name/version``."""
        return (name, version) in self._models

    def describe(self) -> list[dict[str, Any]]:
        """Every served version (see :meth:`ServedModel.describe`)."""
        return [m.describe() for m in self._models.values()]

    def not_found(self, name: str, version: str) -> NotFound:
        """The error for a version this server does not serve (answered as HTTP 404)."""
        same = sorted(v for (n, v) in self._models if n == name)
        served = ", ".join(f"{n}/{v}" for (n, v) in self._models) or "nothing"
        hint = (f"this {self.unit} serves {name} version(s) {', '.join(same)}; "
                f"{self.restart.format(name=name)}"
                if same else f"this {self.unit} serves {served}")
        return NotFound(f"model {name}/{version} is not served here", hint=hint,
                        model=name, version=version)

    def answer(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Answer ``(name, version, input)`` items — one protocol answer per item, in order.

        Items are grouped by model version and each group is one predictor call. When a
        group's call fails, its items are retried one by one so the failure lands only on the
        items that cause it (one caller's bad input never fails its batch neighbours).
        """
        answers: list[dict[str, Any]] = [{} for _ in items]
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

    def _predict(self, model: ServedModel, batch: list[dict[str, Any]]) -> list[Prediction]:
        label = f"{model.ref.name}/{model.ref.version}"
        try:
            preds = [as_prediction(r) for r in model.predict([dict(x) for x in batch])]
        except MeshError:
            raise
        except Exception as exc:  # the model itself failed
            self.logger.exception("model %s failed on a batch of %d", label, len(batch))
            raise BackendUnavailable(f"model {label} raised {type(exc).__name__}: {exc}",
                                     hint=self.log_hint) from exc
        if len(preds) != len(batch):
            raise InvalidOutput(f"model {label} returned {len(preds)} answers for "
                                f"{len(batch)} inputs",
                                hint="a batch predictor must answer every input, in order")
        return preds
