"""Model loaders: how in-process serving turns a registered model into a batch predictor.

:class:`~aios_mesh.embedded.serving.InProcessServing` runs ``python:pkg.module:fn`` sources
itself; any other ``ModelRef.source`` goes to a *model loader*, picked by the source's scheme
(:func:`source_scheme`): ``models:/…`` → ``models``, ``s3://…`` → ``s3``, a plain path →
``file``. Loaders come from

1. the ``loaders=`` mapping given to ``InProcessServing`` (wins), then
2. the ``aios_mesh.model_loaders`` entry-point group of the installed adapters — the entry
   named after the scheme, else the one named ``*`` (any scheme). The MLflow adapter
   registers ``load_predictor`` as ``*``, so a registry's sources load with MLflow's pyfunc
   loader whenever the ``mlflow`` extra is installed::

       [project.entry-points."aios_mesh.model_loaders"]
       "*" = "aios_mesh_mlflow.loading:load_predictor [mlflow]"

A loader is blocking (file and network I/O, unpickling; it runs in a worker thread) and
returns a batch predictor: ``predict(batch: list[dict]) -> list[Prediction | dict]``, one
answer per input, in order.
"""

from __future__ import annotations

from typing import Final, Protocol
from urllib.parse import urlsplit

from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import BatchPredictor

__all__ = ["ANY_SCHEME", "ModelLoader", "source_scheme"]

#: The loader name that takes a source whose scheme no other loader names.
ANY_SCHEME: Final = "*"


class ModelLoader(Protocol):
    """``loader(ref) -> predict``: load ``ref``'s artifacts (blocking) into a batch predictor.

    Raises ``NotFound`` when the artifacts are gone and ``BackendUnavailable`` when they
    cannot be fetched or loaded.
    """

    def __call__(self, ref: ModelRef, /) -> BatchPredictor: ...


def source_scheme(source: str) -> str:
    """The loader key of a model source: its URI scheme, lower-cased (``models``, ``runs``,
    ``s3``, ``mlflow-artifacts`` ...), or ``file`` for a plain path."""
    scheme = urlsplit(source).scheme.lower()
    return scheme if len(scheme) > 1 else "file"  # "" or a Windows drive letter
