"""Scale-out: a job's rows through a capability on many workers, each row exactly once.

* :mod:`aios_mesh.scale.ledger` — the per-row ledger (shared-state seam) and record ids;
* :mod:`aios_mesh.scale.rows` — :func:`map_rows`, the exactly-once row protocol on one mesh;
* :mod:`aios_mesh.scale.ray_data` — :func:`map_dataset` over a Ray Dataset (Ray imported only
  when it runs; ``pip install "aios-mesh[ray]"``), :func:`write_results` (JSONL/Parquet).

See ``docs/guides/scale-out.md``.
"""

from aios_mesh.scale.ledger import JobVersionChanged, RowLedger, row_record_id
from aios_mesh.scale.ray_data import MeshFactory, MeshRows, map_dataset, write_results
from aios_mesh.scale.rows import RESULT_FIELDS, map_rows

__all__ = ["RESULT_FIELDS", "JobVersionChanged", "MeshFactory", "MeshRows", "RowLedger",
           "map_dataset", "map_rows", "row_record_id", "write_results"]
