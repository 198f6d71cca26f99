"""The bulk job runner: takes a job's lease, runs its rows through the mesh's bulk mode with
bounded concurrency, and makes every row end with exactly one decision record, even when
the process running it is killed.

How a row runs (see :mod:`aios_mesh.gateway.jobs.store` for the states)::

    start_row      ledger: running, record id = uuid5(job, row)
    mesh call      Mesh.ainvoke_row(record_id=...)
      hook         ledger: answered (answer or problem, and the state it ends in)
      audit        the record is appended
    settle_row     ledger: done | failed

A runner that takes over a job (its previous holder died or let the lease expire) first
*reconciles* the rows left ``running``/``answered``: it looks their record ids up in the
audit log. A row whose record is there is not run again — it settles with the answer written
ahead (or fails with "answer lost" when the runner died before the hook); a row without a
record goes back to pending and runs again under the same record id.

Interactive calls are not starved: a replica runs one job at a time with at most
``concurrency`` rows in flight (the mesh's ``invoke_many_concurrency``), so the rest of the
event loop, the backends' connections and the admission slots stay free for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from aios_mesh.errors import IntegrityError, MeshError
from aios_mesh.gateway.jobs.store import JobStore
from aios_mesh.gateway.problems import problem_body
from aios_mesh.ports.audit import AuditLog
from aios_mesh.record import DecisionRecord

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["JobRunner", "recorded_ids"]

_log = logging.getLogger("aios_mesh.gateway.jobs")


async def recorded_ids(audit: AuditLog, wanted: Iterable[str], *,
                       page: int = 2000) -> dict[str, dict[str, Any]]:
    """The records among ``wanted`` ids that are in the audit log, by id.

    The audit port has no lookup by id, so this reads the log page by page and stops when
    every id is found; it runs only when a runner takes over rows a dead runner left in
    flight (at most ``concurrency`` rows).
    """
    missing = set(wanted)
    found: dict[str, dict[str, Any]] = {}
    since = 0
    while missing:
        entries = await audit.read(since, page)
        for entry in entries:
            rid = entry.record.get("record_id")
            if rid in missing:
                missing.discard(rid)
                found[rid] = entry.record
        if len(entries) < page:
            break
        since = entries[-1].seq
    return found


def _jsonable(output: Any) -> Any:
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json")
    return output


class JobRunner:
    """Runs the shared ledger's jobs in this process (one job at a time).

    Args:
        mesh: whose capabilities the rows call (bulk mode).
        store: the ledger.
        concurrency: rows in flight at most (default: the mesh's ``invoke_many_concurrency``).
        lease_s: how long a job stays with this runner without a renewal; a replica takes
            over a job whose runner died after this long.
        poll_s: how often an idle runner looks for work (a submit here wakes it at once).
        drain_s: on shutdown, how long rows in flight may take to finish.
    """

    def __init__(self, mesh: Mesh, store: JobStore, *, concurrency: int | None = None,
                 lease_s: float = 30.0, poll_s: float = 1.0, drain_s: float = 30.0) -> None:
        self.mesh = mesh
        self.store = store
        self.concurrency = concurrency or mesh.config.invoke_many_concurrency
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.drain_s = drain_s
        self.owner = str(uuid.uuid4())
        self._wake = asyncio.Event()
        self._stopping = False

    def poke(self) -> None:
        """A job was submitted: look for work now."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[JobRunner]:
        """Run jobs in the background while the block runs (the gateway's lifespan)."""
        self._stopping = False
        task = asyncio.create_task(self._loop(), name="aios-mesh-jobs")
        try:
            yield self
        finally:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), self.drain_s)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                claimed = await asyncio.to_thread(self.store.claim, self.owner, self.lease_s)
                if claimed is not None:
                    await self.run_job(*claimed)
                    continue
            except MeshError as exc:  # the store or the audit log is down: try again later
                _log.warning("bulk job runner: %s (%s)", exc.message, exc.code)
            except Exception:  # a bug must not stop every later job; the rows stay durable
                _log.exception("bulk job runner failed; it tries again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def run_job(self, job_id: str, tenant: str, caller: str, capability: str) -> None:
        """Run the leased job until it is finished, cancelled, the lease is lost or the
        runner stops; the lease is given back at the end."""
        try:
            await self.reconcile(job_id)
            renewer = asyncio.create_task(self._renew(job_id))
            try:
                await self._rows(job_id, tenant, caller, capability, renewer)
            finally:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            await asyncio.to_thread(self.store.finish_if_idle, job_id)
        finally:
            await asyncio.to_thread(self.store.release, job_id, self.owner)

    async def reconcile(self, job_id: str) -> None:
        """Settle the rows a previous runner left in flight (see the module docstring)."""
        rows = await asyncio.to_thread(self.store.in_flight, job_id)
        if not rows:
            return
        records = await recorded_ids(self.mesh.ports.audit, [r for _, _, r in rows if r])
        for index, state, record_id in rows:
            record = records.get(record_id or "")
            if record is None:
                await asyncio.to_thread(self.store.reset_row, job_id, index)
            elif state == "answered":
                await asyncio.to_thread(self.store.settle_row, job_id, index, None)
            else:
                lost = IntegrityError(
                    f"row {index} was recorded (outcome {record.get('outcome')}) but its "
                    "answer was lost when the gateway running it stopped",
                    hint="read its decision record; submit the row again if you need "
                         "the answer")
                await asyncio.to_thread(self.store.fail_row, job_id, index,
                                        problem_body(lost, record_id=record_id))

    async def _renew(self, job_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            if not await asyncio.to_thread(self.store.renew, job_id, self.owner, self.lease_s):
                _log.warning("bulk job %s: lease lost", job_id)
                return

    async def _rows(self, job_id: str, tenant: str, caller: str, capability: str,
                    renewer: asyncio.Task[None]) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                failure.append(task.exception())  # type: ignore[arg-type]  # checked above

        try:
            while not (self._stopping or failure or renewer.done()):
                batch = await asyncio.to_thread(self.store.pending, job_id,
                                                limit=self.concurrency * 4)
                if not batch:
                    break
                for index, text in batch:
                    await slots.acquire()
                    if self._stopping or failure or renewer.done():
                        slots.release()
                        break
                    task = asyncio.create_task(self._row(job_id, index, text, tenant, caller,
                                                         capability))
                    tasks.add(task)
                    task.add_done_callback(done)
                # rows of this batch still in flight are skipped by `pending` (running)
                if tasks and not self._stopping:
                    await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if tasks:
                await asyncio.wait(set(tasks))
        if failure:
            raise failure[0]

    async def _row(self, job_id: str, index: int, text: str, tenant: str, caller: str,
                   capability: str) -> None:
        store, owner = self.store, self.owner
        record_id = await asyncio.to_thread(store.start_row, job_id, index, owner)
        if record_id is None:
            return  # cancelled, or the lease went to another runner
        hooked: list[MeshError | None] = []

        async def before_record(record: DecisionRecord, output: Any,
                                error: MeshError | None) -> None:
            if error is None:
                result: dict[str, Any] = {"outcome": str(record.outcome),
                                          "output": _jsonable(output)}
                if record.review_id:
                    result["review_id"] = record.review_id
            else:
                result = {"outcome": str(record.outcome),
                          "problem": problem_body(error, record_id=record.record_id)}
            await asyncio.to_thread(store.answer_row, job_id, index, owner,
                                    final="done" if error is None else "failed", result=result)
            hooked.append(error)

        try:
            await self.mesh.ainvoke_row(capability, orjson.loads(text), tenant=tenant,
                                        caller=caller, record_id=record_id,
                                        parent={"name": "bulk-job", "run_id": job_id},
                                        before_record=before_record)
        except MeshError as exc:
            if not hooked or hooked[0] is not exc:
                raise  # the hook or the audit append failed: reconcile decides later
        await asyncio.to_thread(store.settle_row, job_id, index, owner)
