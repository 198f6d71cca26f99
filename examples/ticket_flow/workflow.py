"""Support-ticket routing as a Flyte workflow over the demo's aios-mesh capabilities.

    generate_tickets ─► to_batch ─► map(classify-ticket) ─► automated_queries
                                         ▲                         │
                  model_version ─────────┘              map(retrieve-context)
                                                                   │
                                               summarise ◄─────────┘

* ``classify`` and ``retrieve`` are :func:`aios_mesh_flyte.capability_task` tasks: every call
  goes through the mesh (policy, quota, redaction, model resolution, review gate) and leaves
  one decision record whose ``parent`` is this workflow run.
* ``map_task`` runs one cached task per ticket — locally in-process, on a cluster one pod per
  item — so a second identical run answers from Flyte's cache without calling the mesh. The
  classification's cache key holds the model version ``model_version`` resolved for this run
  (lock file, then registry): a new champion or a new lock means fresh answers.
* ``@mesh_workflow`` gives each local run a run id and emits its OpenLineage START/COMPLETE.

Run it (after ``python examples/ticket_flow/prepare.py``)::

    pyflyte run examples/ticket_flow/workflow.py ticket_flow --n 20
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from aios_mesh_flyte import capability_task, current_run, mesh_workflow, model_version_task
from flytekit import map_task, task

from aios_mesh.demo.capabilities import CLASSIFY, RETRIEVE
from aios_mesh.demo.data import make_tickets

__all__ = ["CONFIG", "Batch", "TicketSummary", "classify", "model_version", "retrieve",
           "ticket_flow"]

#: The mesh profile; ``$AIOS_MESH_CONFIG`` points a run at another one.
CONFIG = Path(__file__).with_name("aios-mesh.toml")

classify = capability_task(CLASSIFY, config=CONFIG)
retrieve = capability_task(RETRIEVE, config=CONFIG)
model_version = model_version_task(config=CONFIG)


class Batch(NamedTuple):
    payloads: list[dict]
    tenants: list[str]


@dataclass
class TicketSummary:
    """What one run did: counts by outcome, and which run and model did it."""

    run_id: str
    model_version: str
    total: int
    automated: int
    review: int
    denied: int
    other: int
    with_context: int


@task
def generate_tickets(n: int) -> list[dict]:
    """``n`` synthetic support tickets (seeded: same ``n``, same tickets)."""
    return [{"id": t.id, "tenant": t.tenant, "text": t.text} for t in make_tickets(n)]


@task
def to_batch(tickets: list[dict]) -> Batch:
    """The classification inputs: one payload and one tenant per ticket."""
    return Batch([{"text": t["text"]} for t in tickets], [t["tenant"] for t in tickets])


@task
def automated_queries(tickets: list[dict], routes: list[dict]) -> Batch:
    """Retrieval inputs for the tickets the model routed on its own (outcome ``ok``)."""
    picked = [t for t, r in zip(tickets, routes, strict=True) if r["outcome"] == "ok"]
    return Batch([{"text": t["text"], "top_k": 2} for t in picked],
                 [t["tenant"] for t in picked])


@task
def summarise(routes: list[dict], contexts: list[dict],
              model_version: str) -> TicketSummary:
    """Count the outcomes: automated (ok), human review, policy denials, anything else."""
    outcomes = Counter(str(r["outcome"]) for r in routes)
    run = current_run()
    return TicketSummary(
        run_id=run.run_id if run is not None else "",
        model_version=model_version,
        total=len(routes),
        automated=outcomes["ok"],
        review=outcomes["review"],
        denied=outcomes["denied"],
        other=len(routes) - outcomes["ok"] - outcomes["review"] - outcomes["denied"],
        with_context=sum(1 for c in contexts if c["outcome"] == "ok" and c["output"]["ids"]),
    )


@mesh_workflow(config=CONFIG)
def ticket_flow(n: int = 20) -> TicketSummary:
    """Generate ``n`` tickets, classify each, fetch help articles for the automated ones."""
    tickets = generate_tickets(n=n)
    batch = to_batch(tickets=tickets)
    version = model_version(capability=CLASSIFY.name)
    routes = map_task(functools.partial(classify, model_version=version))(
        payload=batch.payloads, tenant=batch.tenants)
    queries = automated_queries(tickets=tickets, routes=routes)
    contexts = map_task(retrieve)(payload=queries.payloads, tenant=queries.tenants)
    return summarise(routes=routes, contexts=contexts, model_version=version)
