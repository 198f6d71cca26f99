"""Serving port over an aios-mesh Ray Serve application.

URLs::

    rayserve+http://127.0.0.1:8123/invoice-clf?timeout=30&max_batch=64
    rayserve+handle://invoice-clf?timeout=30          # inside the Ray cluster

``rayserve+http`` speaks the JSON protocol of :mod:`aios_mesh_rayserve._protocol` to the
route of the application (``aios-mesh serve rayserve NAME@ALIAS`` starts one) through Ray
Serve's HTTP proxy, with httpx's connection pool straight (as the BentoML adapter does).
``rayserve+handle://APP`` calls the application's deployment handle
(``serve.get_app_handle(APP)``): for callers that run in the Ray cluster (a Ray task, actor
or a driver connected with ``ray.init(address=...)``), no HTTP hop and no JSON.

Errors at the boundary:

=========================================  ============================================
what happened                              raised
=========================================  ============================================
connection refused / reset, 5xx, 429       :class:`BackendUnavailable` (retryable)
a replica died under the request (handle)  :class:`BackendUnavailable` (retryable)
no answer within the timeout, 504          :class:`BackendTimeout` (retryable)
404 with the deployment's JSON (version)   :class:`NotFound`
404 from the proxy (no such route/app)     :class:`ConfigError` (check the route)
400 / 422, a payload that is not JSON      :class:`InvalidInput`
200 with a body off the protocol           :class:`InvalidOutput`
=========================================  ============================================
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx

from aios_mesh.backends import BackendURL
from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
)
from aios_mesh.ports.base import Feature
from aios_mesh.ports.http_pool import PerLoop, send
from aios_mesh.ports.registry import ModelRef
from aios_mesh.ports.serving import Prediction, ServingBase
from aios_mesh.ports.serving_protocol import (
    check_client_limits,
    check_serves,
    prediction_from_answer,
    request_chunks,
)
from aios_mesh_rayserve._protocol import HINTS

__all__ = ["RayServeServing"]

_OPTIONS = frozenset({"timeout", "max_batch"})
_HTTP_SCHEMES = ("rayserve+http", "rayserve+https")
_HANDLE_SCHEME = "rayserve+handle"
_START_HINT = ("start it: aios-mesh serve rayserve NAME@ALIAS --port PORT (Ray Serve's HTTP "
               "proxy), or check that the Ray cluster is up (ray status)")


class RayServeServing(ServingBase):
    """Runs models on an aios-mesh Ray Serve application, over HTTP or a handle.

    Args:
        base_url: ``http://host:port/<route>`` of the application (HTTP mode).
        app: the Serve application's name (handle mode); exactly one of the two.
        timeout: seconds per request when the call passes none.
        max_batch: items per request; larger batches go as concurrent requests.
        transport: an httpx transport (the test seam), shared by every event loop.
    """

    features: frozenset[Feature] = frozenset({Feature.BATCH, Feature.ASYNC_NATIVE})

    def __init__(self, base_url: str | None = None, *, app: str | None = None,
                 timeout: float = 30.0, max_batch: int = 64,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if (base_url is None) == (app is None):
            raise ConfigError("RayServeServing needs a base URL or an application name",
                              hint="write rayserve+http://HOST:PORT/ROUTE or "
                                   "rayserve+handle://APP")
        check_client_limits(timeout, max_batch)
        self.base_url = base_url.rstrip("/") if base_url is not None else None
        self.app = app
        self.timeout = float(timeout)
        self.max_batch = int(max_batch)
        self._transport = transport
        self._transports: PerLoop[httpx.AsyncBaseTransport] = PerLoop(
            lambda: transport or httpx.AsyncHTTPTransport())
        self._handle: Any = None

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """Build from ``rayserve+http://host:port/route?timeout=30&max_batch=64`` or
        ``rayserve+handle://APP``; keyword options override the query string."""
        if url.scheme not in (*_HTTP_SCHEMES, _HANDLE_SCHEME):
            raise ConfigError(f"RayServeServing cannot serve scheme {url.scheme!r}",
                              hint=f"use one of: {', '.join((*_HTTP_SCHEMES, _HANDLE_SCHEME))}")
        transport = options.pop("transport", None)
        url = url.with_options(options)
        url.check_options(_OPTIONS, what="Ray Serve")
        if url.username or url.password:
            raise ConfigError(f"{url.redacted()} carries credentials",
                              hint="Ray Serve's proxy takes no credentials in the URL; put "
                                   "the mesh gateway in front of it")
        timeout = url.seconds_option("timeout", 30.0)
        max_batch = url.int_option("max_batch", 64, min=1)
        if url.scheme == _HANDLE_SCHEME:
            if not url.host:
                raise ConfigError(f"{url.redacted()} names no application",
                                  hint="write rayserve+handle://APP (the name given to "
                                       "aios-mesh serve rayserve --app)")
            return cls(app=url.host, timeout=timeout, max_batch=max_batch)
        route = url.path.rstrip("/")
        return cls(f"{url.driver}://{url.address}{route}", timeout=timeout,
                   max_batch=max_batch, transport=transport)

    def __repr__(self) -> str:
        where = self.base_url if self.base_url is not None else f"handle:{self.app}"
        return f"RayServeServing({where!r})"

    @property
    def _where(self) -> str:
        return self.base_url or f"Ray Serve application {self.app!r}"

    # -- the port ----------------------------------------------------------------------------

    async def infer_batch(self, model: ModelRef, payloads: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Prediction]:
        """One prediction per payload, in order; every item names ``model.version``."""
        if not payloads:
            return []
        chunks = request_chunks(model, payloads, self.max_batch)
        label = f"{model.name}/{model.version} on {self._where}"
        wait = timeout or self.timeout
        parts = await asyncio.gather(*(self._predict(c, label, wait) for c in chunks))
        answers = [a for part in parts for a in part]
        if len(answers) != len(payloads):
            raise InvalidOutput(f"{label}: expected {len(payloads)} answers, got {len(answers)}",
                                hint="point the URL at an aios-mesh Ray Serve application")
        return [prediction_from_answer(a, model.name, model.version, label, HINTS)
                for a in answers]

    async def _predict(self, items: list[dict[str, Any]], label: str,
                       wait: float) -> list[Any]:
        if self.base_url is None:
            return await self._predict_handle(items, label, wait)
        try:
            body = json.dumps({"inputs": items}, ensure_ascii=False,
                              allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{label}: the payload is not JSON: {exc}",
                               hint="send JSON values only (no NaN, no objects)") from exc
        resp = await self._send("POST", "/predict", body, wait)
        if resp.status_code != 200:
            raise self._status_error(resp, label)
        try:
            answers = json.loads(resp.content)
        except ValueError as exc:
            raise InvalidOutput(f"{label}: the application answered {len(resp.content)} bytes "
                                "that are not JSON",
                                hint="point the URL's route at an aios-mesh Ray Serve "
                                     "application") from exc
        if not isinstance(answers, list):
            raise InvalidOutput(f"{label}: expected a list of answers, got "
                                f"{type(answers).__name__}",
                                hint="point the URL's route at an aios-mesh Ray Serve "
                                     "application")
        return answers

    # -- handle mode ---------------------------------------------------------------------------

    def _get_handle(self) -> Any:
        if self._handle is None:
            try:
                import ray
                from ray import serve
            except ImportError as exc:
                raise ConfigError("rayserve+handle needs Ray in this process",
                                  hint='pip install "aios-mesh[ray]"') from exc
            if not ray.is_initialized():
                raise BackendUnavailable(
                    f"rayserve+handle://{self.app}: this process is not connected to a Ray "
                    "cluster", hint="run inside the cluster (a Ray task or actor) or call "
                                    "ray.init(address=...) first; or use rayserve+http://")
            try:
                self._handle = serve.get_app_handle(str(self.app))
            except Exception as exc:  # Serve raises RayServeException / ValueError
                raise NotFound(f"Ray Serve has no application {self.app!r}: {exc}",
                               hint=_START_HINT) from exc
        return self._handle

    async def _predict_handle(self, items: list[dict[str, Any]], label: str,
                              wait: float) -> list[Any]:
        from ray import exceptions as rex

        handle = self._get_handle()
        triples = [(it["model"]["name"], it["model"]["version"], it["input"]) for it in items]
        try:
            answers = await asyncio.wait_for(handle.predict.remote(triples), wait)
        except TimeoutError as exc:
            raise BackendTimeout(f"{label} did not answer within {wait}s",
                                 hint="raise the capability's slo.timeout_s or ?timeout=, "
                                      "or add replicas") from exc
        except rex.RayTaskError as exc:  # raised in the replica (Ray wraps it)
            cause = exc.cause
            if isinstance(cause, MeshError):
                raise type(cause)(cause.message, hint=cause.hint) from None
            raise BackendUnavailable(f"{label}: the replica failed: {exc}",
                                     hint="see the Ray Serve replica's log") from exc
        except (rex.RayActorError, rex.RaySystemError, rex.ObjectLostError) as exc:
            raise BackendUnavailable(f"{label}: the replica died: {type(exc).__name__}",
                                     hint="Ray Serve restarts it; the mesh retries") from exc
        except Exception as exc:  # Serve's own (backpressure, no replicas, shut down)
            raise BackendUnavailable(f"{label}: {type(exc).__name__}: {exc}",
                                     hint=_START_HINT) from exc
        if not isinstance(answers, list):
            raise InvalidOutput(f"{label}: the handle answered {type(answers).__name__}",
                                hint="call an aios-mesh Ray Serve application")
        return answers

    # -- HTTP plumbing ------------------------------------------------------------------------

    async def _send(self, method: str, path: str, content: bytes | None,
                    wait: float) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else {}
        return await send(self._transports.get(), method, f"{self.base_url}{path}",
                          content=content, headers=headers, wait=wait, what="Ray Serve",
                          timeout_hint="raise the capability's slo.timeout_s or ?timeout=, or "
                                       "add replicas (--max-replicas)", start_hint=_START_HINT)

    def _status_error(self, resp: httpx.Response, label: str) -> MeshError:
        status = resp.status_code
        try:
            doc = json.loads(resp.content)
        except ValueError:
            doc = None
        message = (str(doc.get("error", "")) if isinstance(doc, Mapping)
                   else resp.text.strip()[:300])
        said = f"{label}: HTTP {status}" + (f": {message}" if message else "")
        if status == 404:
            if isinstance(doc, Mapping):
                return NotFound(said, hint=str(doc.get("hint") or "serve that version"))
            return ConfigError(f"{label}: no Ray Serve application at {self.base_url}",
                               hint="check the URL's route (the --route given to "
                                    "aios-mesh serve rayserve)")
        if status in (400, 413, 422):
            return InvalidInput(said, hint="send the fields the model expects")
        if status in (401, 403, 405):
            return ConfigError(said, hint="check the URL and its route")
        if status == 504:
            return BackendTimeout(said, hint="Ray Serve timed out; raise its "
                                             "request_timeout_s or add replicas")
        if status in (408, 429) or status >= 500:
            return BackendUnavailable(said, hint="see the Ray Serve logs (a replica may have "
                                                 "died); the mesh retries and its breaker "
                                                 "opens on repeats")
        return InvalidInput(said, hint="the application refused the request")

    async def health(self) -> None:
        """Raise :class:`BackendUnavailable` unless the application answers its readiness
        check (HTTP ``GET /readyz``; handle mode: ``models``)."""
        if self.base_url is None:
            await self.models()
            return
        resp = await self._send("GET", "/readyz", None, min(self.timeout, 5.0))
        if resp.status_code != 200:
            raise BackendUnavailable(f"Ray Serve application {self.base_url} is not ready "
                                     f"(HTTP {resp.status_code})",
                                     hint="it may still be deploying; see serve status")

    async def models(self) -> list[dict[str, Any]]:
        """The model versions the application serves."""
        if self.base_url is None:
            try:
                doc = await asyncio.wait_for(self._get_handle().describe.remote(),
                                             self.timeout)
            except MeshError:
                raise
            except Exception as exc:
                raise BackendUnavailable(f"{self._where}: {type(exc).__name__}: {exc}",
                                         hint=_START_HINT) from exc
        else:
            resp = await self._send("GET", "/models", None, self.timeout)
            if resp.status_code != 200:
                raise self._status_error(resp, f"models of {self.base_url}")
            try:
                doc = json.loads(resp.content)
            except ValueError:
                doc = None
        found = doc.get("models") if isinstance(doc, Mapping) else None
        if not isinstance(found, list):
            raise InvalidOutput(f"{self._where}/models answered off-protocol",
                                hint="is this an aios-mesh Ray Serve application?")
        return [dict(m) for m in found]

    async def preload(self, model: ModelRef) -> None:
        """Check that the application serves ``model``'s version (``Mesh.prepare``)."""
        check_serves(await self.models(), model, self._where,
                     "redeploy: aios-mesh serve rayserve {name}@ALIAS")

    async def aclose(self) -> None:
        """Close this loop's connections; idempotent; the adapter stays usable."""
        await self._transports.aclose()
