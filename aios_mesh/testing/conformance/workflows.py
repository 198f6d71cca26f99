"""Tiny flytekit workflows for the Orchestrator conformance suite.

This module imports ``flytekit`` — only the Orchestrator kit and tests import it, never
``aios_mesh`` itself. Refer to them as ``"aios_mesh.testing.conformance.workflows:add_wf"``.

* ``add_wf(a, b) -> int`` — one output (Flyte names it ``o0``);
* ``divmod_wf(a, b) -> (quotient, remainder)`` — two named outputs;
* ``failing_wf(message) -> int`` — its task raises ``ValueError(message)``;
* ``slow_wf(seconds) -> str`` — sleeps, for submit/status;
* ``cached_square_wf(x) -> int`` — a cached task, to check where the local cache lives.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from flytekit import task, workflow

__all__ = [
    "DivMod",
    "add",
    "add_wf",
    "cached_square",
    "cached_square_wf",
    "divmod_task",
    "divmod_wf",
    "explode",
    "failing_wf",
    "slow",
    "slow_wf",
]


class DivMod(NamedTuple):
    quotient: int
    remainder: int


@task  # type: ignore[untyped-decorator]
def add(a: int, b: int) -> int:
    """a + b."""
    return a + b


@task  # type: ignore[untyped-decorator]
def divmod_task(a: int, b: int) -> DivMod:
    """Quotient and remainder of a / b."""
    return DivMod(a // b, a % b)


@task  # type: ignore[untyped-decorator]
def explode(message: str) -> int:
    """Raises ``ValueError(message)`` (returns 0 only for an empty message)."""
    if message:
        raise ValueError(message)
    return 0


@task  # type: ignore[untyped-decorator]
def slow(seconds: float) -> str:
    """Sleep ``seconds`` and say so."""
    time.sleep(seconds)
    return f"slept {seconds}"


@task(cache=True, cache_version="1")  # type: ignore[untyped-decorator]
def cached_square(x: int) -> int:
    """x², cached by flytekit's local cache."""
    return x * x


@workflow  # type: ignore[untyped-decorator]
def add_wf(a: int, b: int) -> int:
    """One output: ``{"o0": a + b}``."""
    return add(a=a, b=b)  # type: ignore[no-any-return]


@workflow  # type: ignore[untyped-decorator]
def divmod_wf(a: int, b: int) -> DivMod:
    """Two named outputs: ``{"quotient": ..., "remainder": ...}``."""
    return divmod_task(a=a, b=b)  # type: ignore[no-any-return]


@workflow  # type: ignore[untyped-decorator]
def failing_wf(message: str = "boom") -> int:
    """Fails with ``ValueError(message)``."""
    return explode(message=message)  # type: ignore[no-any-return]


@workflow  # type: ignore[untyped-decorator]
def slow_wf(seconds: float = 0.3) -> str:
    """Takes ``seconds``."""
    return slow(seconds=seconds)  # type: ignore[no-any-return]


@workflow  # type: ignore[untyped-decorator]
def cached_square_wf(x: int) -> int:
    """x², through a cached task."""
    return cached_square(x=x)  # type: ignore[no-any-return]
