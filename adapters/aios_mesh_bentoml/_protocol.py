"""The wire protocol between :class:`~aios_mesh_bentoml.BentoMLServing` and the BentoML service
of :mod:`aios_mesh_bentoml.service` — shared by both sides, free of ``bentoml`` and ``httpx``.

Request (``POST /predict``, JSON)::

    {"inputs": [{"model": {"name": "ticket-clf", "version": "3"}, "input": {...}}, ...]}

Every item names the model version it is for. The service's batched API receives the items
of many concurrent requests as one list (BentoML adaptive batching concatenates the lists),
so the version must travel with the item, not with the request.

Response (200, JSON): one answer per item, in order::

    [{"model": {"name": "ticket-clf", "version": "3"},
      "output": {"label": "approve"}, "confidence": 0.93,
      "usage": {"calls": 1, "tokens": 0, "gpu_seconds": 0.0}},
     {"model": {...}, "error": {"type": "InvalidInput", "message": "...", "hint": "..."}}]

A per-item ``error`` keeps one caller's bad input from failing the neighbours it was batched
with. Whole-request failures are HTTP statuses: 404 when an item names a model version the
service does not serve (checked per request, before batching: the service never answers
with another version), 400 for a body that does not parse, 5xx for server trouble.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.ports.serving import Prediction, Usage

__all__ = [
    "DEFAULT_ENDPOINT",
    "ITEM_ERRORS",
    "MODELS_ENDPOINT",
    "answer_error",
    "answer_ok",
    "error_from_answer",
    "prediction_from_answer",
]

DEFAULT_ENDPOINT: Final = "/predict"
MODELS_ENDPOINT: Final = "/models"

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


def error_from_answer(error: Any, label: str) -> MeshError:
    """Rebuild the :class:`MeshError` a per-item ``error`` object describes."""
    if not isinstance(error, Mapping):
        return InvalidOutput(f"{label}: malformed error entry {error!r}",
                             hint="the service does not speak the aios-mesh protocol")
    cls = ITEM_ERRORS.get(str(error.get("type")), BackendUnavailable)
    hint = error.get("hint")
    return cls(f"{label}: {error.get('message', 'the model failed')}",
               hint=str(hint) if hint else "see the BentoML service's log")


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def prediction_from_answer(answer: Any, name: str, version: str, label: str) -> Prediction:
    """Check one answer against the protocol and turn it into a :class:`Prediction`.

    Raises :class:`InvalidOutput` for anything off-protocol — including an answer from a
    model version other than the one asked for — and the item's own error when it has one.
    """
    if not isinstance(answer, Mapping):
        raise InvalidOutput(f"{label}: answer is {type(answer).__name__}, expected an object",
                            hint="point ?endpoint= at the aios-mesh BentoML service's "
                                 "predict API")
    model = answer.get("model")
    if not isinstance(model, Mapping) or str(model.get("name")) != name \
            or str(model.get("version")) != version:
        raise InvalidOutput(f"{label}: the answer came from model {model!r}, not "
                            f"{name}/{version}",
                            hint="the service must serve exactly the requested version; "
                                 "restart it with the version the registry resolves")
    if "error" in answer:
        raise error_from_answer(answer["error"], label)
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
