"""What a call returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from aios_mesh.record import DecisionRecord

__all__ = ["Result"]

OutT = TypeVar("OutT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Result(Generic[OutT]):
    """What a call returns: the typed output (None while a human reviews it) and its record."""

    output: OutT | None
    record: DecisionRecord

    @property
    def needs_review(self) -> bool:
        return self.record.outcome == "review"

    @property
    def review_id(self) -> str | None:
        return self.record.review_id
