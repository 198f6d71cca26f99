"""Filtered vector query latency of the embedded Retrieval default (Qdrant Edge, in-process).

Data: ``--points`` (10k) random vectors of ``--dim`` (384) components from a seeded normal
distribution, one tenant, payload ``{"category": "c0".."c9", "price": 0..100}``. Loaded through
the adapter exactly as the mesh does (``qdrant-edge:///qdrant`` in a temporary folder), in
batches of 1000; no ``optimize()`` call, so the engine searches its plain (brute-force) segment
as it would right after ingestion.

Measured, per query (fresh seeded random query vector, ``limit=10``, after a warm-up):

* ``embedded_filtered_p50_ms`` — adapter ``query()`` with ``category == "c3"`` AND
  ``20 <= price <= 80`` (≈6 % of the points) plus the tenant scope the adapter adds, with the
  filtered fields declared as payload indexes
  (``qdrant-edge:///qdrant?index=category:keyword,price:float``, the documented setup);
* ``embedded_filtered_noindex_p50_ms`` — the same on the bare default URL, no payload index:
  the engine then reads each candidate's payload;
* ``embedded_unfiltered_p50_ms`` — the query without the caller's filter (tenant scope only);
* ``engine_filtered_p50_ms`` — the indexed filtered request straight on the ``EdgeShard``, so
  ``adapter_overhead_us`` is what validation, tenant scoping and result mapping cost.

Writes benchmarks/results/retrieval.json and prints a short table.

Run: python benchmarks/retrieval.py [--points N] [--dim D] [--queries Q]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from aios_mesh.backends import DEFAULT_URLS, load_adapter
from aios_mesh.ports.retrieval import Condition, Filter, Point

RESULTS = Path(__file__).parent / "results" / "retrieval.json"
TENANT = "bench"
COLLECTION = "bench"
FILTER = Filter(must=(Condition("category", "eq", "c3"),
                      Condition("price", "range", gte=20.0, lte=80.0)))


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


INDEXES = "category:keyword,price:float"


async def measure(points: int, dim: int, queries: int, seed: int,
                  url: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((points, dim), dtype=np.float32)
    categories = rng.integers(0, 10, points)
    prices = rng.uniform(0.0, 100.0, points)
    probes = rng.standard_normal((queries, dim), dtype=np.float32).tolist()
    warmup = rng.standard_normal((max(20, queries // 10), dim), dtype=np.float32).tolist()

    with tempfile.TemporaryDirectory(prefix="aios-bench-retrieval-") as tmp:
        adapter = load_adapter("retrieval", url, base_dir=Path(tmp))
        rows = vectors.tolist()
        t0 = time.perf_counter()
        for start in range(0, points, 1000):
            await adapter.upsert(COLLECTION, [
                Point(i, rows[i], {"category": f"c{categories[i]}",
                                   "price": round(float(prices[i]), 2)})
                for i in range(start, min(points, start + 1000))
            ], tenant=TENANT)
        upsert_s = time.perf_counter() - t0

        async def timed(flt: Filter | None, probe_set: list[list[float]]) -> list[float]:
            out = []
            for q in probe_set:
                t = time.perf_counter()
                await adapter.query(COLLECTION, q, tenant=TENANT, limit=10, filter=flt)
                out.append((time.perf_counter() - t) * 1000)
            return out

        await timed(FILTER, warmup)
        filtered = await timed(FILTER, probes)
        unfiltered = await timed(None, probes)
        matches = len(await adapter.query(COLLECTION, probes[0], tenant=TENANT,
                                          limit=points, filter=FILTER))

        # The same request straight on the engine (reaches into the adapter on purpose).
        import qdrant_edge as qe
        from aios_mesh_qdrant_edge.retrieval import _engine_filter

        shard = adapter._collections[COLLECTION].shard
        engine_filter = _engine_filter(TENANT, FILTER)
        engine = []
        for q in probes:
            t = time.perf_counter()
            hits = shard.query(qe.QueryRequest(limit=10, query=qe.Query.Nearest(q),
                                               filter=engine_filter, with_payload=True))
            _ = [h.payload for h in hits]  # payloads convert lazily; the adapter needs them
            engine.append((time.perf_counter() - t) * 1000)
        await adapter.aclose()

    return {
        "filtered_p50_ms": round(statistics.median(filtered), 3),
        "filtered_p95_ms": round(_pct(filtered, 0.95), 3),
        "unfiltered_p50_ms": round(statistics.median(unfiltered), 3),
        "engine_filtered_p50_ms": round(statistics.median(engine), 3),
        "adapter_overhead_us": round(
            (statistics.median(filtered) - statistics.median(engine)) * 1000, 1),
        "filter_matches": matches,
        "upsert_s": round(upsert_s, 3),
    }


async def run(points: int, dim: int, queries: int, seed: int) -> dict[str, Any]:
    base = DEFAULT_URLS["retrieval"]
    indexed = await measure(points, dim, queries, seed, f"{base}?index={INDEXES}")
    bare = await measure(points, dim, queries, seed, base)
    return {
        "embedded_filtered_p50_ms": indexed["filtered_p50_ms"],
        "points": points,
        "dim": dim,
        "embedded_filtered_p95_ms": indexed["filtered_p95_ms"],
        "embedded_filtered_noindex_p50_ms": bare["filtered_p50_ms"],
        "embedded_filtered_noindex_p95_ms": bare["filtered_p95_ms"],
        "embedded_unfiltered_p50_ms": indexed["unfiltered_p50_ms"],
        "engine_filtered_p50_ms": indexed["engine_filtered_p50_ms"],
        "adapter_overhead_us": indexed["adapter_overhead_us"],
        "url": f"{base}?index={INDEXES}",
        "filter": "category == 'c3' AND 20 <= price <= 80 (+ tenant scope)",
        "filter_matches": indexed["filter_matches"],
        "queries": queries,
        "limit": 10,
        "upsert_s": indexed["upsert_s"],
        "seed": seed,
        "qdrant_edge_py": version("qdrant-edge-py"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run(args.points, args.dim, args.queries, args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"retrieval: Qdrant Edge embedded, {result['points']} x {result['dim']}, "
          f"{result['queries']} queries, limit 10, {result['url']}")
    rows = [
        ("filtered query p50 (adapter)", f"{result['embedded_filtered_p50_ms']:.3f} ms"),
        ("filtered query p95 (adapter)", f"{result['embedded_filtered_p95_ms']:.3f} ms"),
        ("filtered p50, no payload index",
         f"{result['embedded_filtered_noindex_p50_ms']:.3f} ms"),
        ("unfiltered query p50 (adapter)", f"{result['embedded_unfiltered_p50_ms']:.3f} ms"),
        ("filtered query p50 (raw engine)", f"{result['engine_filtered_p50_ms']:.3f} ms"),
        ("adapter overhead", f"{result['adapter_overhead_us']:.1f} us"),
        ("points matching the filter", str(result["filter_matches"])),
        ("upsert (batches of 1000)", f"{result['upsert_s']:.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>12}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
