"""Serving port over a BentoML service, spoken over HTTP with httpx (no ``bentoml`` import).

URL::

    bentoml+http://127.0.0.1:3000?endpoint=/predict&timeout=30&max_batch=64

The service is :mod:`aios_mesh_bentoml.service` (start it with
``aios-mesh serve bentoml NAME@ALIAS``); the wire protocol is in
:mod:`aios_mesh_bentoml._protocol`. Every request names the model version the registry
resolved, and the service refuses (404) a version it does not serve, so the version in the
decision record is the version that answered.

Errors at the boundary:

=====================================  ================================================
what happened                          raised
=====================================  ================================================
connection refused / reset, 5xx, 429   :class:`BackendUnavailable` (retryable)
no answer within the timeout, 504      :class:`BackendTimeout` (retryable)
404 from the service (version)         :class:`NotFound`
400 / 422, a payload that is not JSON  :class:`InvalidInput` (413: ``PayloadTooLarge``)
200 with a body off the protocol       :class:`InvalidOutput`
no such API (404 without a JSON body)  :class:`ConfigError` (check ``?endpoint=``)
401 / 403 / 405                        :class:`ConfigError`
=====================================  ================================================
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx
import orjson

from aios_mesh.backends import BackendURL
from aios_mesh.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InvalidInput,
    InvalidOutput,
    MeshError,
    NotFound,
    PayloadTooLarge,
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
from aios_mesh_bentoml._protocol import DEFAULT_ENDPOINT, HINTS, MODELS_ENDPOINT

__all__ = ["BentoMLServing"]

_OPTIONS = frozenset({"endpoint", "timeout", "max_batch"})
_SCHEMES = ("bentoml+http", "bentoml+https")
_START_HINT = ("start it: aios-mesh serve bentoml NAME@ALIAS --port PORT (or bentoml serve "
               "aios_mesh_bentoml.service:MeshModelService)")
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _encode(doc: Any) -> bytes:
    """JSON bytes of a request, as strict as ``json.dumps(allow_nan=False)``.

    orjson does it in one C call (this runs on every call's path); where it writes ``null``
    the value may have been NaN or infinite, which it writes as null silently, and where it
    refuses (integers over 64 bits) the standard library decides.
    """
    try:
        body: bytes | None = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        body = None
    if body is None or b"null" in body:
        return json.dumps(doc, ensure_ascii=False, allow_nan=False).encode()
    return body


def _decode(content: bytes) -> Any:
    """Parse an answer; orjson first, the standard library for what only it reads exactly:
    NaN and Infinity (orjson refuses them) and integers beyond 64 bits (orjson makes them
    floats, so any run of 19 digits goes to the standard library)."""
    if _LONG_DIGITS.search(content) is None:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    return json.loads(content)


class BentoMLServing(ServingBase):
    """Runs models on the aios-mesh BentoML service.

    ``infer_batch`` POSTs the batch to the service's batched API (adaptive batching on the
    server merges concurrent requests); batches larger than ``max_batch`` go as several
    concurrent requests. One httpx connection pool (:class:`httpx.AsyncHTTPTransport`) per
    running event loop (the mesh's sync facade and ``asyncio.run`` callers each get their
    own).

    Args:
        base_url: ``http://host:port`` of the service.
        endpoint: path of the batched predict API.
        timeout: seconds per request when the call passes none.
        max_batch: items per request.
        transport: an httpx transport (the test seam, as in ``httpx.AsyncClient``); shared
            by every event loop and closed by :meth:`aclose`.
        headers: sent with every request (e.g. a gateway's token).
    """

    features: frozenset[Feature] = frozenset({Feature.BATCH, Feature.ASYNC_NATIVE})

    def __init__(self, base_url: str, *, endpoint: str = DEFAULT_ENDPOINT,
                 timeout: float = 30.0, max_batch: int = 64,
                 transport: httpx.AsyncBaseTransport | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        if not endpoint.startswith("/"):
            raise ConfigError(f"endpoint {endpoint!r} must start with '/'",
                              hint="write ?endpoint=/predict")
        check_client_limits(timeout, max_batch)
        self.base_url = base_url.rstrip("/")
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.max_batch = int(max_batch)
        self._transport = transport
        self._plain_headers = dict(headers or {})
        self._json_headers = {**self._plain_headers, "Content-Type": "application/json"}
        self._urls: dict[str, httpx.URL] = {}
        self._transports: PerLoop[httpx.AsyncBaseTransport] = PerLoop(
            lambda: transport or httpx.AsyncHTTPTransport())

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """Build from ``bentoml+http://host:port?endpoint=/predict&timeout=30&max_batch=64``;
        keyword options override the query string (``transport=`` too)."""
        if url.scheme not in _SCHEMES:
            raise ConfigError(f"BentoMLServing cannot serve scheme {url.scheme!r}",
                              hint=f"use one of: {', '.join(_SCHEMES)}")
        transport = options.pop("transport", None)
        url = url.with_options(options)
        url.check_options(_OPTIONS, what="BentoML")
        if url.username or url.password:
            raise ConfigError(f"{url.redacted()} carries credentials",
                              hint="BentoML services take no credentials in the URL; put a "
                                   "gateway with authentication in front of the service")
        host = url.address  # ConfigError when missing
        prefix = url.path.rstrip("/")
        return cls(f"{url.driver or 'http'}://{host}{prefix}",
                   endpoint=url.option("endpoint", DEFAULT_ENDPOINT) or DEFAULT_ENDPOINT,
                   timeout=url.seconds_option("timeout", 30.0),
                   max_batch=url.int_option("max_batch", 64, min=1), transport=transport)

    def __repr__(self) -> str:
        return f"BentoMLServing({self.base_url!r}, endpoint={self.endpoint!r})"

    # -- plumbing ----------------------------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(f"{self.base_url}{path}")
        return url

    async def _send(self, method: str, path: str, *, content: bytes | None = None,
                    timeout: float | None = None) -> httpx.Response:
        """One request, its body read; transport failures become BackendUnavailable /
        BackendTimeout.

        Straight to the transport (httpx's connection pool), not through
        ``httpx.AsyncClient``: the client's per-request work (URL merging, cookies, auth
        and redirect flows, event hooks) is nothing this protocol uses, and it was the
        largest cost on the mesh's path: measured against a real ``bentoml serve``, the
        transport alone answered in 0.88x the p50 of ``AsyncClient.post``.
        """
        wait = timeout or self.timeout
        headers = self._json_headers if content is not None else self._plain_headers
        return await send(self._transports.get(), method, self._url(path), content=content,
                          headers=headers, wait=wait, what="BentoML service",
                          timeout_hint="raise the capability's slo.timeout_s or ?timeout=, or "
                                       "check the service's load", start_hint=_START_HINT)

    # -- the port ----------------------------------------------------------------------------

    async def infer_batch(self, model: ModelRef, payloads: Sequence[Mapping[str, Any]], *,
                          timeout: float | None = None) -> list[Prediction]:
        """One prediction per payload, in order; the request names ``model.version``."""
        if not payloads:
            return []
        chunks = request_chunks(model, payloads, self.max_batch)
        label = f"{model.name}/{model.version} on {self.base_url}"
        if len(chunks) == 1:
            return await self._predict(chunks[0], model, label, timeout)
        parts = await asyncio.gather(*(self._predict(c, model, label, timeout)
                                       for c in chunks))
        return [p for part in parts for p in part]

    async def _predict(self, items: list[dict[str, Any]], model: ModelRef, label: str,
                       timeout: float | None) -> list[Prediction]:
        try:
            body = _encode({"inputs": items})
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"payload for {model.name}/{model.version} is not JSON: {exc}",
                               hint="send JSON values only (str, numbers, bool, null, lists, "
                                    "objects; no NaN)") from exc
        resp = await self._send("POST", self.endpoint, content=body, timeout=timeout)
        if resp.status_code != 200:
            raise self._status_error(resp, label)
        try:
            answers = _decode(resp.content)
        except ValueError as exc:
            raise InvalidOutput(f"{label}: the service answered {len(resp.content)} bytes "
                                "that are not JSON",
                                hint="point ?endpoint= at the aios-mesh BentoML service's "
                                     "predict API") from exc
        if not isinstance(answers, list) or len(answers) != len(items):
            got = (f"{len(answers)} answers" if isinstance(answers, list)
                   else type(answers).__name__)
            raise InvalidOutput(f"{label}: expected {len(items)} answers, got {got}",
                                hint="point ?endpoint= at the aios-mesh BentoML service's "
                                     "predict API")
        return [prediction_from_answer(a, model.name, model.version, label, HINTS)
                for a in answers]

    def _status_error(self, resp: httpx.Response, label: str) -> MeshError:
        status = resp.status_code
        message, is_json = _server_message(resp)
        said = f"{label}: HTTP {status}" + (f": {message}" if message else "")
        if status == 404:
            if is_json:
                return NotFound(said, hint="serve that version (aios-mesh serve bentoml "
                                           "NAME/VERSION) or point the alias at a served one")
            return ConfigError(f"{label}: no API at {self.base_url}{self.endpoint}",
                               hint="check ?endpoint= (the aios-mesh service's API is "
                                    "/predict)")
        if status == 413:
            return PayloadTooLarge(said, hint=f"send smaller batches (?max_batch=, now "
                                              f"{self.max_batch})")
        if status in (400, 422):
            return InvalidInput(said, hint="send the fields the model expects")
        if status in (401, 403, 405):
            return ConfigError(said, hint="check the service URL, ?endpoint= and any gateway "
                                          "in front of the service")
        if status == 504:
            return BackendTimeout(said, hint="the service or its gateway timed out; raise its "
                                             "traffic timeout or lower the load")
        if status in (408, 429) or status >= 500:
            return BackendUnavailable(said, hint="see the BentoML service's log; the mesh "
                                                 "retries and its breaker opens on repeats")
        return InvalidInput(said, hint="the service refused the request")

    async def health(self) -> None:
        """Raise :class:`BackendUnavailable` unless ``GET /readyz`` answers 200."""
        resp = await self._send("GET", "/readyz", timeout=min(self.timeout, 5.0))
        if resp.status_code != 200:
            message, _ = _server_message(resp)
            said = f"HTTP {resp.status_code}" + (f": {message}" if message else "")
            raise BackendUnavailable(f"BentoML service {self.base_url} is not ready ({said})",
                                     hint="it may still be loading its model; see its log")

    async def models(self) -> list[dict[str, Any]]:
        """The model versions the service serves (``POST /models``)."""
        resp = await self._send("POST", MODELS_ENDPOINT, content=b"{}")
        if resp.status_code != 200:
            raise self._status_error(resp, f"models of {self.base_url}")
        try:
            doc = json.loads(resp.content)
            found = doc["models"]
            assert isinstance(found, list)
            return [dict(m) for m in found]
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise InvalidOutput(f"{self.base_url}{MODELS_ENDPOINT} answered off-protocol",
                                hint="is this the aios-mesh BentoML service?") from exc

    async def preload(self, model: ModelRef) -> None:
        """Check now that the service serves ``model``'s version (``Mesh.prepare`` calls it),
        so a stale server fails at start-up instead of on the first call."""
        check_serves(await self.models(), model, self.base_url,
                     "restart it: aios-mesh serve bentoml {name}@ALIAS")

    async def aclose(self) -> None:
        """Close this loop's connections (others are closed on their own loops);
        idempotent. The adapter stays usable: a later call opens new connections."""
        await self._transports.aclose()


def _server_message(resp: httpx.Response) -> tuple[str, bool]:
    """The service's error text and whether the body was JSON. BentoML answers
    ``{"error": ...}``, and for its own 4xx exceptions ``[{"error": ...}]``."""
    try:
        doc = json.loads(resp.content)
    except ValueError:
        return resp.text.strip()[:300], False
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if isinstance(doc, Mapping):
        text = str(doc.get("error", ""))
        detail = doc.get("detail")
        if isinstance(detail, list) and detail:
            msgs = [f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                    for d in detail[:3] if isinstance(d, Mapping)]
            text = f"{text} ({'; '.join(msgs)})" if msgs else text
        return text[:500], True
    return str(doc)[:300], True
