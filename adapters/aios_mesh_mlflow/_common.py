"""Shared by the registry and the loader: error translation and artifact locations."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aios_mesh.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    MeshError,
    NotFound,
)

__all__ = [
    "TRACKING_URI_TAG",
    "local_path",
    "read_signature",
    "run_artifact_location",
    "storage_location",
    "translate",
]

#: Key of ``ModelRef.tags`` under which :class:`MlflowRegistry` records the tracking URI the
#: version came from, so :func:`~aios_mesh_mlflow.loading.load_predictor` can fetch its
#: artifacts without MLflow's process-global tracking URI. Not stored in MLflow.
TRACKING_URI_TAG = "aios_mesh.tracking_uri"

_LOGGED_MODEL = re.compile(r"^models:/(?P<id>m-[0-9a-f]+)/?$")


def _error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, str) else None


def translate(exc: BaseException, *, where: str, what: str, not_found_hint: str) -> MeshError:
    """Map an exception raised by MLflow (or below it) to the mesh's error tree.

    ``where`` names the registry (no secrets), ``what`` the operation, for the message.
    """
    if isinstance(exc, MeshError):
        return exc
    code = _error_code(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if code in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"} or (
            code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text):
        # MLflow reports an unknown *alias* as INVALID_PARAMETER_VALUE (HTTP 400), an unknown
        # model or version as RESOURCE_DOES_NOT_EXIST (404).
        return NotFound(f"{what}: {text}", hint=not_found_hint, registry=where)
    if code == "ENDPOINT_NOT_FOUND":
        return ConfigError(f"{where} does not answer like an MLflow tracking server ({text})",
                           hint="check the host, port and path prefix of the registry URL",
                           registry=where)
    if code in {"UNAUTHENTICATED", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED"}:
        return ConfigError(f"{what}: {where} refused the credentials ({text})",
                           hint="set MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/"
                                "MLFLOW_TRACKING_PASSWORD for this process",
                           registry=where)
    if code in {"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE",
                "RESOURCE_ALREADY_EXISTS", "MALFORMED_REQUEST"}:
        return InvalidInput(f"{what}: {text}",
                            hint="check the model name, alias, version and source URI",
                            registry=where)
    # Connection refused, timeouts, 5xx, a locked or unreadable sqlite file ...
    return BackendUnavailable(f"{what}: {where} failed: {text}",
                              hint="check that the MLflow tracking server (or database file) "
                                   "is reachable; the call may be retried",
                              registry=where, error=type(exc).__name__)


def local_path(uri: str) -> Path | None:
    """The filesystem path of a ``file://`` URI or a plain absolute path, else ``None``."""
    if uri.startswith("/"):
        return Path(uri)
    parts = urlsplit(uri)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(unquote(parts.path))
    return None


def read_signature(source: str) -> dict[str, Any] | None:
    """The model's signature from ``MLmodel`` when ``source`` is a local folder, else ``None``.

    Reading one small local file is cheap; a remote source would cost a download per resolve,
    so it is skipped (the loader sees the signature anyway). Shape: ``{"inputs": [...],
    "outputs": [...], "params": [...] | None}`` (MLflow's column specs, JSON-decoded).
    """
    folder = local_path(source)
    if folder is None:
        return None
    mlmodel = folder / "MLmodel"
    try:
        if not mlmodel.is_file():
            return None
        yaml: Any = importlib.import_module("yaml")  # PyYAML comes with mlflow; no stubs

        doc = yaml.safe_load(mlmodel.read_text())
    except Exception:  # an unreadable MLmodel only costs the signature
        return None
    sig = doc.get("signature") if isinstance(doc, dict) else None
    if not isinstance(sig, dict):
        return None
    out: dict[str, Any] = {}
    for key in ("inputs", "outputs", "params"):
        value = sig.get(key)
        try:
            out[key] = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            out[key] = value
    return out


def run_artifact_location(client: Any, source: str) -> str:
    """Where the files of a ``runs:/<run>/<path>`` URI are: the run's artifact URI plus
    ``<path>`` (``file:///…`` on sqlite, ``mlflow-artifacts:/…`` on a server); any other
    source unchanged. Asks ``client`` (never the process-global tracking URI)."""
    parts = urlsplit(source)
    if parts.scheme != "runs":
        return source
    run_id, _, path = f"{parts.netloc}{parts.path}".lstrip("/").partition("/")
    base = str(client.get_run(run_id).info.artifact_uri).rstrip("/")
    return f"{base}/{path.strip('/')}" if path.strip("/") else base


def storage_location(client: Any, source: str, *,
                     resolve_logged_model: bool) -> tuple[str, str | None, str | None]:
    """Where the artifacts of ``source`` really are: ``(location, run_id, model_id)``.

    * ``models:/m-<id>`` (an MLflow 3 *logged model*) → the logged model's
      ``artifact_location`` when ``resolve_logged_model`` (else ``models:/m-<id>``, for a
      server to resolve itself), its source run and its id.
    * ``runs:/<run>/<name>`` where the run logged a model called ``<name>`` (what
      ``mlflow.<flavor>.log_model(name=...)`` does in MLflow 3) → as above for that model.
    * anything else → unchanged (``run_id`` from a ``runs:/`` URI when there is one).

    Why: MLflow's sqlite registry store and its ``runs:/`` artifact repository look logged
    models up through a client on the *process-global* tracking URI (which defaults to
    ``./mlflow.db`` in the working directory), not through the client they were called on.
    """
    parts = urlsplit(source)
    model_id: str | None = None
    run_id: str | None = None
    if parts.scheme == "runs":
        pieces = parts.path.lstrip("/").split("/", 1)
        run_id = pieces[0] or None
        name = pieces[1].strip("/") if len(pieces) > 1 else ""
        if run_id is None or not name or "/" in name:
            return source, run_id, None
        run = client.get_run(run_id)
        token: str | None = None
        while True:
            page = client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"name = '{name}'", page_token=token)
            found = next((m for m in page if m.source_run_id == run_id), None)
            if found is not None:
                model_id = str(found.model_id)
                break
            token = page.token
            if not token:
                return source, run_id, None
    else:
        m = _LOGGED_MODEL.match(source)
        if m is None:
            return source, None, None
        model_id = m["id"]
    if not resolve_logged_model:
        return f"models:/{model_id}", run_id, model_id
    logged = client.get_logged_model(model_id)
    return (str(logged.artifact_location), run_id or logged.source_run_id, model_id)
