"""Small statistics the lifecycle modules share (one definition of each)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["p95"]


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile (``statistics.quantiles``, inclusive method); the value itself for
    one value, ``None`` for none.

    >>> p95([1.0, 2.0, 3.0, 4.0, 100.0])
    80.8
    """
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=20, method="inclusive")[-1]
