"""A gateway with one capability for the bulk job tests, importable by a uvicorn subprocess
(``uvicorn --factory tests.integration.jobs_app:app``; settings from ``JOBS_*`` env vars).

The authenticator here is a test stand-in: ``Authorization: Bearer TENANT:CALLER`` (no
secret). The real API keys live in ``aios_mesh.gateway.auth``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from aios_mesh import Mesh
from aios_mesh.capabilities import capability
from aios_mesh.gateway import GatewaySettings, Principal, Unauthenticated, create_app
from aios_mesh.gateway.routes import jobs

TENANTS = ("acme", "globex")


class Number(BaseModel):
    n: int
    sleep: float = 0.0


class Doubled(BaseModel):
    n: int
    double: int


@capability("double")
async def double(payload: Number) -> Doubled:
    await asyncio.sleep(payload.sleep)
    if payload.n < 0:
        raise ValueError("negative numbers are not doubled")  # a caller error: InvalidInput
    return Doubled(n=payload.n, double=2 * payload.n)


class BearerTenant:
    """``Authorization: Bearer TENANT:CALLER`` (tests only)."""

    async def authenticate(self, request: HTTPConnection) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        tenant, _, caller = token.partition(":")
        if scheme.lower() != "bearer" or tenant not in TENANTS or not caller:
            raise Unauthenticated("no valid credential", hint="send Bearer TENANT:CALLER")
        scopes = {"unscoped": frozenset[str](), "all": None}.get(caller, frozenset({"double"}))
        return Principal(tenant=tenant, caller=caller, scopes=scopes)


def make_mesh(state_dir: Path, *, audit: str | None = None) -> Mesh:
    """The embedded mesh the gateway serves (``audit``: a shared audit log's URL, so
    replicas find each other's records)."""
    backends = {"audit": audit} if audit else {}
    return Mesh.local(state_dir, capabilities=[double], tenants=TENANTS,
                      invoke_many_concurrency=4, backends=backends)


def make_app(state_dir: Path, *, state: Any = None, audit: str | None = None,
             job_files: Path | None = None, lease_s: float = 30.0) -> Starlette:
    """The jobs routes of a gateway over :func:`make_mesh`."""
    settings = GatewaySettings(job_files=job_files, job_lease_s=lease_s,
                               max_bulk_bytes=64 << 10)
    return create_app(make_mesh(state_dir, audit=audit), authenticator=BearerTenant(),
                      settings=settings, modules=[jobs.routes], state=state)


def app() -> Starlette:
    """The factory uvicorn calls in a subprocess."""
    state: Any = None
    if pg := os.environ.get("JOBS_PG"):
        from aios_mesh_postgres import PostgresState

        state = PostgresState(pg)
    files = os.environ.get("JOBS_FILES")
    return make_app(Path(os.environ["JOBS_STATE"]), state=state, audit=pg or None,
                    job_files=Path(files) if files else None,
                    lease_s=float(os.environ.get("JOBS_LEASE_S", "30")))
