"""Bulk enrichment on Ray Data: every row of a Ray Dataset through a capability, in Ray
workers, each row exactly once (:func:`aios_mesh.scale.rows.map_rows`).

::

    import ray
    from aios_mesh.scale import MeshFactory, map_dataset, write_results

    ds = ray.data.read_json("invoices.jsonl")            # each row has an "id"
    out = map_dataset(ds, MeshFactory("mesh.toml", app="invoices.app:CAPABILITIES"),
                      "extract-invoice", job_id="nightly-2026-12-07", tenant="acme")
    write_results(out, "out/", format="parquet")        # id, record_id, outcome, output, error

Each Ray worker (an actor of ``map_batches``) builds its own :class:`~aios_mesh.Mesh` from
the factory once and runs its blocks through it: policy, quotas, redaction and records are
the mesh's, as for any call. The row ledger and the records live where the mesh's config
puts its state (``[backends] state``/``audit``): on one machine the state folder; across
nodes a PostgreSQL every node reaches. Ray is imported only when these functions run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aios_mesh.errors import ConfigError
from aios_mesh.scale.ledger import RowLedger
from aios_mesh.scale.rows import RESULT_FIELDS, map_rows

if TYPE_CHECKING:
    from aios_mesh.mesh import Mesh

__all__ = ["MeshFactory", "MeshRows", "map_dataset", "write_results"]


@dataclass(frozen=True)
class MeshFactory:
    """Builds the mesh a Ray worker runs rows through (picklable: a config path and the
    capabilities as ``module:attr``, or a module-level ``build`` function).

    Args:
        config: the mesh's TOML config (absolute, or relative to the worker's cwd).
        app: ``module:attr`` naming the capabilities (a list of ``CapabilitySpec``).
        build: instead of ``config``/``app``: ``module:function`` returning a Mesh.
        args: arguments of ``build``.
    """

    config: str | None = None
    app: str | None = None
    build: str | None = None
    args: tuple[Any, ...] = field(default=())

    def __call__(self) -> Mesh:
        from aios_mesh.capabilities import import_object
        from aios_mesh.config import load_config
        from aios_mesh.mesh import Mesh

        if self.build is not None:
            mesh = import_object(self.build)(*self.args)
            if not isinstance(mesh, Mesh):
                raise ConfigError(f"{self.build} returned {type(mesh).__name__}, not a Mesh",
                                  hint="return aios_mesh.Mesh(...)")
            return mesh
        if self.config is None or self.app is None:
            raise ConfigError("MeshFactory needs config and app, or build",
                              hint='MeshFactory("mesh.toml", app="pkg.app:CAPABILITIES")')
        return Mesh(load_config(Path(self.config)), capabilities=import_object(self.app))


class MeshRows:
    """The ``map_batches`` callable: one mesh, one event loop and one ledger per Ray
    worker; a batch (a ``pyarrow.Table``) in, a table of results out."""

    def __init__(self, factory: Callable[[], Mesh], capability: str, job_id: str,
                 tenant: str, id_field: str, concurrency: int, force: bool = False,
                 tenant_field: str | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.mesh = factory()
        self.ledger = RowLedger(self.mesh.state)
        # the job is answered by one capability version (a changed one: refused unless
        # forced, and then recorded on the job)
        self.ledger.begin(job_id, self.mesh.catalog.get(capability).key, force=force)
        self.args = (capability, job_id, tenant, id_field, concurrency)
        self.tenant_field = tenant_field

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]  # no py.typed

        capability, job_id, tenant, id_field, concurrency = self.args
        results = self.loop.run_until_complete(map_rows(
            self.mesh, capability, batch.to_pylist(), job_id=job_id, ledger=self.ledger,
            tenant=tenant, id_field=id_field, concurrency=concurrency,
            tenant_field=self.tenant_field))
        columns = {name: [r[name] for r in results] for name in RESULT_FIELDS}
        columns["id"] = [None if v is None else str(v) for v in columns["id"]]
        return pa.table(columns, schema=pa.schema([(n, pa.string()) for n in RESULT_FIELDS]))

    def __del__(self) -> None:  # a Ray worker going away: release what it holds
        try:
            self.ledger.close()
            self.loop.run_until_complete(self.mesh.aclose())
            self.loop.close()
        except Exception:  # best effort: the worker is going away
            pass


def map_dataset(dataset: Any, factory: Callable[[], Mesh], capability: str, *, job_id: str,
                tenant: str, id_field: str = "id", batch_size: int = 256, workers: int = 1,
                concurrency: int = 8, num_cpus: float = 1.0, force: bool = False,
                ray_remote_args: Mapping[str, Any] | None = None,
                tenant_field: str | None = None) -> Any:
    """A Dataset of results, one per input row (lazy, as Ray Data is: it runs when read
    or written). ``workers`` Ray actors each build a mesh with ``factory``; each runs
    ``concurrency`` calls at once. Resuming ``job_id`` with another version of the
    capability raises :class:`~aios_mesh.scale.ledger.JobVersionChanged` unless ``force``
    (the change is then recorded on the job). ``ray_remote_args`` go to the workers'
    actors (e.g. ``{"scheduling_strategy": "SPREAD"}`` to place them on every node). With
    ``tenant_field``, one job carries rows of many tenants, each row called as its own
    tenant (``tenant`` for rows that name none): a tenant that spends its quota is refused
    alone, the others' rows go on."""
    return dataset.map_batches(
        MeshRows, batch_format="pyarrow", batch_size=batch_size, concurrency=workers,
        num_cpus=num_cpus, **dict(ray_remote_args or {}),
        fn_constructor_args=(factory, capability, job_id, tenant, id_field, concurrency,
                             force, tenant_field))


def write_results(results: Any, path: str | Path,
                  format: Literal["jsonl", "parquet"] = "jsonl") -> list[Path]:
    """Write a results Dataset under the folder ``path`` (Ray writes one file per block);
    returns the files written."""
    folder = Path(path)
    if format == "parquet":
        results.write_parquet(str(folder))
        suffix: Sequence[str] = (".parquet",)
    elif format == "jsonl":
        results.write_json(str(folder))
        suffix = (".json", ".jsonl")
    else:
        raise ConfigError(f"unknown results format {format!r}", hint="use jsonl or parquet")
    return sorted(p for p in folder.iterdir() if p.suffix in suffix)
