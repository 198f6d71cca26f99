"""Invoice intake as a Flyte workflow over the aios-mesh capabilities.

    extract ─► match ─► route ─► await_reviews ─► publish

Each task runs one step of :mod:`examples.invoice_intake.intake` over a batch of invoices
(locally in-process; on a cluster one pod per task). Every capability call inside it goes
through the mesh (policy, quota, redaction, model resolution, review gate) and leaves one
decision record whose ``parent`` is this workflow run; ``@mesh_workflow`` emits the run's own
OpenLineage START and COMPLETE/FAIL, so the lineage graph links calls to runs.

The tasks are not cached: every run is a real intake. Run one batch by hand (after
``python -m examples.invoice_intake --n 30`` prepared the state)::

    AIOS_MESH_CONFIG=.aios-mesh/invoice-intake/aios-mesh.toml \\
        pyflyte run examples/invoice_intake/workflow.py invoice_intake \\
        --invoices '[{"id": "x-1", "tenant": "acme", "text": "ACME Ltd\\nInvoice no: 7\\n..."}]'
"""

from __future__ import annotations

from aios_mesh_flyte import mesh_workflow, register_capabilities
from flytekit import task

from examples.invoice_intake import intake
from examples.invoice_intake.capabilities import ALL

register_capabilities(*ALL)

__all__ = ["await_reviews", "extract", "invoice_intake", "match", "publish", "route"]


@task
def extract(invoices: list[dict]) -> list[dict]:
    """``extract-invoice-fields`` for each invoice."""
    return intake.extract(invoices)


@task
def match(items: list[dict]) -> list[dict]:
    """Validate the fields, then ``match-vendor`` against the tenant's vendor master."""
    return intake.match(items)


@task
def route(items: list[dict]) -> list[dict]:
    """``route-invoice``: auto-approve, human review or denial, as the policy says."""
    return intake.route(items)


@task
def await_reviews(items: list[dict], wait_s: float) -> list[dict]:
    """Wait up to ``wait_s`` seconds for the reviewers' decisions on this batch."""
    return intake.await_reviews(items, wait_s)


@task
def publish(items: list[dict]) -> list[dict]:
    """One event per invoice through the durable outbox."""
    return intake.publish(items)


@mesh_workflow()
def invoice_intake(invoices: list[dict], review_wait_s: float = 0.0) -> list[dict]:
    """Extract, match, validate, route and publish a batch of invoices; with
    ``review_wait_s`` the run waits that long for human decisions before it publishes."""
    routed = route(items=match(items=extract(invoices=invoices)))
    return publish(items=await_reviews(items=routed, wait_s=review_wait_s))
