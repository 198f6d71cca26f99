"""The learned invoice extractor and the vendor-name embedder, in-process and as MLflow pyfunc
models loaded where the `examples` package is not importable."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.invoice_intake.corpus import (
    TENANTS,
    _fmt_date,
    _fmt_number,
    make_corpus,
    training_corpus,
    vendor_master,
)
from examples.invoice_intake.extractor import (
    DIM,
    FIELDS,
    Embedder,
    Extractor,
    accuracy,
    parse_amount,
    parse_date,
    save_embedder,
    save_extractor,
    train_embedder,
    train_extractor,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained() -> tuple[Extractor, dict[str, float]]:
    return train_extractor(training_corpus())


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return train_embedder([v.name for t in TENANTS for v in vendor_master(t)])


@settings(max_examples=200, deadline=None)
@given(cents=st.integers(min_value=1, max_value=10**9),
       currency=st.sampled_from(["USD", "EUR", "JPY"]),
       style=st.sampled_from(["us", "eu", "plain"]))
def test_parse_amount_round_trips(cents: int, currency: str, style: str) -> None:
    value = float(cents // 100) if currency == "JPY" else cents / 100
    assert parse_amount(_fmt_number(value, currency, style)) == pytest.approx(value)


@settings(max_examples=200, deadline=None)
@given(days=st.integers(min_value=0, max_value=20000),
       fmt=st.sampled_from(["iso", "dmy_slash", "dmy_dot", "long_dmy", "long_mdy"]))
def test_parse_date_round_trips(days: int, fmt: str) -> None:
    d = date(1990, 1, 1) + timedelta(days=days)
    assert parse_date(f"dated {_fmt_date(d, fmt)} ok") == d.isoformat()


def test_holdout_accuracy(trained: tuple[Extractor, dict[str, float]]) -> None:
    _, holdout = trained
    assert set(holdout) == set(FIELDS)
    assert all(acc >= 0.85 for acc in holdout.values()), holdout


def test_accuracy_on_the_evaluation_corpus(trained: tuple[Extractor, dict[str, float]]) -> None:
    extractor, _ = trained
    clean = [inv for inv in make_corpus(540) if not inv.malformed]
    acc = accuracy(extractor, clean)
    print("make_corpus(540) non-malformed accuracy:", acc)
    for field in ("invoice_number", "invoice_date", "currency", "total"):
        assert acc[field] >= 0.8, acc
    assert acc["vendor_name"] >= 0.8, acc
    # the OCR-noisy invoices are the hard ones: a confused digit in a value cannot be read back
    noisy = [inv for inv in clean if inv.noise]
    quiet = [inv for inv in clean if not inv.noise]
    acc_noisy, acc_quiet = accuracy(extractor, noisy), accuracy(extractor, quiet)
    print("noisy:", acc_noisy, "noise-free:", acc_quiet)
    for field in ("invoice_number", "invoice_date", "total"):
        assert acc_quiet[field] >= 0.9, acc_quiet
        assert acc_noisy[field] < acc_quiet[field], (acc_noisy, acc_quiet)
    garbled = [inv for inv in clean if "ocr_total" in inv.noise]
    assert garbled and accuracy(extractor, garbled)["total"] < 0.9


def test_extract_output_shape(trained: tuple[Extractor, dict[str, float]]) -> None:
    extractor, _ = trained
    inv = make_corpus(5)[0]
    got = extractor.extract(inv.text)
    assert list(got) == [*FIELDS, "confidence"]
    assert isinstance(got["total"], float)
    assert 0.0 <= got["confidence"] <= 1.0
    empty = extractor.extract("")
    assert all(empty[f] is None for f in FIELDS)
    assert empty["confidence"] == 0.0
    # the letter layout's wording (a bare "for $1,440.00" is too far from anything trained on)
    text = ("Nordic Paper AB\nPlease find our invoice 4471 dated 5 March 2024 for the amount "
            "of $1,440.00.\n")
    got = extractor.extract(text)
    assert (got["invoice_number"], got["invoice_date"], got["currency"], got["total"]) == (
        "4471", "2024-03-05", "USD", 1440.0)


def test_malformed_invoices_lose_confidence(trained: tuple[Extractor, dict[str, float]]) -> None:
    extractor, _ = trained
    corpus = make_corpus(540)
    clean = [extractor.extract(i.text)["confidence"] for i in corpus if not i.malformed]
    broken = [extractor.extract(i.text)["confidence"] for i in corpus if i.malformed]
    assert sum(broken) / len(broken) < sum(clean) / len(clean)


def test_extractor_pickles(trained: tuple[Extractor, dict[str, float]]) -> None:
    extractor, _ = trained
    text = make_corpus(3)[1].text
    assert pickle.loads(pickle.dumps(extractor)).extract(text) == extractor.extract(text)


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embedder(embedder: Embedder) -> None:
    names = ["Nordic Paper AB", "Nordic Papers AB", "Acme Supply Ltd", "ACME SUPPLIES LTD"]
    vecs = embedder.embed(names)
    assert all(len(v) == DIM and math.isclose(cos(v, v), 1.0) for v in vecs)
    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2])
    assert cos(vecs[2], vecs[3]) > cos(vecs[2], vecs[0])
    again = train_embedder([v.name for t in reversed(TENANTS) for v in vendor_master(t)])
    assert again.embed(names) == vecs
    assert embedder.embed([]) == []


def test_embedder_finds_the_vendor_of_a_printed_variant(embedder: Embedder) -> None:
    hits = total = 0
    for inv in make_corpus(200):
        master = vendor_master(inv.tenant)
        vecs = embedder.embed([v.name for v in master])
        q = embedder.embed([inv.truth.vendor_name])[0]
        best = max(range(len(master)), key=lambda i: cos(q, vecs[i]))
        hits += master[best].id == inv.truth.vendor_id
        total += 1
    print("vendor top-1 from printed name:", hits / total)
    assert hits / total >= 0.85


def run_outside_repo(code: str, cwd: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_saved_models_load_without_the_examples_package(
        trained: tuple[Extractor, dict[str, float]], embedder: Embedder, tmp_path: Path) -> None:
    import mlflow.pyfunc
    import pandas as pd

    extractor, _ = trained
    texts = [inv.text for inv in make_corpus(4)] + ["", "garbage ### 12"]
    save_extractor(extractor, tmp_path / "extractor", texts)
    save_embedder(embedder, tmp_path / "embedder", ["Nordic Paper AB", "Acme Supply Ltd"])
    names = ["Nordic Paper AB", "Nordic Papers AB", "ACME SUPPLY LTD"]

    frame = pd.DataFrame({"text": texts})
    local_ex = mlflow.pyfunc.load_model(str(tmp_path / "extractor")).predict(frame)
    assert list(local_ex.columns) == [*FIELDS, "confidence"]
    assert local_ex["confidence"].dtype == "float64"
    assert local_ex["total"].iloc[-2] is None
    local_em = mlflow.pyfunc.load_model(str(tmp_path / "embedder")).predict(
        pd.DataFrame({"text": names}))
    assert local_em["vector"].tolist() == embedder.embed(names)

    code = f"""
import importlib.util, json
assert importlib.util.find_spec("examples") is None, "examples must not be importable here"
import mlflow.pyfunc, pandas as pd
ex = mlflow.pyfunc.load_model("extractor").predict(pd.DataFrame({{"text": {texts!r}}}))
em = mlflow.pyfunc.load_model("embedder").predict(pd.DataFrame({{"text": {names!r}}}))
print(json.dumps({{"ex": json.loads(ex.to_json()), "em": json.loads(em.to_json())}}))
"""
    remote = run_outside_repo(code, tmp_path)
    assert remote["ex"] == json.loads(local_ex.to_json())
    assert remote["em"] == json.loads(local_em.to_json())
    assert remote["ex"]["invoice_number"]["0"] == extractor.extract(texts[0])["invoice_number"]
