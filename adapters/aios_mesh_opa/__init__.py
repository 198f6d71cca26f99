"""Policy adapter for an OPA server, speaking OPA's REST API with ``httpx.AsyncClient``.

URL: ``opa+http://HOST:8181`` with options

* ``bundle=<folder>`` — on start, upload every ``*.rego`` of the folder with
  ``PUT /v1/policies/<prefix>/<relative path>`` and every ``data.json`` with
  ``PUT /v1/data/<folder path>``, and delete modules under ``<prefix>/`` that the folder no
  longer has; the same policy files then run on the embedded ``rego://`` adapter and here,
  with the same ``bundle_hash``. Relative to ``base_dir`` like other paths; ``//abs`` for
  absolute. Leave it out when OPA loads its own bundle (compose/ does).
* ``prefix=aios-mesh`` — the policy-id namespace the adapter owns on the server;
* ``token=...`` — bearer token (``opa run --authentication=token``);
* ``tls=true`` — use https; ``timeout=5`` — seconds per request;
* ``strict_builtin_errors=true`` — a failing built-in (``to_number("x")``) is an error, not
  *undefined* (the embedded adapter's default); sent as ``?strict-builtin-errors=true``;
* ``refresh=30`` — seconds between re-reads of the server's policy list (``bundle_hash`` and
  the known packages) when no ``bundle`` is given.

The contract of ``await decide(path, input)`` is RegoPolicy's, over HTTP:
``POST /v1/data/<package path>`` with ``{"input": input.to_document()}``; from the package
document the adapter reads ``allow`` (boolean), ``reason`` (string), ``reason_code``
(string), ``obligations``
(``redact``, ``require_human``, ``max_cost``, ``output``: the output guardrails), parsed by
:func:`~aios_mesh.ports.policy.decision_from_result` exactly as the embedded adapter does.

* ``allow`` true/false → a :class:`Decision` (a deny without reason gets
  ``"<pkg>.allow is false"``); ``allow`` absent → deny, ``"default deny: <pkg>.allow is
  undefined"``;
* a non-boolean ``allow``, a malformed ``reason``/``obligations``, and an evaluation error
  (HTTP 500 carrying ``eval_*`` errors: conflicting complete rule, strict built-in error)
  → :class:`InvalidOutput`;
* a package the server does not have (checked against ``GET /v1/policies``; HTTP 404)
  → :class:`NotFound` listing the known packages;
* connection errors, timeouts and other 5xx → :class:`BackendUnavailable` /
  :class:`BackendTimeout` (retryable); 401/403 → :class:`ConfigError` (token);
* an upload rejected by OPA (HTTP 400 with ``rego_parse_error`` …) → :class:`ConfigError`
  naming ``file:row:col``.

``bundle_hash``: with ``bundle=`` the folder's hash (identical to RegoPolicy's); otherwise
sha256 over the server's modules (``GET /v1/policies``: id and source) and the bundle
revisions OPA reports in ``data.system.bundles``.

One ``httpx.AsyncClient`` per event loop. :meth:`start` (idempotent) uploads the bundle and
reads the policy list; ``decide`` calls it on first use, so the mesh can load the adapter
synchronously. ``health()`` is ``GET /health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import re
import ssl
import threading
import time
import weakref
from pathlib import Path
from typing import Any, ClassVar, Final, Self
from urllib.parse import quote

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
from aios_mesh.policy_bundle import InputSchemas, parse_policy_path
from aios_mesh.ports.base import Feature
from aios_mesh.ports.policy import Decision, PolicyInput, decision_from_result

from ._bundle import BundleFolder, read_bundle

__all__ = ["OpaPolicy"]

_OPTIONS: Final = ("bundle", "prefix", "token", "tls", "timeout", "strict_builtin_errors",
                   "refresh")
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


_parse_path = parse_policy_path

def _package_key(package: tuple[str, ...]) -> str:
    return ".".join(package)


def _ast_package(module: Any) -> tuple[str, ...] | None:
    """The package of a module in ``GET /v1/policies`` (``ast.package.path`` minus ``data``)."""
    try:
        terms = module["ast"]["package"]["path"]
        values = [str(t["value"]) for t in terms]
    except (KeyError, TypeError):
        return None
    if values and values[0] == "data":
        values = values[1:]
    return tuple(values) or None


def _errors_of(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [e for e in body["errors"] if isinstance(e, dict)]
    return []


def _describe(error: dict[str, Any], strip: str = "") -> str:
    loc = error.get("location") if isinstance(error.get("location"), dict) else None
    where = ""
    if loc:
        file = str(loc.get("file") or "")
        if strip and file.startswith(strip):
            file = file[len(strip):]
        where = f"{file}:{loc.get('row')}:{loc.get('col')}: " if file else \
            f"{loc.get('row')}:{loc.get('col')}: "
    code = error.get("code")
    return f"{where}{error.get('message', 'error')}" + (f" [{code}]" if code else "")


class OpaPolicy:
    """The Policy port on an OPA server; see the module docstring for the contract."""

    features: ClassVar[frozenset[Feature]] = frozenset({Feature.OBLIGATIONS})

    def __init__(self, base_url: str, *, bundle: Path | str | None = None,
                 prefix: str = "aios-mesh", token: str | None = None, timeout: float = 5.0,
                 strict_builtin_errors: bool = True, refresh: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if _PREFIX_RE.fullmatch(prefix) is None:
            raise ConfigError(f"prefix={prefix!r} is not a plain name",
                              hint="use letters, digits, '_', '-' or '.', e.g. prefix=aios-mesh")
        if timeout <= 0 or refresh < 0:
            raise ConfigError("timeout must be > 0 and refresh >= 0 seconds",
                              hint="write ?timeout=5&refresh=30")
        self.base_url = base_url.rstrip("/")
        self.prefix = prefix
        self._token = token
        self._timeout = timeout
        self._strict = strict_builtin_errors
        self._refresh_s = refresh
        self._transport = transport
        self._bundle: BundleFolder | None = read_bundle(Path(bundle)) if bundle else None
        self._bundle_hash = self._bundle.bundle_hash if self._bundle else ""
        self._packages: frozenset[tuple[str, ...]] = frozenset()
        self._refreshed_at = 0.0
        self._started = False
        self._closed = False
        self._state_lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                 httpx.AsyncClient] = weakref.WeakKeyDictionary()
        self._start_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                     asyncio.Lock] = weakref.WeakKeyDictionary()

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """``opa+http://host:8181?bundle=policies`` (``bundle`` relative to ``base_dir``)."""
        url = url.with_options(options)
        url.check_options(_OPTIONS, what="opa")
        if not url.host:
            raise ConfigError(f"{url.redacted()} names no host",
                              hint="write opa+http://HOST:8181, e.g. opa+http://127.0.0.1:8181")
        tls = url.flag("tls", False)
        base = f"{'https' if tls else 'http'}://{url.host}:{url.port or 8181}"
        if url.path.strip("/"):
            base += "/" + url.path.strip("/")
        token = url.option("token") or url.password
        return cls(base, bundle=url.path_option("bundle", base_dir),
                   prefix=url.option("prefix") or "aios-mesh", token=token or None,
                   timeout=url.seconds_option("timeout", 5.0),
                   strict_builtin_errors=url.flag("strict_builtin_errors", True),
                   refresh=url.seconds_option("refresh", 30.0))

    # -- the port -------------------------------------------------------------------------

    @property
    def bundle_hash(self) -> str:
        """The folder's hash with ``bundle=``; else a hash of the server's modules.

        Empty until :meth:`start` ran when the adapter has no ``bundle``.
        """
        return self._bundle_hash

    @property
    def input_schemas(self) -> InputSchemas | None:
        """The input schemas of the ``bundle`` folder; None without one (the mesh cannot see
        the files of a bundle the server loads itself)."""
        return self._bundle.schemas if self._bundle is not None else None

    @property
    def packages(self) -> list[str]:
        """The dotted names of the packages the server had at the last refresh."""
        return sorted(_package_key(p) for p in self._packages)

    async def start(self) -> Self:
        """Upload the bundle (if any) and read the server's policy list. Idempotent."""
        self._check_open()
        if self._started:
            return self
        loop = asyncio.get_running_loop()
        lock = self._start_locks.get(loop)
        if lock is None:
            lock = self._start_locks[loop] = asyncio.Lock()
        async with lock:
            if not self._started:
                if self._bundle is not None:
                    await self._upload(self._bundle)
                await self.refresh()
                self._started = True
        return self

    async def refresh(self) -> None:
        """Re-read ``GET /v1/policies``: the known packages and (without bundle) the hash."""
        body = await self._json("GET", "/v1/policies", doing="list policies")
        modules = body.get("result") if isinstance(body, dict) else None
        if not isinstance(modules, list):
            raise BackendUnavailable(f"OPA at {self.base_url} answered GET /v1/policies "
                                     "without a result list",
                                     hint="check that the URL points at an OPA server")
        packages = {p for p in (_ast_package(m) for m in modules) if p is not None}
        if self._bundle is None:
            digest = hashlib.sha256(b"aios-mesh/opa/v1")
            for module in sorted(modules, key=lambda m: str(m.get("id", ""))):
                for part in (str(module.get("id", "")), str(module.get("raw", ""))):
                    encoded = part.encode("utf-8")
                    digest.update(len(encoded).to_bytes(8, "big") + encoded)
            revisions = await self._bundle_revisions()
            digest.update(json.dumps(revisions, sort_keys=True).encode("utf-8"))
            hashed = digest.hexdigest()
        else:
            hashed = self._bundle.bundle_hash
        with self._state_lock:
            self._packages = frozenset(packages)
            self._bundle_hash = hashed
            self._refreshed_at = time.monotonic()

    async def decide(self, path: str, input: PolicyInput) -> Decision:
        """Evaluate package ``path`` against ``input`` on the OPA server."""
        await self.start()
        package = _parse_path(path)
        stale = (self._bundle is None and self._refresh_s > 0
                 and time.monotonic() - self._refreshed_at > self._refresh_s)
        if stale or package not in self._packages:
            await self.refresh()  # a new package may have arrived since the last read
        if package not in self._packages:
            known = ", ".join(self.packages[:20]) or "none"
            raise NotFound(f"OPA at {self.base_url} has no package {_package_key(package)!r}",
                           hint=f"known packages: {known}", policy=path)
        try:
            body = json.dumps({"input": input.to_document()}, ensure_ascii=False,
                              allow_nan=False, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"the policy input for {_package_key(package)} is not a JSON "
                               f"document: {exc}",
                               hint="keep PolicyInput.attributes to JSON values (str, number, "
                                    "bool, null, list, dict with str keys)",
                               policy=path) from exc
        url = "/v1/data/" + "/".join(quote(seg, safe="") for seg in package)
        params = {"strict-builtin-errors": "true"} if self._strict else None
        response = await self._request("POST", url, content=body, params=params,
                                       headers={"Content-Type": "application/json"},
                                       doing=f"decide {_package_key(package)}")
        name = _package_key(package)
        parsed = self._parse_json(response)
        if response.status_code == 200:
            result = parsed.get("result", {}) if isinstance(parsed, dict) else None
            if not isinstance(result, dict):
                raise InvalidOutput(f"policy {name}: OPA returned {type(result).__name__} for "
                                    "the package document, not an object",
                                    hint="check that the path names a package", policy=path)
            return self._decision(path, name, result)
        errors = _errors_of(parsed)
        eval_errors = [e for e in errors if str(e.get("code", "")).startswith("eval_")]
        if response.status_code == 500 and eval_errors:
            first = eval_errors[0]
            raise InvalidOutput(
                f"policy {name} failed at evaluation: {_describe(first, self.prefix + '/')}",
                hint="fix the rule (conflicting values for a complete rule, a failing built-in "
                     "such as to_number on a non-number, an unknown function ...)",
                policy=path, rego_code=first.get("code"), rego_message=first.get("message"))
        if response.status_code == 404:
            raise NotFound(f"OPA at {self.base_url} has no document {name!r}",
                           hint="check the package name", policy=path)
        if response.status_code == 400:
            raise InvalidInput(f"OPA rejected the input for {name}: "
                               f"{self._message(parsed, response)}",
                               hint="keep PolicyInput.attributes to JSON values", policy=path)
        raise self._status_error(response, parsed, f"decide {name}")

    async def health(self) -> None:
        """``GET /health``; raises :class:`BackendUnavailable` unless OPA answers 200."""
        response = await self._request("GET", "/health", doing="health check")
        if response.status_code != 200:
            raise BackendUnavailable(f"OPA at {self.base_url} is not healthy "
                                     f"({response.status_code}): "
                                     f"{self._message(self._parse_json(response), response)}",
                                     hint="check the OPA server's logs and its bundles")

    async def aclose(self) -> None:
        """Close this loop's HTTP client. Idempotent; later calls raise :class:`MeshError`."""
        if self._closed:
            return
        self._closed = True
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover
            loop = None
        clients = list(self._clients.items())
        self._clients.clear()
        for owner, client in clients:
            if owner is loop:
                with contextlib.suppress(Exception):
                    await client.aclose()

    # -- decisions (the contract shared with RegoPolicy) ------------------------------------

    def _decision(self, path: str, name: str, result: dict[str, Any]) -> Decision:
        return decision_from_result(result, package=name, path=path,
                                    bundle_hash=self._bundle_hash, where=f"OPA {self.base_url}")

    # -- bundle upload ----------------------------------------------------------------------

    def _module_id(self, relpath: str) -> str:
        return f"{self.prefix}/{relpath}"

    async def _upload(self, bundle: BundleFolder) -> None:
        ours = {self._module_id(rel) for rel, _ in bundle.modules}
        # drop modules this prefix uploaded before that the folder no longer has
        listed = await self._json("GET", "/v1/policies", doing="list policies")
        for module in listed.get("result") or [] if isinstance(listed, dict) else []:
            mid = str(module.get("id", ""))
            if mid.startswith(self.prefix + "/") and mid not in ours:
                await self._request("DELETE", "/v1/policies/" + quote(mid, safe="/"),
                                    doing=f"delete stale policy {mid}")
        for doc in bundle.data:
            targets = ([((*doc.path, key), value) for key, value in doc.document.items()]
                       if not doc.path else [(doc.path, doc.document)])
            for data_path, value in targets:
                url = "/v1/data/" + "/".join(quote(s, safe="") for s in data_path)
                response = await self._request(
                    "PUT", url, content=json.dumps(value).encode("utf-8"),
                    headers={"Content-Type": "application/json"},
                    doing=f"upload {doc.relpath}")
                if response.status_code not in (200, 204):
                    raise ConfigError(
                        f"OPA refused {bundle.root / doc.relpath} at data."
                        f"{'.'.join(data_path)} ({response.status_code}): "
                        f"{self._message(self._parse_json(response), response)}",
                        hint="move that data under a path that is not a Rego package",
                        file=str(bundle.root / doc.relpath))
        # modules may depend on each other: retry the failed ones while any round succeeds
        pending = list(bundle.modules)
        while pending:
            failed: list[tuple[tuple[str, str], list[str]]] = []
            for rel, source in pending:
                response = await self._request(
                    "PUT", "/v1/policies/" + quote(self._module_id(rel), safe="/"),
                    content=source.encode("utf-8"), headers={"Content-Type": "text/plain"},
                    doing=f"upload {rel}")
                if response.status_code == 200:
                    continue
                parsed = self._parse_json(response)
                if response.status_code != 400:
                    raise self._status_error(response, parsed, f"upload {rel}")
                problems = [_describe(e, self.prefix + "/") for e in _errors_of(parsed)] \
                    or [f"{rel}: {self._message(parsed, response)}"]
                failed.append(((rel, source), problems))
            if len(failed) == len(pending):
                listed_problems = "; ".join(p for _, ps in failed for p in ps[:3])
                first = failed[0][1][0]
                where = first.split(": ", 1)[0]
                raise ConfigError(
                    f"OPA at {self.base_url} rejected the policy bundle {bundle.root}: "
                    f"{listed_problems}",
                    hint=f"fix the Rego at {bundle.root}/{where}; `opa check "
                         f"{bundle.root}` shows the same problems",
                    file=f"{bundle.root}/{where}")
            pending = [module for module, _ in failed]

    async def _bundle_revisions(self) -> Any:
        """``data.system.bundles`` (revisions, etags) when OPA serves bundles; else None."""
        try:
            body = await self._json("GET", "/v1/data/system/bundles", doing="bundle status")
        except MeshError:
            return None
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            return None
        return {name: {"manifest": (info or {}).get("manifest"),
                       "etag": (info or {}).get("etag")}
                for name, info in result.items() if isinstance(info, dict | type(None))}

    # -- HTTP -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise MeshError("this OpaPolicy is closed",
                            hint="load a new policy adapter; aclose() is final")

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
            client = httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout,
                                       headers=headers, transport=self._transport,
                                       verify=_ssl_context())
            self._clients[loop] = client
        return client

    async def _request(self, method: str, url: str, *, doing: str,
                       **kwargs: Any) -> httpx.Response:
        self._check_open()
        try:
            response = await self._client().request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise BackendTimeout(f"OPA at {self.base_url} timed out ({doing})",
                                 hint="raise ?timeout= or check the OPA server's load") from exc
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"cannot reach OPA at {self.base_url} ({doing}): {exc!r}",
                                     hint="start the OPA server (compose/docker-compose.yml) "
                                          "or fix the host and port of the policy URL") from exc
        if response.status_code in (401, 403):
            raise ConfigError(f"OPA at {self.base_url} refused {doing} "
                              f"({response.status_code})",
                              hint="set ?token= (or the URL's password) to a token OPA "
                                   "accepts")
        return response

    async def _json(self, method: str, url: str, *, doing: str) -> Any:
        response = await self._request(method, url, doing=doing)
        parsed = self._parse_json(response)
        if response.status_code != 200:
            raise self._status_error(response, parsed, doing)
        return parsed

    @staticmethod
    def _parse_json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    @staticmethod
    def _message(parsed: Any, response: httpx.Response) -> str:
        if isinstance(parsed, dict) and parsed.get("message"):
            return str(parsed["message"])
        return response.text[:300] or response.reason_phrase

    def _status_error(self, response: httpx.Response, parsed: Any, doing: str) -> MeshError:
        text = self._message(parsed, response)
        if response.status_code == 404:
            return NotFound(f"OPA at {self.base_url}: not found ({doing}): {text}",
                            hint="check the package or document path")
        if response.status_code >= 500 or response.status_code == 429:
            return BackendUnavailable(f"OPA at {self.base_url} failed ({doing}, "
                                      f"{response.status_code}): {text}",
                                      hint="check the OPA server's logs; retry")
        return InvalidOutput(f"OPA at {self.base_url} answered {response.status_code} "
                             f"({doing}): {text}",
                             hint="check that the URL points at an OPA server")

    def __repr__(self) -> str:
        bundle = f", bundle={str(self._bundle.root)!r}" if self._bundle else ""
        return f"OpaPolicy({self.base_url!r}{bundle})"


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every client (building one reads the CA bundle: slow)."""
    return httpx.create_ssl_context()
