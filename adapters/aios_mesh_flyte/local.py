"""``flyte-local://`` — run flytekit workflows by local execution, in this process.

``run("pkg.mod:wf", {"a": 1})`` imports the workflow and calls it in a worker thread
(``asyncio.to_thread``); ``submit`` does the same in the background and ``status`` reports on
it. Executions live in memory: they are gone when the orchestrator is closed.

flytekit keeps local-execution state per process (its context stack and the local task cache),
so local executions in one process run **one at a time** (a process-wide lock), and the cache
folder is process-wide too: each run points flytekit's ``LocalTaskCache`` at this
orchestrator's folder (default ``<base_dir>/flyte-local-cache``; ``flyte-local:///FOLDER``
picks another) instead of ``~/.flyte/local-cache``. ``?cache=false`` turns the local cache off
for this orchestrator's runs. Local runs ignore ``retries`` (a flytekit limitation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from aios_mesh.backends import BackendURL
from aios_mesh.errors import NotFound
from aios_mesh.ports.base import Feature
from aios_mesh.ports.orchestrator import Execution, ExecutionStatus
from aios_mesh_flyte._common import check_inputs, load_entity, outputs_dict

__all__ = ["FlyteLocalOrchestrator"]

#: flytekit's local-execution state is process-wide; so is this lock.
_RUN_LOCK = threading.Lock()
_CACHE_SWITCH = "FLYTE_LOCAL_CACHE_ENABLED"


@contextlib.contextmanager
def _local_cache(folder: Path, enabled: bool) -> Iterator[None]:
    """Point flytekit's local task cache at ``folder`` (with ``_RUN_LOCK`` held)."""
    from flytekit.core import local_cache

    location = str(folder)
    cache = local_cache.LocalTaskCache
    if location != local_cache.CACHE_LOCATION or not cache._initialized:
        if cache._initialized:
            cache._cache.close()
            cache._initialized = False
        folder.mkdir(parents=True, exist_ok=True)
        local_cache.CACHE_LOCATION = location
    # flytekit reads this switch (LocalConfig.auto) on every cached task call.
    previous = os.environ.get(_CACHE_SWITCH)
    if not enabled:
        os.environ[_CACHE_SWITCH] = "false"
    try:
        yield
    finally:
        if not enabled:
            if previous is None:
                os.environ.pop(_CACHE_SWITCH, None)
            else:
                os.environ[_CACHE_SWITCH] = previous


class FlyteLocalOrchestrator:
    """The Orchestrator port on flytekit local execution (the embedded default)."""

    features: frozenset[Feature] = frozenset()

    def __init__(self, cache_dir: Path, *, cache: bool = True) -> None:
        self.cache_dir = cache_dir
        self.cache = cache
        self._executions: dict[str, Execution] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """``flyte-local://`` (cache in ``<base_dir>/flyte-local-cache``) or
        ``flyte-local:///cache-folder``; ``?cache=false`` disables the local cache."""
        url = url.with_options(options)
        url.check_options({"cache"}, what="flyte-local")
        folder = url.resolve_path(base_dir) if url.path.strip("/") else (
            base_dir / "flyte-local-cache")
        return cls(folder, cache=url.flag("cache", True))

    # ------------------------------------------------------------------ the port
    async def run(self, workflow: str, inputs: dict[str, Any]) -> Execution:
        """Run ``module:workflow`` to completion; a failing workflow gives ``FAILED``."""
        entity = await asyncio.to_thread(load_entity, workflow)
        check_inputs(entity, workflow, inputs)
        return await asyncio.to_thread(self._execute, str(uuid.uuid4()), workflow, entity,
                                       dict(inputs))

    async def submit(self, workflow: str, inputs: dict[str, Any]) -> str:
        """Start ``module:workflow`` in the background and return its execution id."""
        entity = await asyncio.to_thread(load_entity, workflow)
        check_inputs(entity, workflow, inputs)
        execution_id = str(uuid.uuid4())
        self._executions[execution_id] = Execution(execution_id, workflow,
                                                   ExecutionStatus.QUEUED)

        async def background() -> None:
            result = await asyncio.to_thread(self._execute, execution_id, workflow, entity,
                                             dict(inputs))
            self._executions[execution_id] = result

        task = asyncio.create_task(background(), name=f"flyte-local:{execution_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return execution_id

    async def status(self, execution_id: str) -> Execution:
        """The execution as it stands now; unknown ids raise ``NotFound``."""
        try:
            return self._executions[execution_id]
        except KeyError:
            raise NotFound(f"no local Flyte execution {execution_id!r}",
                           hint="local executions live only as long as their orchestrator; "
                                "use an id returned by submit()") from None

    async def aclose(self) -> None:
        """Wait for background executions still running (they cannot be interrupted)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------------ internals
    def _execute(self, execution_id: str, workflow: str, entity: Any,
                 inputs: dict[str, Any]) -> Execution:
        with _RUN_LOCK:
            if execution_id in self._executions:
                self._executions[execution_id] = Execution(execution_id, workflow,
                                                           ExecutionStatus.RUNNING)
            try:
                with _local_cache(self.cache_dir, self.cache):
                    result = entity(**inputs)
                outputs = outputs_dict(list(entity.python_interface.outputs), result)
            except Exception as exc:
                return Execution(execution_id, workflow, ExecutionStatus.FAILED,
                                 error=f"{type(exc).__name__}: {exc}")
        return Execution(execution_id, workflow, ExecutionStatus.SUCCEEDED, outputs=outputs)

    def __repr__(self) -> str:
        return f"FlyteLocalOrchestrator(cache_dir={str(self.cache_dir)!r})"
