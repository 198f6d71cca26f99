"""Run rows of a scale-out job through a mesh, each row exactly once (see
:mod:`aios_mesh.scale.ledger`), whoever runs its block and however often.

A row is a mapping with a stable id (``id_field``, default ``"id"``); the rest of the row is
the capability's input. Each row gives one result::

    {"id": ..., "record_id": ..., "outcome": "ok", "output": "<JSON>", "error": None}

``output`` and ``error`` are JSON text (one column type, whatever the capability answers,
so Parquet and Arrow take it). A row the mesh refuses (bad input, denied, a backend error)
has its own decision record and its error; a row without an id cannot have a stable record,
so it gets an error and ``record_id`` None; the other rows run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from aios_mesh.errors import IntegrityError, InvalidInput, MeshError
from aios_mesh.record import DecisionRecord
from aios_mesh.scale.ledger import LedgerRow, RowLedger

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["RESULT_FIELDS", "error_doc", "map_rows"]

#: The fields of every result row, in order.
RESULT_FIELDS = ("id", "record_id", "outcome", "output", "error")


def error_doc(error: MeshError) -> str:
    """A MeshError as the JSON text of a result's ``error``."""
    return orjson.dumps({"type": type(error).__name__, "code": error.code,
                         "message": error.message, "hint": error.hint}).decode()


def _output_text(output: Any) -> str:
    if isinstance(output, BaseModel):
        output = output.model_dump(mode="json")
    return orjson.dumps(output, option=orjson.OPT_NON_STR_KEYS).decode()


def _result(row_id: str | None, record_id: str | None, outcome: str, output: str | None,
            error: str | None) -> dict[str, Any]:
    return {"id": row_id, "record_id": record_id, "outcome": outcome, "output": output,
            "error": error}


async def _reconcile(mesh: Mesh, ledger: RowLedger, job_id: str,
                     left: Sequence[LedgerRow]) -> None:
    """Settle rows a dead execution left ``running``/``answered``: by their records."""
    from aios_mesh.gateway.jobs.runner import recorded_ids

    records = await recorded_ids(mesh.ports.audit, [r.record_id for r in left])
    for row in left:
        record = records.get(row.record_id)
        if record is None:
            await asyncio.to_thread(ledger.reset, job_id, row.row_id)
        elif row.state == "answered":
            await asyncio.to_thread(ledger.settle, job_id, row.row_id)
        else:
            lost = IntegrityError(f"row {row.row_id} was recorded (outcome "
                                  f"{record.get('outcome')}) but its answer was lost with "
                                  "the worker running it",
                                  hint="read its decision record by record_id")
            await asyncio.to_thread(ledger.settle, job_id, row.row_id, _result(
                row.row_id, row.record_id, str(record.get("outcome")), None,
                error_doc(lost)))


async def map_rows(mesh: Mesh, capability: str, rows: Sequence[Any], *, job_id: str,
                   ledger: RowLedger, tenant: str, caller: str = "scale",
                   id_field: str = "id", concurrency: int = 8,
                   tenant_field: str | None = None) -> list[dict[str, Any]]:
    """One result per row, in order (see the module docstring). Rows the ledger already
    holds as ``done`` are answered from it without a call; at most ``concurrency`` calls
    run at once. With ``tenant_field``, a row that names a tenant there is called as that
    tenant (its policy, quota and records), the others as ``tenant``."""
    ids: list[str | None] = []
    for row in rows:
        value = row.get(id_field) if isinstance(row, Mapping) else None
        ids.append(None if value is None or isinstance(value, float | bool) else str(value))
    known = await asyncio.to_thread(ledger.rows, job_id, [i for i in ids if i is not None])
    left = [r for r in known.values() if r.state != "done"]
    if left:  # a re-executed block: a worker died with these rows in flight
        await _reconcile(mesh, ledger, job_id, left)
        known = await asyncio.to_thread(ledger.rows, job_id, [i for i in ids if i])
    slots = asyncio.Semaphore(concurrency)
    seen: set[str] = set()

    async def one(row: Any, row_id: str | None) -> dict[str, Any]:
        if row_id is None or row_id in seen:
            why = ("has no id" if row_id is None else f"repeats id {row_id!r}")
            bad = InvalidInput(f"row {why} (field {id_field!r})",
                               hint=f"give every row a unique, stable {id_field!r} (a string "
                                    "or an integer)")
            return _result(row_id, None, "rejected", None, error_doc(bad))
        seen.add(row_id)
        done = known.get(row_id)
        if done is not None and done.state == "done" and done.result is not None:
            return done.result
        async with slots:
            record_id = await asyncio.to_thread(ledger.claim, job_id, row_id)
            if record_id is None:  # claimed meanwhile by a concurrent execution
                entry = (await asyncio.to_thread(ledger.rows, job_id, [row_id]))[row_id]
                return entry.result or _result(row_id, entry.record_id, "running", None, None)
            payload = {k: v for k, v in row.items() if k not in (id_field, tenant_field)}
            named = row.get(tenant_field) if tenant_field else None
            who = named if isinstance(named, str) and named else tenant
            written: list[dict[str, Any]] = []

            async def before_record(record: DecisionRecord, output: Any,
                                    error: MeshError | None) -> None:
                result = _result(row_id, record.record_id, str(record.outcome),
                                 None if error is not None else _output_text(output),
                                 None if error is None else error_doc(error))
                await asyncio.to_thread(ledger.answer, job_id, row_id, result)
                written.append(result)

            try:
                await mesh.ainvoke_row(capability, payload, tenant=who, caller=caller,
                                       record_id=record_id,
                                       parent={"name": "scale-job", "run_id": job_id},
                                       before_record=before_record)
            except MeshError:
                if not written:
                    raise  # the hook or the audit append failed: the next run reconciles
            await asyncio.to_thread(ledger.settle, job_id, row_id)
            return written[0]

    return list(await asyncio.gather(*(one(r, i) for r, i in zip(rows, ids, strict=True))))
