"""Two versions of a tiny pyfunc model, logged to a real MLflow server and served in-process
from its artifacts (tests/integration/test_rollout_mlflow.py)."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd
from pydantic import BaseModel


class Question(BaseModel):
    text: str


class Answer(BaseModel):
    text: str


class Shout(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """v1 upper-cases every question; v2 (``only_short``) only those under four characters,
    so the two agree on some questions and ``compare`` has something to report."""

    def __init__(self, only_short: bool = False) -> None:
        self.only_short = only_short

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        texts = model_input["text"]
        shouted = texts.str.upper()
        if self.only_short:
            shouted = shouted.where(texts.str.len() < 4, texts)
        return pd.DataFrame({"text": shouted})
