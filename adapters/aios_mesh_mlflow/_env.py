"""Process-wide MLflow settings, applied before ``mlflow`` is first imported.

Only defaults are set (``os.environ.setdefault``): a value the user exported wins.

* ``MLFLOW_DISABLE_TELEMETRY=true`` — no usage telemetry from a library call.
* ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` — MLflow's own default (7 retries with exponential
  back-off) turns "tracking server down" into a four-minute hang; the mesh's retry step owns
  retries, so the adapter fails fast with a retryable ``BackendUnavailable``.
* ``MLFLOW_HTTP_REQUEST_TIMEOUT=30`` — seconds per connect/read, instead of 120.
"""

from __future__ import annotations

import os

__all__ = ["MLFLOW_ENV_DEFAULTS", "apply_env_defaults"]

MLFLOW_ENV_DEFAULTS: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def apply_env_defaults() -> None:
    """Set every default in :data:`MLFLOW_ENV_DEFAULTS` the environment does not set yet."""
    for key, value in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
