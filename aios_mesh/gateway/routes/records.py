"""``GET /v1/records/{record_id}``: one decision record, for its own tenant only.

A record of another tenant is answered exactly like one that does not exist (404, same
body), so a credential learns nothing about other tenants' calls. The ``admin`` role reads
every tenant's records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from aios_mesh.errors import NotFound
from aios_mesh.gateway.app import Gateway
from aios_mesh.gateway.identity import ADMIN, Principal

__all__ = ["routes"]

_PAGE = 1000


async def _find(gateway: Gateway, record_id: str) -> dict[str, Any] | None:
    """The record with ``record_id`` from the audit log (read page by page)."""
    audit = gateway.mesh.ports.audit
    since = 0
    while True:
        entries = await audit.read(since, _PAGE)
        for entry in entries:
            if entry.record.get("record_id") == record_id:
                return entry.record
        if len(entries) < _PAGE:
            return None
        since = entries[-1].seq


def _readable(principal: Principal, record: dict[str, Any]) -> bool:
    return record.get("tenant") == principal.tenant or ADMIN in principal.roles


def routes(gateway: Gateway) -> Sequence[BaseRoute]:
    """The record route."""

    async def one_record(request: Request) -> Response:
        principal = await gateway.principal(request)
        record_id = request.path_params["record_id"]
        record = await _find(gateway, record_id)
        if record is None or not _readable(principal, record):
            raise NotFound(f"no record {record_id!r}",
                           hint="a record id comes from a call's answer (record_id); "
                                "a credential reads only its own tenant's records")
        return JSONResponse(record)

    return [Route("/v1/records/{record_id}", one_record, methods=["GET"])]
