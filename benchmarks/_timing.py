"""Timing helpers shared by the benchmarks: percentiles and interleaved latency samples."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = ["interleaved", "pct", "ratio_trials"]


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest-rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def interleaved(paths: Mapping[str, Callable[[], Awaitable[Any]]], rounds: int
                      ) -> dict[str, list[float]]:
    """Latency samples in µs: each round calls every path once, in an order that rotates.

    Comparing p50s of two paths measured in separate blocks mixes the difference with
    whatever the machine did meanwhile (on a 2-core host with the server on it, block-to-block
    drift is as large as the effect). One call of each path per round puts them under the same
    conditions; rotating the order keeps any "goes first after the other" effect off both.
    """
    names = list(paths)
    out: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            fn = paths[name]
            t = clock()
            await fn()
            out[name].append((clock() - t) * 1e6)
    return out


async def ratio_trials(paths: Mapping[str, Callable[[], Awaitable[Any]]], rounds: int,
                       trials: int, *, num: str = "mesh", den: str = "raw"
                       ) -> tuple[dict[str, list[float]], list[float]]:
    """``trials`` runs of :func:`interleaved`: the pooled samples of every path, and each
    trial's p50(``num``) / p50(``den``) — how much the ratio moves from one run to the next
    on this host (on a shared 2-core VM, more than the mesh's own cost changes)."""
    pooled: dict[str, list[float]] = {name: [] for name in paths}
    ratios: list[float] = []
    for _ in range(trials):
        samples = await interleaved(paths, rounds)
        for name, values in samples.items():
            pooled[name] += values
        ratios.append(round(statistics.median(samples[num]) / statistics.median(samples[den]),
                            3))
    return pooled, ratios
