"""Train the job's two classical models on generated tickets and publish them as ``champion``.

* ``ticket-classifier``: TF-IDF (words and character n-grams) + logistic regression over
  :data:`~examples.support_triage.corpus.CATEGORIES`; answers ``{category, confidence}``.
* ``kb-embedder``: the invoice job's character n-gram embedder
  (:func:`examples.invoice_intake.extractor.train_embedder`, a generic TF-IDF + SVD text
  embedder), fitted on the knowledge bases and training tickets; it embeds articles for the
  tenant-scoped index and questions at query time.

Both are logged to an MLflow run with their holdout metrics, registered and aliased
``champion`` through the registry port's ``publish_model``.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aios_mesh.ports.registry import ModelRef
from examples.support_triage.corpus import TENANTS, knowledge_base, training_tickets

__all__ = ["CLASSIFIER", "EMBEDDER", "EXPERIMENT", "Classifier", "Trained", "publish",
           "train"]

CLASSIFIER = "ticket-classifier"
EMBEDDER = "kb-embedder"
EXPERIMENT = "support-triage"


class Classifier:
    """A fitted text classifier: :meth:`classify` gives ``{category, confidence}``."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        probs = self.pipeline.predict_proba(texts)
        labels = self.pipeline.classes_
        return [{"category": str(labels[row.argmax()]), "confidence": float(row.max())}
                for row in probs]


@dataclass
class Trained:
    """The trained models and how the classifier did on held-out tickets."""

    classifier: Classifier
    embedder: Any
    holdout_accuracy: float
    training_tickets: int
    samples: list[str] = field(default_factory=list)


def train(n: int = 1200) -> Trained:
    """Fit the classifier on ``n`` generated tickets (80 % train, 20 % holdout) and the
    embedder on every tenant's articles plus the training tickets."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    from examples.invoice_intake.extractor import train_embedder

    tickets = training_tickets(n)
    cut = int(len(tickets) * 0.8)
    texts = [t.text for t in tickets]
    labels = [t.truth.category for t in tickets]
    features = FeatureUnion([("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
                             ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5),
                                                       sublinear_tf=True))])
    pipeline = make_pipeline(features, LogisticRegression(max_iter=2000, C=4.0))
    pipeline.fit(texts[:cut], labels[:cut])
    accuracy = float(pipeline.score(texts[cut:], labels[cut:]))
    articles = [a.text for tenant in TENANTS for a in knowledge_base(tenant)]
    embedder = train_embedder(articles + texts[:cut])
    return Trained(Classifier(pipeline), embedder, accuracy, len(tickets), texts[:4])


def _classifier_model(classifier: Classifier) -> Any:
    import mlflow.pyfunc

    class ClassifierModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        """pyfunc: DataFrame["text"] -> DataFrame["category", "confidence"]."""

        def __init__(self, model: Classifier) -> None:
            self.model = model

        # no type hints on predict: MLflow would try (and fail) to derive a schema from them
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            import pandas as pd

            rows = self.model.classify([str(t) for t in model_input["text"]])
            return pd.DataFrame(rows, columns=["category", "confidence"])

    return ClassifierModel(classifier)


def _save_classifier(classifier: Classifier, path: Path, samples: list[str]) -> None:
    import cloudpickle  # type: ignore[import-untyped]
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    # by value: the model loads where the `examples` package is not importable
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    mlflow.pyfunc.save_model(
        str(path), python_model=_classifier_model(classifier),
        signature=ModelSignature(inputs=Schema([ColSpec("string", "text")])),
        input_example=pd.DataFrame({"text": samples[:2] or [""]}))


async def publish(registry: Any, trained: Trained, *, alias: str = "champion"
                  ) -> dict[str, ModelRef]:
    """Save both models as MLflow pyfunc folders, log and register them, move ``alias``."""
    from examples.invoice_intake.extractor import save_embedder

    refs: dict[str, ModelRef] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / CLASSIFIER
        _save_classifier(trained.classifier, folder, trained.samples)
        refs[CLASSIFIER] = await registry.publish_model(
            folder, CLASSIFIER, alias=alias, experiment=EXPERIMENT,
            params={"training_tickets": trained.training_tickets},
            metrics={"holdout_accuracy": trained.holdout_accuracy})
        folder = Path(tmp) / EMBEDDER
        save_embedder(trained.embedder, folder, trained.samples)
        refs[EMBEDDER] = await registry.publish_model(folder, EMBEDDER, alias=alias,
                                                      experiment=EXPERIMENT)
    return refs
