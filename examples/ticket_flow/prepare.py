"""Prepare the ticket_flow example's state: train and register the ticket classifier, index the
help articles, copy the demo policies and write the lock file.

    python examples/ticket_flow/prepare.py [--config examples/ticket_flow/aios-mesh.toml]

Running it again registers a new model version, moves ``ticket-classifier@champion`` to it and
re-locks — the next workflow run resolves the new version, and Flyte's cache key for the
classification task changes with it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from aios_mesh.demo import _copy_policies
from aios_mesh.demo.capabilities import CLASSIFY, RETRIEVE, index_kb
from aios_mesh.demo.data import training_set
from aios_mesh.demo.model import register_model, train_classifier
from aios_mesh.mesh import Mesh
from aios_mesh.ports.registry import ModelRef

__all__ = ["DEFAULT_CONFIG", "config_path", "prepare"]

DEFAULT_CONFIG = Path(__file__).with_name("aios-mesh.toml")


def config_path(given: str | None = None) -> Path:
    """``--config`` > ``$AIOS_MESH_CONFIG`` > the example's own aios-mesh.toml."""
    return Path(given or os.environ.get("AIOS_MESH_CONFIG") or DEFAULT_CONFIG)


def prepare(mesh: Mesh, *, index: bool = True, seed: int = 11) -> ModelRef:
    """Train on generated tickets, register a version as ``ticket-classifier@champion``,
    index the KB (idempotent) and lock. Returns the registered version."""
    _copy_policies(mesh.config.state_path)
    texts, labels = training_set(seed=seed)
    pipeline, _accuracy = train_classifier(texts, labels)
    ref: ModelRef = mesh.run_sync(register_model(
        mesh.port("registry"), pipeline, name="ticket-classifier", alias="champion",
        sample=texts[:20]))
    if index:
        mesh.run_sync(index_kb(mesh.port("retrieval")))
    mesh.lock()
    return ref


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", help="mesh config (default: $AIOS_MESH_CONFIG or the "
                                         "example's aios-mesh.toml)")
    parser.add_argument("--seed", type=int, default=11, help="training data seed")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    config = config_path(args.config)
    with Mesh.from_config(config, capabilities=[CLASSIFY, RETRIEVE]) as mesh:
        ref: Any = prepare(mesh, seed=args.seed)
        print(f"ticket-classifier v{ref.version} is champion; state in "
              f"{mesh.config.state_path}; lock {mesh.config.lock_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
