"""Train the example's two models on generated data and publish them to the model registry.

Nothing is downloaded: the extractor learns from :func:`~examples.invoice_intake.corpus.
training_corpus` (a different seed than the invoices the intake processes) and the embedder
from the vendor masters plus the names as printed on training invoices. Both are logged to an
MLflow run (with their holdout metrics), registered, and given the alias ``champion`` — the
alias the capabilities ask for.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aios_mesh.ports.registry import ModelRef
from examples.invoice_intake.corpus import TENANTS, training_corpus, vendor_master

__all__ = ["EMBEDDER", "EXPERIMENT", "EXTRACTOR", "Trained", "publish", "train"]

EXTRACTOR = "invoice-extractor"
EMBEDDER = "vendor-embedder"
EXPERIMENT = "invoice-intake"


@dataclass
class Trained:
    """The trained models, what they were trained on, and how they did on held-out data."""

    extractor: Any
    embedder: Any
    holdout: dict[str, float]
    samples: list[str]
    training_invoices: int
    vendor_names: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def train(n: int = 1500) -> Trained:
    """Fit the extractor on ``n`` generated invoices and the embedder on vendor names."""
    from examples.invoice_intake.extractor import train_embedder, train_extractor

    invoices = training_corpus(n)
    extractor, holdout = train_extractor(invoices)
    masters = {tenant: [(v.id, v.name) for v in vendor_master(tenant)] for tenant in TENANTS}
    names = [name for rows in masters.values() for _, name in rows]
    names += [inv.truth.vendor_name for inv in invoices]
    embedder = train_embedder(names)
    return Trained(extractor, embedder, holdout, [inv.text for inv in invoices[:8]],
                   len(invoices), masters)


async def publish(registry: Any, trained: Trained, *, alias: str = "champion"
                  ) -> dict[str, ModelRef]:
    """Save both models as MLflow pyfunc folders, log and register them, move ``alias``."""
    from examples.invoice_intake.extractor import save_embedder, save_extractor

    refs: dict[str, ModelRef] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / EXTRACTOR
        save_extractor(trained.extractor, folder, trained.samples)
        refs[EXTRACTOR] = await registry.publish_model(
            folder, EXTRACTOR, alias=alias, experiment=EXPERIMENT,
            params={"training_invoices": trained.training_invoices},
            metrics={f"holdout_{k}": v for k, v in trained.holdout.items()})
        folder = Path(tmp) / EMBEDDER
        names = [name for rows in trained.vendor_names.values() for _, name in rows]
        save_embedder(trained.embedder, folder, names[:8])
        refs[EMBEDDER] = await registry.publish_model(
            folder, EMBEDDER, alias=alias, experiment=EXPERIMENT,
            params={"vendors": len(names)})
    return refs
