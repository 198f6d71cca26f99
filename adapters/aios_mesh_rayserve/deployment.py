"""The aios-mesh Ray Serve deployment: registered (or Python) model versions behind one
HTTP route and one deployment handle, with Ray Serve's ``@serve.batch`` batching.

Built by :func:`build_app` (used by ``aios-mesh serve rayserve`` and the test launcher)::

    app = build_app(registered=[ref], options=DeploymentOptions(max_batch_size=32))
    serve.run(app, name="invoice-clf", route_prefix="/invoice-clf")

HTTP (wire protocol in :mod:`aios_mesh_rayserve._protocol`), under the route prefix:

``POST /`` or ``POST /predict``
    each item of ``inputs`` is one call of the ``@serve.batch`` method, so the items of
    concurrent requests (from any caller, over any proxy) are predicted together, up to
    ``max_batch_size`` items or ``batch_wait_timeout_s``. An item naming a version this
    deployment does not serve fails the request with 404 before it joins a batch.
``GET|POST /models``
    the versions served, the batching settings and the replica's process id.
``GET /readyz``
    200 once the replica has loaded its models (Ray Serve routes to a replica only then).

Handle mode (a caller inside the Ray cluster): ``await handle.predict.remote(items)`` with
the same item and answer lists, no HTTP on the way.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aios_mesh.errors import InvalidInput, NotFound
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving_protocol import answer_error, parse_items
from aios_mesh_rayserve._protocol import ServedModels

__all__ = ["DeploymentOptions", "MeshModelDeployment", "build_app"]


@dataclass(frozen=True, slots=True)
class DeploymentOptions:
    """Ray Serve's batching, replica and autoscaling settings of one deployment.

    Args:
        max_batch_size: items per ``@serve.batch`` call.
        batch_wait_timeout_s: how long a batch waits to fill.
        num_replicas: fixed replica count (ignored when ``max_replicas`` is set).
        min_replicas / max_replicas / target_ongoing_requests: autoscaling (Ray Serve's
            ``autoscaling_config``) when ``max_replicas`` is set.
        max_ongoing_requests: requests one replica takes at once.
        num_cpus: CPUs Ray reserves per replica (fractions allowed).
    """

    max_batch_size: int = 64
    batch_wait_timeout_s: float = 0.005
    num_replicas: int = 1
    min_replicas: int = 1
    max_replicas: int | None = None
    target_ongoing_requests: float = 2.0
    max_ongoing_requests: int = 256
    num_cpus: float = 0.25

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments of ``Deployment.options``."""
        opts: dict[str, Any] = {"max_ongoing_requests": self.max_ongoing_requests,
                                "ray_actor_options": {"num_cpus": self.num_cpus}}
        if self.max_replicas is not None:
            opts["autoscaling_config"] = {
                "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests}
        else:
            opts["num_replicas"] = self.num_replicas
        return opts


def _json(doc: Any, status: int = 200) -> Response:
    return JSONResponse(doc, status_code=status)


def _error(exc: InvalidInput | NotFound, status: int) -> Response:
    return _json({"error": exc.message, "hint": exc.hint}, status)


@serve.deployment(name="aios_mesh_model")
class MeshModelDeployment:
    """Serves the given model versions; one instance per replica."""

    def __init__(self, python_models: Mapping[str, str] | None,
                 registered: Sequence[ModelRef], options: dict[str, Any]) -> None:
        self.served = ServedModels.load(python_models, registered)
        self.settings = DeploymentOptions(**options)
        # the batch settings of this deployment (the decorator's are defaults)
        batched: Any = self._batched
        batched.set_max_batch_size(self.settings.max_batch_size)
        batched.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)  # type: ignore[untyped-decorator, unused-ignore]  # see __init__
    async def _batched(self, items: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
        # a model call may take long: off the replica's event loop
        return await asyncio.to_thread(self.served.answer, items)

    def _check_served(self, items: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        for name, version, _ in items:
            if not self.served.serves(name, version):
                raise self.served.not_found(name, version)

    async def predict(self, items: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
        """Handle mode: one answer per item. A version not served answers every item with
        its ``NotFound`` error entry, before batching (an exception would reach the caller
        wrapped in Ray's ``RayTaskError``)."""
        try:
            self._check_served(items)
        except NotFound as exc:
            return [answer_error(name, version, exc) for name, version, _ in items]
        return list(await asyncio.gather(*(self._batched(it) for it in items)))

    def describe(self) -> dict[str, Any]:
        """The ``/models`` document."""
        return {"models": self.served.describe(), "options": asdict(self.settings),
                "pid": os.getpid()}

    async def __call__(self, request: Request) -> Response:
        """The HTTP face (see the module docstring)."""
        prefix = request.scope.get("root_path", "")
        path = request.url.path[len(prefix):] if prefix else request.url.path
        tail = path.rstrip("/").rsplit("/", 1)[-1] if path.strip("/") else ""
        if tail == "readyz" and request.method == "GET":
            return _json({"ready": True})
        if tail == "models":
            return _json(self.describe())
        if request.method != "POST" or tail not in ("", "predict"):
            return _json({"error": f"no API {request.method} {path}"}, 405)
        try:
            items = parse_items(json.loads(await request.body()))
            self._check_served(items)
        except ValueError:
            return _json({"error": "the body is not JSON", "hint": "send JSON"}, 400)
        except InvalidInput as exc:
            return _error(exc, 400)
        except NotFound as exc:
            return _error(exc, 404)
        answers = await asyncio.gather(*(self._batched(it) for it in items))
        return _json(answers)


def build_app(*, python_models: Mapping[str, str] | None = None,
              registered: Sequence[ModelRef] = (),
              options: DeploymentOptions | None = None) -> serve.Application:
    """The Ray Serve application serving ``registered`` versions and ``python_models``
    (``name/version`` → ``module:callable``)."""
    opts = options or DeploymentOptions()
    # @serve.deployment made the class a ray.serve.Deployment; mypy still sees the class
    deployment: Any = MeshModelDeployment
    deployment = deployment.options(**opts.deployment_options())
    app: serve.Application = deployment.bind(dict(python_models or {}), list(registered),
                                                  asdict(opts))
    return app
