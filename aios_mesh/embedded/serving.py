"""In-process serving: Python callables and registered (MLflow / scikit-learn) models run in
the caller's process. The embedded default of the Serving port (``inprocess://``)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from aios_mesh.backends import BackendURL
from aios_mesh.capabilities import import_object
from aios_mesh.errors import (
    BackendUnavailable,
    ConfigError,
    FeatureNotSupported,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.entry_points import MODEL_LOADERS_GROUP, find_entry_points, load_entry_point
from aios_mesh.ports.model_loader import ANY_SCHEME, ModelLoader, source_scheme
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import BatchPredictor, Prediction, ServingBase, as_prediction
from aios_mesh.redaction import describe_exception

__all__ = ["BatchPredictor", "InProcessServing", "as_prediction", "model_loader"]

StreamFn = Callable[[dict[str, Any]], Iterable[dict[str, Any]]]


def model_loader(source: str) -> ModelLoader:
    """The model loader for ``source``: the ``aios_mesh.model_loaders`` entry point named
    after its scheme (:func:`~aios_mesh.ports.model_loader.source_scheme`), else the one
    named ``*``.

    Raises:
        ConfigError: no installed adapter loads such sources, or the one that does misses
            its extra (the hint says what to install).
    """
    scheme = source_scheme(source)
    found = find_entry_points(MODEL_LOADERS_GROUP)
    ep = found.get(scheme) or found.get(ANY_SCHEME)
    if ep is None:
        raise ConfigError(f"no model loader for {scheme}: sources ({source})",
                          hint='loading registered models needs MLflow: '
                               'pip install "aios-mesh[mlflow]" (or install an adapter that '
                               'registers a loader in the aios_mesh.model_loaders group)')
    loader: ModelLoader = load_entry_point(ep, what=f"the model loader for {scheme}: sources")
    return loader


class InProcessServing(ServingBase):
    """Runs models inside this process.

    Models come from :meth:`register` (a callable per ``name``/``version``) or, on first use,
    from ``ModelRef.source``: ``python:pkg.module:fn`` imports a batch predictor, anything
    else (``models:/``, ``runs:/``, a file path) goes to the model loader of its scheme
    (:func:`model_loader`; the MLflow adapter's pyfunc loader takes every scheme — see
    :mod:`aios_mesh.ports.model_loader`).

    Example::

        serving = InProcessServing()
        serving.register("echo", "1", lambda batch: [{"text": x["text"]} for x in batch])
    """

    features = frozenset({Feature.BATCH, Feature.STREAMING})

    def __init__(self, *, offload_threshold: int = 64) -> None:
        self._predictors: dict[tuple[str, str], BatchPredictor] = {}
        self._streams: dict[tuple[str, str], StreamFn] = {}
        self._loading: dict[tuple[str, str], asyncio.Lock] = {}
        # Batches at least this large run in a worker thread so the event loop stays free.
        self.offload_threshold = offload_threshold

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """``inprocess://?offload_threshold=N``; a keyword argument wins over the URL."""
        url = url.with_options(options)
        url.check_options({"offload_threshold"}, what="inprocess")
        return cls(offload_threshold=url.int_option("offload_threshold", 64, min=0))

    def register(self, name: str, version: str, predict: BatchPredictor, *,
                 stream: StreamFn | None = None) -> ModelRef:
        """Serve ``predict`` as ``name``/``version``; returns the ref to register/resolve."""
        self._predictors[(name, version)] = predict
        if stream is not None:
            self._streams[(name, version)] = stream
        return ModelRef(name=name, version=version, source=f"inprocess:{name}/{version}")

    def register_function(self, name: str, version: str,
                          fn: Callable[[dict[str, Any]], Any]) -> ModelRef:
        """Serve a one-item function (``dict -> dict``) by mapping it over each batch."""
        return self.register(name, version, lambda batch: [fn(item) for item in batch])

    async def preload(self, model: ModelRef) -> None:
        """Load ``model`` now, so the first call does not pay for it."""
        await self._predictor(model)

    async def _predictor(self, model: ModelRef) -> BatchPredictor:
        key = (model.name, model.version)
        found = self._predictors.get(key)
        if found is not None:
            return found
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._predictors:
                self._predictors[key] = await asyncio.to_thread(self._load, model)
        return self._predictors[key]

    @staticmethod
    def _load(model: ModelRef) -> BatchPredictor:
        source = model.source
        if source.startswith("python:"):
            try:
                fn = import_object(source.removeprefix("python:"))
            except MeshError:
                raise
            except Exception as exc:  # the module itself failed while being imported
                raise ConfigError(f"cannot import {source}: {type(exc).__name__}: {exc}",
                                  hint="fix the module; it raised while being imported") from exc
            if not callable(fn):
                raise ConfigError(f"{source} is not callable",
                                  hint="point python: at a batch predictor function")
            predictor: BatchPredictor = fn
            return predictor
        if not source or source.startswith("inprocess:"):
            raise NotFound(f"model {model.name}/{model.version} is not served here",
                           hint="register it with InProcessServing.register() or "
                                "give it a loadable source")
        loaded: BatchPredictor = model_loader(source)(model)
        return loaded

    async def infer_batch(self, model: ModelRef, payloads: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Prediction]:
        predict = await self._predictor(model)
        batch = [dict(p) for p in payloads]
        try:
            if len(batch) >= self.offload_threshold:
                raw = await asyncio.to_thread(predict, batch)
            else:
                raw = predict(batch)
            if inspect.isawaitable(raw):  # async predictors (also when offloaded)
                raw = await raw
        except MeshError:
            raise
        except Exception as exc:  # the model itself failed: a backend failure, retryable
            raise BackendUnavailable(f"model {model.name}/{model.version} raised "
                                     f"{describe_exception(exc)}",
                                     hint="see the chained exception for the model's "
                                          "traceback") from exc
        if isinstance(raw, Mapping | str | bytes) or not isinstance(raw, Iterable):
            raise InvalidOutput(f"model {model.name}/{model.version} returned "
                                f"{type(raw).__name__}, expected one answer per input",
                                hint="a batch predictor returns a list, in input order")
        answers = [as_prediction(r) for r in raw]
        if len(answers) != len(batch):
            raise InvalidOutput(f"model {model.name}/{model.version} returned {len(answers)} "
                                f"answers for {len(batch)} inputs",
                                hint="a batch predictor returns one answer per input, "
                                     "in input order")
        return answers

    async def stream(self, model: ModelRef, payload: Mapping[str, Any], *,
                     timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        fn = self._streams.get((model.name, model.version))
        if fn is None:
            raise FeatureNotSupported(f"model {model.name}/{model.version} does not stream",
                                      hint="register it with stream=... or call invoke()")
        label = f"{model.name}/{model.version}"
        try:
            for chunk in fn(dict(payload)):
                if not isinstance(chunk, Mapping):
                    raise InvalidOutput(f"model {label} streamed {type(chunk).__name__}, "
                                        "expected a mapping",
                                        hint="a stream function yields dicts")
                yield dict(chunk)
                await asyncio.sleep(0)
        except MeshError:
            raise
        except Exception as exc:  # the model failed mid-stream
            raise BackendUnavailable(f"model {label} raised {describe_exception(exc)}",
                                     hint="see the chained exception for the model's "
                                          "traceback") from exc
