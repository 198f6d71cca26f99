"""Train the demo's ticket classifier and its embedder on generated data (no downloads), and
register the classifier in the MLflow registry under an alias."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from aios_mesh.ports.registry import ModelRef

__all__ = ["embed", "register_model", "train_classifier"]

DIM = 256


def train_classifier(texts: list[str], labels: list[str]) -> tuple[Any, float]:
    """TF-IDF + logistic regression over the ``text`` column; returns (pipeline, holdout acc)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    split = int(len(texts) * 0.8)
    frame = pd.DataFrame({"text": texts})
    pipe = Pipeline([
        ("features", ColumnTransformer([("tfidf", TfidfVectorizer(ngram_range=(1, 2),
                                                                  min_df=2), "text")])),
        ("clf", LogisticRegression(max_iter=500, C=0.5)),
    ])
    pipe.fit(frame.iloc[:split], labels[:split])
    accuracy = float((pipe.predict(frame.iloc[split:]) == labels[split:]).mean())
    return pipe, accuracy


def embed(texts: list[str]) -> list[list[float]]:
    """A deterministic hashing embedder (256 dims, L2-normalised): no weights to download."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(n_features=DIM, alternate_sign=False, norm="l2",
                            ngram_range=(1, 2))
    return [list(map(float, row)) for row in vec.transform(texts).toarray()]


async def register_model(registry: Any, pipeline: Any, *, name: str, alias: str,
                         sample: list[str]) -> ModelRef:
    """Save the pipeline as an MLflow model, log it to a run, register a version, move the
    alias to it. Uses explicit tracking URIs only (no global MLflow state)."""
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    frame = pd.DataFrame({"text": sample})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        mlflow.sklearn.save_model(pipeline, folder,
                                  signature=infer_signature(frame, pipeline.predict(frame)))
        ref: ModelRef = await registry.publish_model(folder, name, alias=alias,
                                                     experiment="aios-mesh-demo")
    return ref
