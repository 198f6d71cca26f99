"""The gateway's Prometheus metrics (``GET /metrics``), one scrape for every worker.

Counters and histograms are kept with :mod:`prometheus_client`. When the server runs several
worker processes it sets ``PROMETHEUS_MULTIPROC_DIR`` (a fresh folder per server under the
state folder) before any worker starts: each worker then writes its samples to its own files
there and a scrape, whichever worker answers it, sums them all (prometheus_client's
multiprocess mode). Without that variable (one process, tests) the samples live in memory.

What is current rather than counted (quota use per tenant, review queue depth, outbox backlog)
is read from the shared stores at scrape time, so it is right whichever worker answers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = ["CONTENT_TYPE", "MULTIPROC_ENV", "GatewayMetrics", "Live"]

#: The variable that switches prometheus_client to multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The content type of the text exposition format.
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Call latencies from sub-millisecond cache hits to the longest SLO timeouts.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0)


class Live:
    """Values read at scrape time: ``(name, help, labels, [(label values, value), ...])``."""

    def __init__(self) -> None:
        self.families: list[GaugeMetricFamily] = []

    def gauge(self, name: str, documentation: str, labels: Sequence[str],
              samples: Iterable[tuple[Sequence[str], float]]) -> None:
        """Add one gauge family with its samples."""
        family = GaugeMetricFamily(name, documentation, labels=list(labels))
        for values, value in samples:
            family.add_metric(list(values), value)
        self.families.append(family)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class GatewayMetrics:
    """Calls, errors, latency and cost of every call the gateway made, by capability."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter("aios_mesh_gateway_calls", "Calls made through the gateway.",
                             ["capability", "mode", "outcome"], registry=self._registry)
        self.errors = Counter("aios_mesh_gateway_errors",
                              "Calls that ended with an error, by error code.",
                              ["capability", "code"], registry=self._registry)
        self.latency = Histogram("aios_mesh_gateway_call_seconds",
                                 "Time from request to answer (to the last chunk for a stream).",
                                 ["capability", "mode"], buckets=_BUCKETS,
                                 registry=self._registry)
        self.cost = Counter("aios_mesh_gateway_cost", "Cost of the calls made, in the "
                            "capability's currency.", ["tenant", "capability"],
                            registry=self._registry)
        self.workers = Gauge("aios_mesh_gateway_workers", "Worker processes serving now.",
                             multiprocess_mode="livesum", registry=self._registry)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """While the app is up: this worker counts in ``aios_mesh_gateway_workers``; when it
        stops, its live gauges are dropped (its counters stay in the sums)."""
        self.workers.set(1)
        try:
            yield
        finally:
            self.workers.set(0)
            if os.environ.get(MULTIPROC_ENV):
                mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # untyped

    def observe(self, *, capability: str, tenant: str, mode: str, outcome: str,
                seconds: float, cost: float = 0.0, error_code: str | None = None) -> None:
        """Count one finished call."""
        self.calls.labels(capability, mode, outcome).inc()
        self.latency.labels(capability, mode).observe(seconds)
        if cost:
            self.cost.labels(tenant, capability).inc(cost)
        if error_code is not None:
            self.errors.labels(capability, error_code).inc()

    def render(self, live: Live) -> bytes:
        """The text exposition: every worker's counted samples plus ``live``."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        else:
            registry = self._registry
        out = generate_latest(registry)
        scratch = CollectorRegistry(auto_describe=False)
        scratch.register(live)
        return out + generate_latest(scratch)
