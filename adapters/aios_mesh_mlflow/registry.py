"""ModelRegistry over MLflow's model registry: a local sqlite file or a tracking server.

URLs::

    mlflow+sqlite:///registry/mlflow.db        relative to the mesh's state folder
    mlflow+sqlite:////var/lib/mesh/mlflow.db   absolute
    mlflow+http://127.0.0.1:5000               a tracking server (``mlflow server``)
    mlflow+https://mlflow.example.com/prefix   behind TLS / a path prefix

Options (query string or keyword): ``artifacts=PATH`` (sqlite only: the artifact root of
experiments made by :meth:`MlflowRegistry.ensure_experiment`, relative to the database's
folder; default ``artifacts`` beside the database).

Every MLflow call runs in :func:`asyncio.to_thread` on one :class:`mlflow.MlflowClient` bound
to this registry's URI; the process-global ``mlflow.set_tracking_uri`` is never touched.

Documents kept with a model version (:class:`~aios_mesh.ports.registry.ModelDocuments`: drift
references, gate reports) are JSON artifacts of a run: the version's own run when it has one,
else a run made for it in the ``aios-mesh`` experiment (its id in the version's tag
``aios.doc.run``). The version's tag ``aios.doc.<key>`` names the artifact
(``runs:/<run>/aios-mesh/<name>/<version>/<key>.json``), so MLflow's UI shows where it is.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

from aios_mesh.backends import BackendURL
from aios_mesh.errors import ConfigError, InvalidInput, MeshError, NotFound
from aios_mesh.ports.base import Feature
from aios_mesh.ports.health import http_probe
from aios_mesh.ports.registry import (
    ModelRef,
    check_document,
    check_document_key,
    parse_model_spec,
)
from aios_mesh_mlflow._common import (
    TRACKING_URI_TAG,
    read_signature,
    run_artifact_location,
    storage_location,
    translate,
)
from aios_mesh_mlflow._env import apply_env_defaults
from aios_mesh_mlflow.prompts import MlflowPrompts

__all__ = ["MlflowRegistry"]

T = TypeVar("T")

_SCHEMES = ("mlflow+sqlite", "mlflow+http", "mlflow+https")
_OPTIONS = frozenset({"artifacts"})
_HINT = "register it (registry.register(...) or `mlflow models` tooling) or run `aios-mesh lock`"
#: Model-version tag naming the run made to hold a version's documents (when it has no run).
DOC_RUN_TAG = "aios.doc.run"
#: Prefix of the model-version tags naming each document's artifact.
DOC_TAG_PREFIX = "aios.doc."


class MlflowRegistry(MlflowPrompts):
    """MLflow model registry behind the ModelRegistry port (and its prompt registry behind
    the PromptRegistry port: :class:`~aios_mesh_mlflow.prompts.MlflowPrompts`).

    * ``resolve("name@alias")`` → the version the alias points at; ``"name/3"`` → version 3;
      ``"name"`` → the highest version number. Versions are always ``str`` (MLflow's sqlite
      store returns ``int``, its REST API ``str``).
    * ``ModelRef.source`` is the version's download location (``file://...`` for a sqlite
      registry, ``mlflow-artifacts:/...`` or an object-store URI for a server), never a
      ``models:/`` indirection; ``ModelRef.tags`` holds the version's tags plus
      ``"aios_mesh.tracking_uri"`` (:data:`TRACKING_URI_TAG`) so the loader needs no global
      state; ``signature`` is read from ``MLmodel`` when the source is a local folder.
    * ``register`` creates the registered model if needed and a new version. Sources
      ``runs:/<run>/<name>`` and ``models:/m-<id>`` (MLflow 3 logged models) are recorded with
      their ``model_id`` and, on sqlite, as the logged model's artifact folder.

    Errors: unknown model, version or alias → :class:`NotFound`; a name or alias MLflow
    rejects (``latest`` and ``v<digits>`` are reserved aliases) → :class:`InvalidInput`;
    server down, 5xx, unreadable database → :class:`BackendUnavailable` (retryable); a bad URL
    → :class:`ConfigError`.
    """

    features: frozenset[Feature] = frozenset({Feature.ALIASES, Feature.PROMPTS,
                                              Feature.DOCUMENTS})

    def __init__(self, tracking_uri: str, *, artifact_root: Path | None = None,
                 display: str | None = None) -> None:
        apply_env_defaults()
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._display = display or tracking_uri
        self._is_sqlite = tracking_uri.startswith("sqlite:")
        self._client: Any = None
        self._lock = threading.Lock()
        self._closed = False

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """Build from ``mlflow+sqlite:///path.db`` or ``mlflow+http(s)://host:port[/prefix]``."""
        url = url.with_options(options)
        url.check_options(_OPTIONS, what="MLflow registry")
        if url.scheme == "mlflow+sqlite":
            if url.host:
                raise ConfigError(f"{url.redacted()} names a host; mlflow+sqlite takes a file",
                                  hint="write mlflow+sqlite:///registry/mlflow.db (relative) "
                                       "or mlflow+sqlite:////abs/path/mlflow.db")
            db = url.resolve_path(base_dir).expanduser().absolute()
            if db.name in ("", ".", "..") or url.path.endswith("/"):
                raise ConfigError(f"{url.redacted()} names a folder, not a database file",
                                  hint="end the path with a file name, e.g. .../mlflow.db")
            root = db.parent / (url.option("artifacts") or "artifacts")
            return cls(f"sqlite:///{db}", artifact_root=root, display=url.redacted())
        if url.scheme in ("mlflow+http", "mlflow+https"):
            if url.value("artifacts") is not None:
                raise ConfigError("option artifacts= applies to mlflow+sqlite only",
                                  hint="a tracking server chooses its own artifact store "
                                       "(mlflow server --artifacts-destination ...)")
            if url.username or url.password:
                raise ConfigError(f"{url.redacted()} carries credentials",
                                  hint="put them in MLFLOW_TRACKING_USERNAME/"
                                       "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), "
                                       "not in the URL")
            host = url.address  # ConfigError when missing
            if ":" in host and url.port is None:  # pragma: no cover - IPv6 literal
                host = f"[{url.host}]"
            scheme = url.driver or "http"
            prefix = url.path.rstrip("/")
            return cls(f"{scheme}://{host}{prefix}", display=url.redacted())
        raise ConfigError(f"MlflowRegistry cannot serve scheme {url.scheme!r}",
                          hint=f"use one of: {', '.join(_SCHEMES)}")

    # -- plumbing --------------------------------------------------------------------------

    def _get_client(self) -> Any:
        with self._lock:
            if self._closed:
                raise ConfigError(f"registry {self._display} is closed",
                                  hint="create a new MlflowRegistry")
            if self._client is None:
                if self._is_sqlite:
                    db = Path(urlsplit(self.tracking_uri).path)
                    try:
                        db.parent.mkdir(parents=True, exist_ok=True)
                    except OSError as exc:
                        raise ConfigError(f"cannot create the folder of {db}: {exc}",
                                          hint="point mlflow+sqlite:// at a writable path"
                                          ) from exc
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri,
                                            registry_uri=self.tracking_uri)
            return self._client

    async def _run(self, what: str, fn: Callable[[Any], T], *,
                   not_found_hint: str = _HINT) -> T:
        def call() -> T:
            try:
                return fn(self._get_client())
            except MeshError:
                raise
            except Exception as exc:
                raise translate(exc, where=self._display, what=what,
                                not_found_hint=not_found_hint) from exc

        return await asyncio.to_thread(call)

    def _to_ref(self, client: Any, mv: Any, alias: str | None) -> ModelRef:
        version = str(mv.version)  # int from the sqlite store, str over REST
        source = str(mv.source or "")
        if urlsplit(source).scheme in ("models", "runs"):
            # the registry knows where a logged model's files are; ask it once here so the
            # ref (and the lock file) names the artifacts, not an indirection
            source = str(client.get_model_version_download_uri(mv.name, version))
            # the sqlite store hands a run's files back as the runs:/ URI itself
            source = run_artifact_location(client, source)
        tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
        tags[TRACKING_URI_TAG] = self.tracking_uri
        return ModelRef(name=str(mv.name), version=version, source=source,
                        run_id=str(mv.run_id) if mv.run_id else None, alias=alias,
                        signature=read_signature(source), tags=tags)

    # -- the port --------------------------------------------------------------------------

    async def resolve(self, spec: str) -> ModelRef:
        """``name@alias`` / ``name/version`` / ``name`` (latest) → :class:`ModelRef`."""
        name, alias, version = parse_model_spec(spec)

        def by_alias(c: Any) -> ModelRef:
            assert alias is not None
            return self._to_ref(c, c.get_model_version_by_alias(name, alias), alias)

        def by_version(c: Any) -> ModelRef:
            assert version is not None
            return self._to_ref(c, c.get_model_version(name, str(int(version))), None)

        def latest(c: Any) -> ModelRef:
            found = c.search_model_versions(f"name = '{name}'", max_results=1,
                                            order_by=["version_number DESC"])
            if not found:
                raise NotFound(f"no registered model named {name!r} in {self._display}",
                               hint=_HINT, model=name)
            return self._to_ref(c, found[0], None)

        if alias is not None:
            return await self._run(
                f"resolve {spec!r}", by_alias,
                not_found_hint=f"check that model {name!r} exists and has alias {alias!r} "
                               f"(set_alias({name!r}, {alias!r}, VERSION)); or run "
                               "`aios-mesh lock`")
        if version is not None:
            return await self._run(f"resolve {spec!r}", by_version)
        return await self._run(f"resolve {spec!r}", latest)

    async def register(self, name: str, source: str, *, run_id: str | None = None,
                       tags: dict[str, str] | None = None) -> ModelRef:
        """Create ``name`` if needed and add a version pointing at ``source``."""
        _check_name(name)
        if not source:
            raise InvalidInput("register() needs a source URI",
                               hint="pass e.g. runs:/<run_id>/model or s3://bucket/model")

        def call(c: Any) -> ModelRef:
            try:
                c.create_registered_model(name)
            except Exception as exc:
                if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                    raise
            location, found_run, model_id = storage_location(
                c, source, resolve_logged_model=self._is_sqlite)
            mv = c.create_model_version(
                name, location, run_id=run_id or found_run,
                tags={str(k): str(v) for k, v in (tags or {}).items()} or None,
                model_id=model_id)
            return self._to_ref(c, mv, None)

        return await self._run(f"register {name!r}", call)

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``name@alias`` at ``version`` (creates or moves the alias)."""
        parse_model_spec(f"{name}@{alias}")
        version = str(version)
        if not version.isdigit():
            raise InvalidInput(f"version {version!r} is not a number",
                               hint="pass the version as '3'")

        def call(c: Any) -> None:
            c.set_registered_model_alias(name, alias, str(int(version)))

        await self._run(f"set alias {name}@{alias} → {version}", call,
                        not_found_hint=f"register model {name!r} version {version} first")

    async def put_document(self, name: str, version: str, key: str,
                           document: dict[str, Any]) -> None:
        """Keep ``document`` (a JSON object) with version ``version`` of ``name`` under
        ``key``, replacing an earlier one: a JSON artifact of the version's run (or of a run
        made for it in the ``aios-mesh`` experiment), named by the version's tag
        ``aios.doc.<key>``.

        Example::

            await registry.put_document("invoice-extractor", "3", "gate.report",
                                        {"passed": True, "accuracy": 0.94})
        """
        check_document_key(key)
        data = check_document(document).decode()
        version = _check_version(version)
        folder = f"aios-mesh/{name}/{version}"

        def call(c: Any) -> None:
            mv = c.get_model_version(name, version)
            tags = {str(k): str(v) for k, v in (mv.tags or {}).items()}
            run_id = str(mv.run_id or tags.get(DOC_RUN_TAG) or "")
            if not run_id:  # a version registered from a bare URI: give it a run of its own
                run = c.create_run(self._experiment(c, "aios-mesh"),
                                   run_name=f"{name}-v{version}-documents",
                                   tags={"aios.model": name, "aios.model_version": version})
                run_id = str(run.info.run_id)
                c.set_terminated(run_id)
                c.set_model_version_tag(name, version, DOC_RUN_TAG, run_id)
            c.log_text(run_id, data, f"{folder}/{key}.json")
            c.set_model_version_tag(name, version, f"{DOC_TAG_PREFIX}{key}",
                                    f"runs:/{run_id}/{folder}/{key}.json")

        await self._run(f"put document {key!r} of {name}/{version}", call,
                        not_found_hint=f"register model {name!r} version {version} first")

    async def get_document(self, name: str, version: str, key: str) -> dict[str, Any] | None:
        """The document kept under ``key`` with that version, or ``None``."""
        check_document_key(key)
        version = _check_version(version)

        def call(c: Any) -> dict[str, Any] | None:
            mv = c.get_model_version(name, version)
            uri = str((mv.tags or {}).get(f"{DOC_TAG_PREFIX}{key}") or "")
            if not uri.startswith("runs:/"):
                return None
            run_id, _, path = uri.removeprefix("runs:/").partition("/")
            with tempfile.TemporaryDirectory(prefix="aios-doc-") as tmp:
                local = c.download_artifacts(run_id, path, tmp)
                with open(local, encoding="utf-8") as file:
                    loaded = json.load(file)
            if not isinstance(loaded, dict):  # pragma: no cover - written by put_document
                raise InvalidInput(f"document {key!r} of {name}/{version} is not an object",
                                   hint=f"write it again with put_document (tag {uri})")
            return loaded

        return await self._run(f"get document {key!r} of {name}/{version}", call,
                               not_found_hint=f"check that model {name!r} has version "
                                              f"{version}")

    async def health(self) -> None:
        """``GET /health`` of a tracking server (a sqlite registry has nothing to reach);
        :class:`~aios_mesh.errors.BackendUnavailable` with a hint when it does not answer."""
        if self._is_sqlite:
            return
        await http_probe(f"{self.tracking_uri}/health", timeout=5.0, what="MLflow server",
                         hint="start it (mlflow server --host HOST --port PORT) or fix "
                              "the registry URL (mlflow+http://host:port)")

    async def aclose(self) -> None:
        """Drop the client; later calls raise :class:`ConfigError`."""
        with self._lock:
            self._closed = True
            self._client = None

    # -- conveniences beyond the port --------------------------------------------------------

    async def ensure_experiment(self, name: str = "aios-mesh") -> str:
        """The id of experiment ``name``, created if missing (for logging models to this
        registry). On sqlite its artifacts go under :attr:`artifact_root`, not ``./mlruns``."""
        return await self._run(f"ensure experiment {name!r}",
                               lambda c: self._experiment(c, name))

    def _experiment(self, c: Any, name: str) -> str:
        found = c.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.artifact_root is not None:
            self.artifact_root.mkdir(parents=True, exist_ok=True)
            location = self.artifact_root.as_uri()
        try:
            return str(c.create_experiment(name, artifact_location=location))
        except Exception as exc:  # created concurrently
            if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
            return str(c.get_experiment_by_name(name).experiment_id)

    async def publish_model(self, folder: str | Path, name: str, *, alias: str | None = None,
                            experiment: str = "aios-mesh", run_name: str | None = None,
                            params: Mapping[str, Any] | None = None,
                            metrics: Mapping[str, float] | None = None) -> ModelRef:
        """Log a saved MLflow model folder to a new run of ``experiment`` (with ``params`` and
        ``metrics``), register it as a new version of ``name`` and, with ``alias``, point the
        alias at it. Uses this registry's tracking URI only (no global MLflow state).

        Example::

            mlflow.sklearn.save_model(pipeline, "out/model")
            ref = await registry.publish_model("out/model", "ticket-classifier",
                                               alias="champion", metrics={"accuracy": 0.93})
        """
        experiment_id = await self.ensure_experiment(experiment)

        def log(c: Any) -> str:
            run = c.create_run(experiment_id, run_name=run_name or f"train-{name}")
            run_id = str(run.info.run_id)
            for key, value in (params or {}).items():
                c.log_param(run_id, key, value)
            for key, number in (metrics or {}).items():
                c.log_metric(run_id, key, float(number))
            c.log_artifacts(run_id, str(folder), "model")
            c.set_terminated(run_id)
            return run_id

        run_id = await self._run(f"log model {name!r}", log)
        ref = await self.register(name, f"runs:/{run_id}/model", run_id=run_id)
        if alias is not None:
            await self.set_alias(name, alias, ref.version)
            ref = await self.resolve(f"{name}@{alias}")
        return ref

    def __repr__(self) -> str:
        return f"MlflowRegistry({self._display!r})"


def _check_version(version: str) -> str:
    version = str(version)
    if not version.isdigit() or int(version) < 1:
        raise InvalidInput(f"version {version!r} is not a version number",
                           hint="pass the version as '3'")
    return str(int(version))


def _check_name(name: str) -> None:
    try:
        parsed, alias, version = parse_model_spec(name)
    except InvalidInput:
        parsed, alias, version = "", None, None
    if not parsed or alias is not None or version is not None:
        raise InvalidInput(f"{name!r} is not a model name",
                           hint="register under a bare name such as 'invoice-extractor'")
