"""MLflow adapter of aios-mesh: the ModelRegistry port over MLflow's model registry
(``mlflow+sqlite://``, ``mlflow+http(s)://``) and a loader that turns a registered model
version into a batch predictor for in-process serving (:mod:`aios_mesh_mlflow.loading`).

Importing this package sets MLflow's process-wide defaults (telemetry off, fail-fast HTTP; see
:mod:`aios_mesh_mlflow._env`) but does not import ``mlflow`` itself; that happens on first use.
"""

from aios_mesh_mlflow._env import apply_env_defaults

apply_env_defaults()

from aios_mesh_mlflow._common import TRACKING_URI_TAG  # noqa: E402
from aios_mesh_mlflow.registry import MlflowRegistry  # noqa: E402

__all__ = ["TRACKING_URI_TAG", "MlflowRegistry", "apply_env_defaults"]
