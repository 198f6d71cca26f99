"""Call capabilities from Flyte tasks, with every decision record linked to the workflow run.

    from aios_mesh_flyte import capability_task, mesh_workflow, model_version_task

    classify = capability_task(CLASSIFY, config="aios-mesh.toml")   # a flytekit task
    model_version = model_version_task(config="aios-mesh.toml")

    @mesh_workflow(config="aios-mesh.toml")
    def flow(texts: list[dict], tenants: list[str]) -> list[dict]:
        version = model_version(capability="classify-ticket")
        return map_task(functools.partial(classify, model_version=version))(
            payload=texts, tenant=tenants)

* :func:`current_mesh` — the one :class:`~aios_mesh.Mesh` of this process, built on first use
  from ``AIOS_MESH_CONFIG`` (a config file path) or :meth:`Mesh.local`, closed at exit.
* :func:`invoke` — one call from inside a task; its record's ``parent`` names the Flyte run
  (:func:`current_run`), so its OpenLineage events carry the ``parent`` run facet.
* :func:`capability_task` — a flytekit task ``(payload: dict, tenant: str[, model_version:
  str]) -> dict`` around :func:`invoke`, cached by Flyte. The cache key is the task name,
  ``cache_version = capability version`` and the inputs — and for a capability answered by a
  model the inputs include ``model_version``, resolved at run time by
  :func:`model_version_task` (lock file first, then the registry). A promoted alias or a new
  lock therefore changes the key on the next run, without re-registering anything.
* :func:`mesh_workflow` — ``@workflow`` whose *local* runs get a run id of their own (flytekit
  calls every local run ``local``) and emit the workflow's OpenLineage START and
  COMPLETE/FAIL; :func:`workflow_lineage` does the same around any block of code, and
  :func:`emit_workflow_run` emits the events of a run that happened elsewhere (a cluster run
  followed by ``FlyteRemoteOrchestrator``).

This module imports ``flytekit``; the package ``aios_mesh_flyte`` exposes these names lazily,
so loading the orchestrator adapters still does not. See docs/adapters/flyte.md.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from flytekit import Cache, current_context
from flytekit import task as flyte_task
from flytekit import workflow as flyte_workflow
from flytekit.core.base_task import TaskResolverMixin
from flytekit.core.python_function_task import PythonFunctionTask
from flytekit.core.tracker import TrackedInstance
from flytekit.core.workflow import PythonFunctionWorkflow
from flytekit.exceptions.user import FlyteRecoverableException

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.config import load_config
from aios_mesh.errors import (
    InvalidInput,
    MeshError,
    PolicyDenied,
    QuotaExceeded,
    UnknownCapability,
)
from aios_mesh.lineage import run_uuid, workflow_run_events
from aios_mesh.mesh import Mesh
from aios_mesh.record import DecisionRecord

__all__ = [
    "CONFIG_ENV",
    "CapabilityTaskResolver",
    "FlyteRun",
    "MeshWorkflow",
    "capability_resolver",
    "capability_task",
    "close_meshes",
    "current_mesh",
    "current_run",
    "emit_workflow_run",
    "invoke",
    "mesh_workflow",
    "model_version_task",
    "register_capabilities",
    "resolve_model_version",
    "unregister_capabilities",
    "workflow_lineage",
]

#: The environment variable that carries the config file path into a task.
CONFIG_ENV = "AIOS_MESH_CONFIG"
#: What :func:`resolve_model_version` answers for a capability served by a function.
FUNCTION_VERSION = "function"

_log = logging.getLogger("aios_mesh_flyte.tasks")
_LOCK = threading.RLock()
_MESHES: dict[str, Mesh] = {}
#: Specs handed to capability_task() in this process; every mesh built here knows them.
_SPECS: dict[str, CapabilitySpec] = {}
_atexit_registered = False
#: A run id for local executions that no mesh_workflow/workflow_lineage scope names.
_PROCESS_RUN = str(uuid.uuid4())


# ---------------------------------------------------------------------- the process mesh
def _config_key(config: str | os.PathLike[str] | None) -> str:
    source = config if config is not None else os.environ.get(CONFIG_ENV) or None
    return str(Path(source).expanduser().resolve()) if source else ""


def current_mesh(config: str | os.PathLike[str] | None = None) -> Mesh:
    """The mesh of this task process, built once per config and closed at interpreter exit.

    ``config`` (a TOML path) > ``$AIOS_MESH_CONFIG`` > :meth:`Mesh.local` (embedded defaults
    in ``./.aios-mesh``). Capabilities handed to :func:`capability_task` as specs in this
    process are registered on it (a capability the config declares keeps the config's spec).
    """
    global _atexit_registered
    key = _config_key(config)
    with _LOCK:
        mesh = _MESHES.get(key)
        if mesh is None:
            mesh = Mesh.from_config(key) if key else Mesh.local()
            _MESHES[key] = mesh
            if not _atexit_registered:
                _at_exit(close_meshes)
                _atexit_registered = True
        known = mesh.capabilities
        for name, spec in _SPECS.items():
            if name not in known:
                mesh.register(spec)
        if _record_sink not in mesh.sinks:
            mesh.sinks.append(_record_sink)
        return mesh


def _at_exit(callback: Callable[[], None]) -> None:
    """Run ``callback`` at interpreter exit while worker threads still work: ``Mesh.close``
    uses ``asyncio.to_thread``, and plain ``atexit`` handlers run after the thread pools have
    shut down. ``threading._register_atexit`` (what ``concurrent.futures`` itself uses) runs
    before them; plain ``atexit`` is the fallback."""
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError("no threading._register_atexit")
        register(callback)
    except RuntimeError:  # also: "can't register atexit after shutdown"
        atexit.register(callback)


def _builder_mesh(given: str | None) -> Mesh:
    """The mesh for a config given when a task or workflow was defined: ``$AIOS_MESH_CONFIG``
    overrides it (one workflow file runs against another profile without edits)."""
    return current_mesh(os.environ.get(CONFIG_ENV) or given)


def close_meshes() -> None:
    """Close every mesh :func:`current_mesh` built (ships pending lineage first); the next
    :func:`current_mesh` builds a fresh one. Runs at interpreter exit."""
    with _LOCK:
        meshes = list(_MESHES.values())
        _MESHES.clear()
    for mesh in meshes:
        try:
            mesh.close()
        except Exception:  # exit must go on
            _log.exception("closing %r failed", mesh)


def register_capabilities(*specs: CapabilitySpec) -> None:
    """Make ``specs`` known to every mesh :func:`current_mesh` builds in this process (and to
    those it built already). Call it at module level in the workflow file, so a task process
    on a cluster registers them too::

        register_capabilities(EXTRACT, MATCH, ROUTE)
    """
    with _LOCK:
        for spec in specs:
            _SPECS[spec.name] = spec
        meshes = list(_MESHES.values())
    for mesh in meshes:
        for spec in specs:
            if spec.name not in mesh.capabilities:
                mesh.register(spec)


def unregister_capabilities(*names: str) -> None:
    """Undo :func:`register_capabilities` for meshes :func:`current_mesh` builds from now on
    (one process running several workflows' tests, say); meshes already built keep them."""
    with _LOCK:
        for name in names:
            _SPECS.pop(name, None)


# ---------------------------------------------------------------------- run identity
@dataclass(frozen=True, slots=True)
class FlyteRun:
    """One workflow run, as decision records name it in ``parent``.

    ``run_id`` is the Flyte execution name (a cluster run) or a UUID (a local run);
    ``workflow`` the job name (``pkg.mod.wf``). OpenLineage sees ``run_uuid(run_id)``.
    """

    run_id: str
    workflow: str
    namespace: str = "flyte"
    parent: FlyteRun | None = None

    @property
    def lineage_run_id(self) -> str:
        """The ``runId`` of this run's OpenLineage events (and of the ``parent`` facet)."""
        return run_uuid(self.run_id, namespace=self.namespace)

    def as_parent(self) -> dict[str, Any]:
        """The ``parent`` of a decision record made inside this run (``root`` if nested)."""
        doc: dict[str, Any] = {"run_id": self.run_id, "namespace": self.namespace,
                               "name": self.workflow}
        root = self
        while root.parent is not None:
            root = root.parent
        if root is not self:
            doc["root"] = {"run_id": root.run_id, "namespace": root.namespace,
                           "name": root.workflow}
        return doc


@dataclass(slots=True)
class _Scope:
    run: FlyteRun
    claimed: bool = False  # a mesh_workflow's local run has adopted this scope


_SCOPES: list[_Scope] = []  # flytekit local execution is process-wide, so is this stack


def _flyte_execution() -> tuple[str, str] | None:
    """(execution name, task name) when running as a Flyte task on a cluster, else None."""
    try:
        params = current_context()
    except Exception:
        return None
    execution = getattr(params, "execution_id", None)
    name = str(getattr(execution, "name", "") or "")
    if not name or name == "local":
        return None
    task_id = getattr(params, "task_id", None)
    return name, str(getattr(task_id, "name", "") or "")


def _cluster_workflow_name(execution: str, task: str) -> str:
    # Propeller sets FLYTE_INTERNAL_EXECUTION_WORKFLOW ("project:domain:name" or a bare name)
    # on task pods; the task name stands in when it is absent.
    raw = os.environ.get("FLYTE_INTERNAL_EXECUTION_WORKFLOW", "")
    name = raw.rsplit(":", 1)[-1] if raw else ""
    if not name or name == execution:
        name = os.environ.get("FLYTE_INTERNAL_EXECUTION_LAUNCHPLAN", "").rsplit(":", 1)[-1]
    return name or task or "unknown"


def current_run() -> FlyteRun | None:
    """The workflow run calls made now belong to.

    1. the innermost :func:`workflow_lineage` / :func:`mesh_workflow` local run;
    2. on a cluster: the Flyte execution (``current_context().execution_id.name``) of the
       workflow named by ``FLYTE_INTERNAL_EXECUTION_WORKFLOW``;
    3. inside a local flytekit execution that no scope names (flytekit calls them all
       ``local``): one run per process, named after the running task;
    4. outside Flyte: ``None``.
    """
    with _LOCK:
        if _SCOPES:
            return _SCOPES[-1].run
    found = _flyte_execution()
    if found is not None:
        return FlyteRun(found[0], _cluster_workflow_name(*found))
    running = _running_task_name()
    if running is not None:
        return FlyteRun(_PROCESS_RUN, running)
    return None


def _running_task_name() -> str | None:
    """The name of the flytekit task running on this thread's stack (local runs name every
    task ``local`` in their context, so look at the task object itself)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, PythonFunctionTask):
            return str(candidate.name)
        frame = frame.f_back
    return None


def _task_name() -> str:
    found = _flyte_execution()
    if found is not None and found[1]:
        return found[1]
    return _running_task_name() or "unknown"


# ---------------------------------------------------------------------- lineage of runs
def _emit(events: list[dict[str, Any]], mesh: Mesh) -> bool:
    """Send events through the mesh's Lineage port; fail soft (logged), like every signal."""
    try:
        lineage = mesh.port("lineage")
        for event in events:
            mesh.run_sync(lineage.emit(event))
    except Exception as exc:
        _log.warning("workflow lineage not emitted: %s", exc)
        return False
    return True


def emit_workflow_run(run_id: str, workflow: str, *, status: str,
                      started_at: datetime | str | None = None,
                      ended_at: datetime | str | None = None, error: str | None = None,
                      parent: Mapping[str, Any] | None = None,
                      mesh: Mesh | None = None) -> list[dict[str, Any]]:
    """Emit the OpenLineage events of one workflow run through the mesh's Lineage port.

    For runs this process did not wrap: e.g. after ``FlyteRemoteOrchestrator.run`` returned
    ``Execution(id, workflow, status)``, ``emit_workflow_run(ex.id, ex.workflow,
    status=ex.status.value, error=ex.error)`` gives ``[START, COMPLETE | FAIL]``
    (``queued``/``running`` give ``[START]``). ``run_id`` is the Flyte execution name, the
    same string the run's decision records carry in ``parent.run_id``. Returns the events;
    a Lineage backend that is down is logged, not raised.
    """
    events = workflow_run_events(run_id, workflow, status=status, started_at=started_at,
                                 ended_at=ended_at, error=error, parent=parent)
    _emit(events, mesh or current_mesh())
    return events


@contextlib.contextmanager
def workflow_lineage(workflow: str, *, run_id: str | None = None, mesh: Mesh | None = None,
                     config: str | os.PathLike[str] | None = None) -> Iterator[FlyteRun]:
    """A workflow run around a block: START now, COMPLETE or FAIL (with the error) at the end.

    While the block runs, :func:`current_run` is this run, so every :func:`invoke` — and
    every :func:`capability_task` executed locally inside it — names it as ``parent``. Nested
    scopes become child runs (their START carries the ``parent`` facet). ``run_id`` defaults
    to a new UUID; pass an orchestrator's execution id to make the two agree. A
    :func:`mesh_workflow` called inside a scope of the same workflow name adopts it rather
    than opening its own.
    """
    target = mesh or (_builder_mesh(str(config)) if config is not None else current_mesh())
    with _LOCK:
        outer = _SCOPES[-1].run if _SCOPES else None
        run = FlyteRun(run_id or str(uuid.uuid4()), workflow.replace(":", "."), parent=outer)
        scope = _Scope(run)
        _SCOPES.append(scope)
    parent = outer.as_parent() if outer is not None else None
    started = datetime.now(UTC)
    _emit(workflow_run_events(run.run_id, run.workflow, status="running", started_at=started,
                              parent=parent), target)
    try:
        yield run
    except BaseException as exc:
        _pop(scope)
        end = workflow_run_events(run.run_id, run.workflow, status="failed",
                                  started_at=started, error=f"{type(exc).__name__}: {exc}",
                                  parent=parent)[-1]
        _emit([end], target)
        raise
    _pop(scope)
    end = workflow_run_events(run.run_id, run.workflow, status="succeeded",
                              started_at=started, parent=parent)[-1]
    _emit([end], target)


def _pop(scope: _Scope) -> None:
    with _LOCK:
        if scope in _SCOPES:
            _SCOPES.remove(scope)


# flytekit ships no types (ignore_missing_imports): its base classes are Any to mypy
class MeshWorkflow(PythonFunctionWorkflow):  # type: ignore[misc]
    """A flytekit workflow whose local executions are workflow runs of their own.

    Compiled, registered and run on a cluster it is a plain ``PythonFunctionWorkflow``; only
    ``local_execute`` (``wf(...)``, ``pyflyte run`` without ``--remote``) is wrapped in
    :func:`workflow_lineage`. Build it with :func:`mesh_workflow`.
    """

    _aios_mesh_config: str | None = None

    def local_execute(self, ctx: Any, **kwargs: Any) -> Any:
        name = str(self.name)
        with _LOCK:
            top = _SCOPES[-1] if _SCOPES else None
            adopt = top is not None and not top.claimed and top.run.workflow == name
            if adopt and top is not None:
                top.claimed = True
        if adopt:
            return super().local_execute(ctx, **kwargs)
        with workflow_lineage(name, config=self._aios_mesh_config) as run:
            with _LOCK:
                for scope in _SCOPES:
                    if scope.run is run:
                        scope.claimed = True
            return super().local_execute(ctx, **kwargs)


def mesh_workflow(_fn: Callable[..., Any] | None = None, *,
                  config: str | os.PathLike[str] | None = None,
                  **workflow_kwargs: Any) -> Any:
    """``@flytekit.workflow`` (same options) whose local runs are lineage runs.

    Each local execution gets a UUID run id, emits START and COMPLETE/FAIL through the Lineage
    port of the mesh for ``config``, and is the ``parent`` of every capability call its tasks
    make. Use it bare (``@mesh_workflow``) or with arguments
    (``@mesh_workflow(config="aios-mesh.toml", failure_policy=...)``).
    """

    def wrap(fn: Callable[..., Any]) -> Any:
        wf = flyte_workflow(fn, **workflow_kwargs)
        wf.__class__ = MeshWorkflow
        wf._aios_mesh_config = str(config) if config is not None else None
        return wf

    return wrap if _fn is None else wrap(_fn)


# ---------------------------------------------------------------------- one call
_captured = threading.local()
#: Failures that are a function of the payload and the policy alone: returned, not raised.
_FINAL = (PolicyDenied, InvalidInput)


def _record_sink(record: DecisionRecord, doc: Mapping[str, Any]) -> None:
    stack: list[list[DecisionRecord]] | None = getattr(_captured, "stack", None)
    if stack:
        stack[-1].append(record)


@contextlib.contextmanager
def _capture() -> Iterator[list[DecisionRecord]]:
    """Collect the records this thread writes (a failed call raises without its record)."""
    stack: list[list[DecisionRecord]] = getattr(_captured, "stack", None) or []
    _captured.stack = stack
    seen: list[DecisionRecord] = []
    stack.append(seen)
    try:
        yield seen
    finally:
        stack.pop()


def _result(output: Any, record: DecisionRecord, error: MeshError | None) -> dict[str, Any]:
    dumped = output.model_dump(mode="json") if hasattr(output, "model_dump") else output
    return {"output": dumped, "record_id": record.record_id, "outcome": record.outcome,
            "review_id": record.review_id,
            "error": error.to_dict() if error is not None else None}


def invoke(capability: str, payload: Any, *, tenant: str, caller: str | None = None,
           attributes: Mapping[str, Any] | None = None, mesh: Mesh | None = None,
           run: FlyteRun | None = None) -> dict[str, Any]:
    """Call ``capability`` from inside a Flyte task; the record's ``parent`` is the run.

    Returns ``{"output", "record_id", "outcome", "review_id", "error"}`` (JSON-safe, so a
    task can return it as ``dict``): ``outcome`` ``ok`` with the output, ``review`` with a
    ``review_id`` (output ``None``); ``denied`` (:class:`PolicyDenied`) or ``rejected``
    (:class:`InvalidInput`) with ``error`` — answers that follow from the payload and the
    policy, which the task returns (and Flyte may cache). Everything else raises after its
    record is written, so nothing is cached and Flyte's ``retries`` apply:
    :class:`FlyteRecoverableException` for a retryable :class:`MeshError` (backend down,
    timeout) and :class:`QuotaExceeded`, the :class:`MeshError` itself otherwise (unknown
    model or tenant, invalid output, ...).

    ``caller`` defaults to ``"flyte:<task name>"``; ``attributes`` go to the policy input;
    ``mesh`` defaults to :func:`current_mesh`; ``run`` to :func:`current_run`.
    """
    target = mesh or current_mesh()
    if _record_sink not in target.sinks:
        target.sinks.append(_record_sink)
    owner = run or current_run()
    who = caller or f"flyte:{_task_name()}"
    with _capture() as seen:
        try:
            result = target.invoke(capability, payload, tenant=tenant, caller=who,
                                   attributes=attributes,
                                   parent=owner.as_parent() if owner is not None else None)
        except MeshError as exc:
            record = seen[-1] if seen else None
            if exc.retryable or isinstance(exc, QuotaExceeded):
                raise FlyteRecoverableException(f"{type(exc).__name__}: {exc}") from exc
            if record is None or not isinstance(exc, _FINAL):
                raise
            return _result(None, record, exc)
    return _result(result.output, result.record, None)


# ---------------------------------------------------------------------- model versions
def resolve_model_version(capability: str, *, mesh: Mesh | None = None) -> str:
    """What answers ``capability`` now: ``"<model>/<version>"`` from the lock file when it
    pins the alias, else from the registry; ``"function"`` for a function capability."""
    target = mesh or current_mesh()
    spec = target.capability(capability)
    if spec.model is None:
        return FUNCTION_VERSION
    ref = target.run_sync(target.resolver.resolve(spec.model))
    return f"{ref.name}/{ref.version}"


# flytekit ships no types (ignore_missing_imports): its base classes are Any to mypy
class CapabilityTaskResolver(TrackedInstance, TaskResolverMixin):  # type: ignore[misc]
    """Loads the tasks :func:`capability_task` and :func:`model_version_task` build.

    Their functions are made at run time (closures), which flytekit's default resolver
    refuses; this one finds the task object itself: the module it was created in and the
    module-level name it is assigned to (so assign it at module level, like any task).
    """

    def name(self) -> str:
        return "aios_mesh_flyte.CapabilityTaskResolver"

    def load_task(self, loader_args: list[str]) -> Any:
        _, module, _, attr, *_ = loader_args
        return getattr(importlib.import_module(module), attr)

    def loader_args(self, settings: Any, t: Any) -> list[str]:
        return ["task-module", str(t.instantiated_in), "task-name", str(t.lhs)]

    def get_all_tasks(self) -> list[Any]:
        raise NotImplementedError


#: The resolver instance (``aios_mesh_flyte.tasks.capability_resolver``) tasks run with.
capability_resolver = CapabilityTaskResolver()


def _caller_module() -> str:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return str(frame.f_globals.get("__name__", "__main__")) if frame is not None else "__main__"


def _lookup_spec(capability: str | CapabilitySpec,
                 config: str | os.PathLike[str] | None) -> CapabilitySpec:
    if isinstance(capability, CapabilitySpec):
        return capability
    source = config if config is not None else os.environ.get(CONFIG_ENV)
    if source:
        for doc in load_config(Path(source)).capabilities:
            if doc.get("name") == capability:
                return CapabilitySpec.from_config(doc)
    raise UnknownCapability(
        f"capability {capability!r} is not declared in "
        f"{'the config ' + str(source) if source else 'any config'}",
        hint="pass its CapabilitySpec (capability_task(MY_SPEC, ...)) or a config= whose "
             "[[capabilities]] declares it")


def _carried(config: str | os.PathLike[str] | None) -> str | None:
    """The config path as the task's container should see it: relative to the working
    directory when it lies below it (pyflyte registers from the project root, which is where
    fast-registered code runs), else as given."""
    if config is None:
        return None
    path = Path(config)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _make_function(fn: Callable[..., Any], module: str, name: str, doc: str,
                   annotations: dict[str, Any]) -> Callable[..., Any]:
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = module
    fn.__doc__ = doc
    fn.__annotations__ = annotations
    return fn


def capability_task(capability: str | CapabilitySpec, *,
                    config: str | os.PathLike[str] | None = None,
                    cache: bool | Cache = True, name: str | None = None,
                    **task_kwargs: Any) -> Any:
    """A flytekit task that calls ``capability`` through :func:`invoke`.

    Interface: ``(payload: dict, tenant: str, model_version: str) -> dict`` for a capability
    answered by a model, ``(payload: dict, tenant: str) -> dict`` for one answered by a
    function. The result is :func:`invoke`'s dict.

    Args:
        capability: a :class:`CapabilitySpec` (registered on the task's mesh) or the name of a
            capability the config declares.
        config: the mesh config file; carried into the container as ``AIOS_MESH_CONFIG``
            (``environment=``). In the task, ``$AIOS_MESH_CONFIG`` wins when set, then this
            path, then :meth:`Mesh.local`.
        cache: Flyte caching (``True``: ``Cache(version=<capability version>)``; ``False``
            off; or your own :class:`flytekit.Cache`). The key is task name + version +
            inputs, so ``model_version`` — resolved per run by :func:`model_version_task` —
            makes a promoted alias or a new lock a cache miss. The task refuses to answer
            (and so to cache) when the mesh resolves another version than the input says.
        name: the function name of the task (default: the capability name in snake_case);
            its Flyte name is ``<defining module>.<name>``.
        task_kwargs: any other ``@task`` option (``retries``, ``requests``, ...).

    Assign the result at module level: the task is found again by that name when it runs in
    a container (:class:`CapabilityTaskResolver`).
    """
    spec = _lookup_spec(capability, config)
    if isinstance(capability, CapabilitySpec):
        register_capabilities(spec)
    module = _caller_module()
    fname = name or spec.name.replace("-", "_")
    given = str(config) if config is not None else None
    holder: dict[str, str] = {}

    def call(payload: dict[str, Any], tenant: str, model_version: str = "") -> dict[str, Any]:
        mesh = _builder_mesh(given)
        if spec.model is not None:
            now = resolve_model_version(spec.name, mesh=mesh)
            if now != model_version:
                raise MeshError(f"{spec.name}: the task was given model {model_version!r} but "
                                f"the mesh resolves {now!r}",
                                hint="the alias or the lock changed during the run; run the "
                                     "workflow again (its cache key follows the new version)")
        return invoke(spec.name, payload, tenant=tenant, caller=f"flyte:{holder['name']}",
                      mesh=mesh)

    doc = f"Call the {spec.key} capability through aios-mesh (decision record + lineage)."
    # bare ``dict``: flytekit's type engine reads these annotations at run time to build the
    # task's interface (a bare dict is its untyped JSON object); keep them as they are
    if spec.model is not None:
        def with_model(payload: dict, tenant: str,  # type: ignore[type-arg]
                       model_version: str) -> dict:  # type: ignore[type-arg]
            return call(payload, tenant, model_version)

        fn = _make_function(with_model, module, fname, doc,
                            {"payload": dict, "tenant": str, "model_version": str,
                             "return": dict})
    else:
        def without_model(payload: dict, tenant: str) -> dict:  # type: ignore[type-arg]
            return call(payload, tenant)

        fn = _make_function(without_model, module, fname, doc,
                            {"payload": dict, "tenant": str, "return": dict})
    if cache is True:
        cache = Cache(version=spec.version)
    environment = dict(task_kwargs.pop("environment", None) or {})
    carried = _carried(config)
    if carried is not None:
        environment.setdefault(CONFIG_ENV, carried)
    made = flyte_task(fn, cache=cache, environment=environment or None,
                      task_resolver=capability_resolver, **task_kwargs)
    holder["name"] = str(made.name)
    made._aios_mesh_capability = spec.name
    return made


def model_version_task(*, config: str | os.PathLike[str] | None = None,
                       name: str = "model_version", **task_kwargs: Any) -> Any:
    """A never-cached task ``(capability: str) -> str`` giving :func:`resolve_model_version`
    in the task's mesh; feed its output to a :func:`capability_task`'s ``model_version``.
    Assign it at module level, like :func:`capability_task`."""
    module = _caller_module()
    given = str(config) if config is not None else None

    def resolve(capability: str) -> str:
        mesh = _builder_mesh(given)
        return resolve_model_version(capability, mesh=mesh)

    fn = _make_function(resolve, module, name,
                        "The model version that answers a capability now (lock, then registry).",
                        {"capability": str, "return": str})
    environment = dict(task_kwargs.pop("environment", None) or {})
    carried = _carried(config)
    if carried is not None:
        environment.setdefault(CONFIG_ENV, carried)
    task_kwargs.pop("cache", None)
    return flyte_task(fn, cache=False, environment=environment or None,
                      task_resolver=capability_resolver, **task_kwargs)

