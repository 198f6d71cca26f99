"""Conformance suite for the Orchestrator port.

:class:`OrchestratorBasic` asks for an ``adapter`` fixture (an Orchestrator) that can run the
sample workflows of :mod:`aios_mesh.testing.conformance.workflows` (tiny flytekit workflows;
for a cluster, register that module first). Override the ``*_WF`` class attributes to point
at your own equivalents.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from aios_mesh.errors import NotFound
from aios_mesh.ports.orchestrator import Execution, ExecutionStatus, Orchestrator

__all__ = ["OrchestratorBasic", "wait_terminal"]

_WF = "aios_mesh.testing.conformance.workflows"
TERMINAL = frozenset({ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED})


async def wait_terminal(adapter: Orchestrator, execution_id: str, *,
                        timeout: float = 60.0, interval: float = 0.05) -> Execution:
    """Poll ``status`` until the execution succeeds or fails (``AssertionError`` on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        execution = await adapter.status(execution_id)
        if execution.status in TERMINAL:
            return execution
        if time.monotonic() > deadline:
            raise AssertionError(f"{execution_id} still {execution.status} after {timeout:g}s")
        await asyncio.sleep(interval)


class OrchestratorBasic:
    """run with outputs, failures as FAILED with the error text, submit + status."""

    ADD_WF = f"{_WF}:add_wf"
    DIVMOD_WF = f"{_WF}:divmod_wf"
    FAILING_WF = f"{_WF}:failing_wf"
    SLOW_WF = f"{_WF}:slow_wf"
    #: seconds a submitted execution may take to finish (raise it for a cluster)
    TERMINAL_TIMEOUT = 60.0

    async def test_run_returns_single_output_as_o0(self, adapter: Orchestrator) -> None:
        execution = await adapter.run(self.ADD_WF, {"a": 2, "b": 3})
        assert execution.status is ExecutionStatus.SUCCEEDED
        assert execution.outputs == {"o0": 5}
        assert execution.error is None
        assert execution.workflow == self.ADD_WF
        assert execution.id

    async def test_run_returns_named_outputs(self, adapter: Orchestrator) -> None:
        execution = await adapter.run(self.DIVMOD_WF, {"a": 7, "b": 2})
        assert execution.status is ExecutionStatus.SUCCEEDED
        assert execution.outputs == {"quotient": 3, "remainder": 1}

    async def test_failing_workflow_is_failed_with_error_text(self,
                                                              adapter: Orchestrator) -> None:
        execution = await adapter.run(self.FAILING_WF, {"message": "kaput-7f3a"})
        assert execution.status is ExecutionStatus.FAILED
        assert execution.error is not None
        assert "kaput-7f3a" in execution.error
        assert execution.outputs == {}

    async def test_submit_then_status_reaches_succeeded(self, adapter: Orchestrator) -> None:
        execution_id = await adapter.submit(self.SLOW_WF, {"seconds": 0.2})
        first = await adapter.status(execution_id)
        assert first.id == execution_id
        assert first.status in {ExecutionStatus.QUEUED, ExecutionStatus.RUNNING,
                                ExecutionStatus.SUCCEEDED}
        done = await wait_terminal(adapter, execution_id, timeout=self.TERMINAL_TIMEOUT)
        assert done.status is ExecutionStatus.SUCCEEDED
        assert done.outputs == {"o0": "slept 0.2"}

    async def test_submit_of_failing_workflow_reaches_failed(self,
                                                             adapter: Orchestrator) -> None:
        execution_id = await adapter.submit(self.FAILING_WF, {"message": "late-kaput"})
        done = await wait_terminal(adapter, execution_id, timeout=self.TERMINAL_TIMEOUT)
        assert done.status is ExecutionStatus.FAILED
        assert done.error is not None
        assert "late-kaput" in done.error

    async def test_unknown_workflow_raises_not_found(self, adapter: Orchestrator) -> None:
        with pytest.raises(NotFound):
            await adapter.run(f"{_WF}:no_such_wf", {})

    async def test_unknown_execution_raises_not_found(self, adapter: Orchestrator) -> None:
        with pytest.raises(NotFound):
            await adapter.status("no-such-execution-0000")

    async def test_declares_features(self, adapter: Orchestrator) -> None:
        assert isinstance(adapter.features, frozenset)
        assert isinstance(adapter, Orchestrator)
