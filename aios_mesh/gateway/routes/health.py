"""``/healthz`` (the process answers), ``/readyz`` (every configured backend answers, by the
doctor's probes) and ``/metrics`` (Prometheus text, every worker in one scrape).

None of them needs a credential: orchestrators and scrapers call them. They say nothing a
caller could use against a backend (no URL, no error text): ``/readyz`` names each port and
whether it is up; ``aios-mesh doctor`` on the host says why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from aios_mesh.doctor import DEFAULT_TIMEOUT_S, Check, run_checks
from aios_mesh.gateway.app import Gateway
from aios_mesh.gateway.metrics import CONTENT_TYPE, Live

__all__ = ["READY_TTL_S", "routes"]

#: How long one round of readiness probes is reused: probes build fresh adapters and reach
#: every backend, so a probe every second from a load balancer must not repeat them.
READY_TTL_S = 5.0


class _Readiness:
    """The last round of probes, refreshed by one caller at a time once it is stale."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.checks: list[Check] = []
        self.at = float("-inf")
        self.lock = asyncio.Lock()

    async def current(self) -> list[Check]:
        async with self.lock:
            if time.monotonic() - self.at > READY_TTL_S:
                self.checks = await asyncio.to_thread(run_checks, self.gateway.mesh,
                                                      timeout=DEFAULT_TIMEOUT_S)
                self.at = time.monotonic()
            return self.checks


async def _live(gateway: Gateway) -> Live:
    mesh = gateway.mesh
    live = Live()
    used = [(tenant, await mesh.ports.quota.used(tenant)) for tenant in mesh.config.tenants]
    live.gauge("aios_mesh_quota_used_calls", "Calls drawn from the tenant's quota in its "
               "current windows.", ["tenant"],
               [((tenant, ), float(usage.calls)) for tenant, (usage, _) in used])
    live.gauge("aios_mesh_quota_used_cost", "Cost drawn from the tenant's quota in its "
               "current windows.", ["tenant"], [((tenant, ), cost) for tenant, (_, cost) in used])
    pending = await asyncio.to_thread(lambda: len(mesh.review_queue().list("pending")))
    live.gauge("aios_mesh_review_queue_depth", "Review items waiting for a human.", [],
               [((), float(pending))])
    backlog = await asyncio.to_thread(lambda: mesh.outbox().pending())
    live.gauge("aios_mesh_outbox_pending", "Published events the relay has not shipped yet.",
               [], [((), float(backlog))])
    return live


def routes(gateway: Gateway) -> Sequence[BaseRoute]:
    """The health and metrics routes."""
    readiness = _Readiness(gateway)
    gateway.background.append(gateway.metrics.serving)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = await readiness.current()
        ready = all(c.ok for c in checks)
        return JSONResponse({"status": "ready" if ready else "not ready",
                             "checks": [{"port": c.port, "status": c.status} for c in checks]},
                            status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        live = await _live(gateway)
        return Response(gateway.metrics.render(live), media_type=CONTENT_TYPE)

    return [Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"])]
