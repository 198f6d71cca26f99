"""``flyte://host:port?project=..&domain=..`` — run registered workflows on a Flyte cluster.

Built on flytekit's ``FlyteRemote``. ``"pkg.mod:wf"`` names the workflow registered as
``pkg.mod.wf`` (what ``pyflyte register`` produces); its default launch plan (same name) is
what runs. Options: ``project`` (default ``flytesnacks``), ``domain`` (``development``),
``version`` (default: the latest registered version), ``insecure`` (default ``true`` for
127.0.0.1/localhost, else ``false``), ``poll`` (seconds between status polls in ``run``,
default 2) and ``timeout`` (seconds ``run`` waits, default 600).
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Self

from aios_mesh.backends import BackendURL
from aios_mesh.errors import BackendTimeout, BackendUnavailable, InvalidInput, MeshError, NotFound
from aios_mesh.ports.base import Feature
from aios_mesh.ports.health import tcp_probe
from aios_mesh.ports.orchestrator import Execution, ExecutionStatus
from aios_mesh_flyte._common import flyte_name, split_ref

__all__ = ["FlyteRemoteOrchestrator"]

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class FlyteRemoteOrchestrator:
    """The Orchestrator port on ``flytekit.remote.FlyteRemote``."""

    features: frozenset[Feature] = frozenset()

    def __init__(self, endpoint: str, *, project: str = "flytesnacks",
                 domain: str = "development", version: str | None = None,
                 insecure: bool = False, poll_s: float = 2.0, timeout_s: float = 600.0) -> None:
        self.endpoint = endpoint
        self.project = project
        self.domain = domain
        self.version = version
        self.insecure = insecure
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self._remote: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """``flyte://host:port?project=flytesnacks&domain=development`` (nothing connects yet)."""
        host = url.host or ""
        url = url.with_options(options)
        url.check_options({"project", "domain", "version", "insecure", "poll", "timeout"},
                          what="flyte")
        return cls(
            url.address,
            project=url.option("project", "flytesnacks") or "flytesnacks",
            domain=url.option("domain", "development") or "development",
            version=url.option("version"),
            insecure=url.flag("insecure", host in _LOCAL_HOSTS),
            poll_s=url.seconds_option("poll", 2.0, min=0.01),
            timeout_s=url.seconds_option("timeout", 600.0, min=0.01),
        )

    # ------------------------------------------------------------------ the port
    async def run(self, workflow: str, inputs: dict[str, Any]) -> Execution:
        """Launch ``module:workflow`` and wait (polling) until it ends."""
        execution_id = await self.submit(workflow, inputs)
        return await asyncio.to_thread(self._wait, execution_id, workflow)

    async def submit(self, workflow: str, inputs: dict[str, Any]) -> str:
        """Launch the workflow's default launch plan; returns the Flyte execution name."""
        split_ref(workflow)
        return await asyncio.to_thread(self._submit, workflow, dict(inputs))

    async def status(self, execution_id: str) -> Execution:
        """Fetch the execution from FlyteAdmin and map its phase."""
        return await asyncio.to_thread(self._status, execution_id, None)

    async def health(self) -> None:
        """Open a connection to FlyteAdmin's endpoint (within 5 s);
        :class:`BackendUnavailable` with a hint when nothing listens there."""
        host, _, port = self.endpoint.rpartition(":")
        await tcp_probe(host or self.endpoint, int(port or 443), timeout=5.0, what="FlyteAdmin",
                        hint="start a cluster (flytectl demo start) or fix the endpoint "
                             "(flyte://host:port)")

    async def aclose(self) -> None:
        """Drop the client (FlyteRemote holds no resources that need closing)."""
        self._remote = None

    # ------------------------------------------------------------------ internals
    def _client(self) -> Any:
        with self._lock:
            if self._remote is None:
                from flytekit.configuration import Config
                from flytekit.remote import FlyteRemote

                self._remote = FlyteRemote(
                    Config.for_endpoint(self.endpoint, insecure=self.insecure),
                    default_project=self.project, default_domain=self.domain,
                )
            return self._remote

    def _submit(self, workflow: str, inputs: dict[str, Any]) -> str:
        with _translate(f"launching {workflow!r} on {self.endpoint}", workflow):
            remote = self._client()
            launch_plan = remote.fetch_launch_plan(name=flyte_name(workflow),
                                                   version=self.version)
            execution = remote.execute(launch_plan, inputs=inputs, wait=False)
            execution_id = str(execution.id.name)
        return execution_id

    def _wait(self, execution_id: str, workflow: str) -> Execution:
        from flytekit.exceptions import user as user_exceptions

        with _translate(f"waiting for {execution_id!r} on {self.endpoint}", workflow):
            remote = self._client()
            execution = remote.fetch_execution(name=execution_id)
            try:
                execution = remote.wait(execution, timeout=timedelta(seconds=self.timeout_s),
                                        poll_interval=timedelta(seconds=self.poll_s))
            except (user_exceptions.FlyteTimeout, TimeoutError) as exc:
                raise BackendTimeout(
                    f"{workflow!r} ({execution_id}) did not finish in {self.timeout_s:g}s",
                    hint="raise ?timeout= or follow it with submit()/status()",
                ) from exc
            result: Execution = self._to_execution(execution, workflow)
        return result

    def _status(self, execution_id: str, workflow: str | None) -> Execution:
        with _translate(f"fetching execution {execution_id!r} from {self.endpoint}",
                        workflow or execution_id):
            execution = self._client().fetch_execution(name=execution_id)
            result: Execution = self._to_execution(execution, workflow)
        return result

    @staticmethod
    def _to_execution(execution: Any, workflow: str | None) -> Execution:
        from flytekit.models.core.execution import WorkflowExecutionPhase as Phase

        phase = execution.closure.phase
        name = workflow or _workflow_of(execution)
        execution_id = str(execution.id.name)
        if phase == Phase.SUCCEEDED:
            outputs: dict[str, Any] = {}
            resolver = execution.outputs
            if resolver is not None:
                outputs = {key: resolver.get(key) for key in resolver.literals}
            return Execution(execution_id, name, ExecutionStatus.SUCCEEDED, outputs=outputs)
        if phase in (Phase.FAILED, Phase.ABORTED, Phase.TIMED_OUT):
            error = execution.closure.error
            text = getattr(error, "message", None) or Phase.enum_to_string(phase)
            return Execution(execution_id, name, ExecutionStatus.FAILED, error=str(text))
        if phase in (Phase.UNDEFINED, Phase.QUEUED):
            return Execution(execution_id, name, ExecutionStatus.QUEUED)
        return Execution(execution_id, name, ExecutionStatus.RUNNING)

    def __repr__(self) -> str:
        return (f"FlyteRemoteOrchestrator({self.endpoint!r}, project={self.project!r}, "
                f"domain={self.domain!r})")


def _workflow_of(execution: Any) -> str:
    try:
        name = str(execution.spec.launch_plan.name)
    except AttributeError:
        return "unknown"
    module, _, attr = name.rpartition(".")
    return f"{module}:{attr}" if module else name


class _translate:
    """Turn flytekit / gRPC exceptions into the mesh's error tree."""

    def __init__(self, what: str, workflow: str) -> None:
        self.what = what
        self.workflow = workflow

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> Literal[False]:
        if exc is None or isinstance(exc, MeshError) or not isinstance(exc, Exception):
            return False
        from flytekit.exceptions import user as user_exceptions

        text = f"{self.what}: {type(exc).__name__}: {exc}"
        if isinstance(exc, (user_exceptions.FlyteEntityNotExistException,
                            user_exceptions.FlyteEntityNotFoundException)):
            raise NotFound(text, hint="register the workflow (pyflyte register) or fix "
                                      "project/domain/version", workflow=self.workflow) from exc
        if isinstance(exc, (user_exceptions.FlyteValueException,
                            user_exceptions.FlyteTypeException, TypeError, ValueError)):
            raise InvalidInput(text, hint="check the inputs against the workflow's interface",
                               workflow=self.workflow) from exc
        if isinstance(exc, user_exceptions.FlyteAuthenticationException):
            raise BackendUnavailable(text, hint="check the Flyte credentials "
                                                "(FLYTE_CREDENTIALS_* or ~/.flyte/config.yaml)",
                                     workflow=self.workflow) from exc
        raise BackendUnavailable(text, hint="check that FlyteAdmin answers at the URL "
                                            "(flytectl demo start, or your cluster's endpoint)",
                                 workflow=self.workflow) from exc
