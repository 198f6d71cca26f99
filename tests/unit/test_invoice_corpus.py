"""The synthetic invoice corpus: deterministic, self-consistent ground truth, realistic mix."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from examples.invoice_intake.corpus import (
    CURRENCIES,
    LAYOUTS,
    NOISE_KINDS,
    TENANTS,
    Invoice,
    make_corpus,
    training_corpus,
    vendor_master,
)

REPO = Path(__file__).resolve().parents[2]
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


def amounts_in(text: str) -> set[float]:
    """Every number in the text read both ways (1,440.00 and 1.440,00), also with spaces as
    thousands separators (1 440,00)."""
    out: set[float] = set()
    joined = re.sub(r"(?<=\d) (?=\d{3}(?!\d))", "", text)
    for tok in re.findall(r"\d[\d.,]*\d|\d", f"{text}\n{joined}"):
        for s in (tok.replace(",", ""), tok.replace(".", "").replace(",", ".")):
            try:
                out.add(round(float(s), 2))
            except ValueError:
                pass
    return out


def date_spellings(iso: str) -> list[str]:
    y, m, d = (int(x) for x in iso.split("-"))
    return [iso, f"{d:02d}/{m:02d}/{y}", f"{d:02d}.{m:02d}.{y}", f"{d} {MONTHS[m - 1]} {y}",
            f"{MONTHS[m - 1]} {d}, {y}"]


def digest(invoices: list[Invoice]) -> str:
    return hashlib.sha256(repr(invoices).encode()).hexdigest()


EMAIL_RE = re.compile(r"\b[a-z]+\.[a-z]+@[a-z]+\.(?:com|example|co)\b")
PHONE_RE = re.compile(r"\+\d{1,3} \d{2} \d{4} \d{4}\b")


def check_consistent(inv: Invoice) -> None:
    masters = {v.id: v for v in vendor_master(inv.tenant)}
    t = inv.truth
    noise = set(inv.noise)
    assert t.vendor_id in masters
    assert noise <= set(NOISE_KINDS) and len(noise) == len(inv.noise)
    # the truth is what was meant: OCR noise inside a field's printed value leaves it alone
    if "ocr_name" not in noise:
        assert t.vendor_name in inv.text
    assert inv.layout in LAYOUTS
    assert set(inv.pii) <= {"email", "phone", "iban", "person"}
    if "iban" in inv.pii:
        assert masters[t.vendor_id].iban
    if inv.malformed:
        return
    # PII is never garbled by noise, so regex redaction still finds it
    if "email" in inv.pii:
        assert EMAIL_RE.search(inv.text)
    if "phone" in inv.pii:
        assert PHONE_RE.search(inv.text)
    if "iban" in inv.pii and inv.layout != "compact":  # receipts print no bank details
        assert masters[t.vendor_id].iban in inv.text
    assert t.invoice_number is not None
    if "ocr_invoice_number" not in noise:
        assert t.invoice_number in inv.text
    assert t.invoice_date is not None
    if "ocr_date" not in noise:
        assert any(s in inv.text for s in date_spellings(t.invoice_date))
    assert t.currency in CURRENCIES
    assert t.total is not None and t.total > 0
    if "ocr_total" not in noise:  # the printed total parses back
        assert round(t.total, 2) in amounts_in(inv.text)
    if t.currency == "JPY":
        assert t.total == int(t.total)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=1, max_value=60), seed=st.integers(0, 2**32 - 1))
def test_corpus_is_deterministic_and_consistent(n: int, seed: int) -> None:
    corpus = make_corpus(n, seed=seed)
    assert corpus == make_corpus(n, seed=seed)
    assert len(corpus) == n
    ids = [inv.id for inv in corpus]
    assert len(set(ids)) == n
    assert all(re.fullmatch(rf"{inv.tenant}-\d{{4}}", inv.id) for inv in corpus)
    for inv in corpus:
        check_consistent(inv)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(min_value=1, max_value=40), seed=st.integers(0, 2**32 - 1))
def test_training_corpus_ids_are_disjoint(n: int, seed: int) -> None:
    train = training_corpus(n, seed=seed)
    assert all(inv.id.startswith("train-") for inv in train)
    assert not {i.id for i in train} & {i.id for i in make_corpus(n)}
    for inv in train:
        check_consistent(inv)


def test_corpus_is_identical_in_another_process() -> None:
    code = ("import hashlib; from examples.invoice_intake.corpus import make_corpus;"
            "print(hashlib.sha256(repr(make_corpus(540)).encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(REPO),
                                                     "PYTHONHASHSEED": "123"})
    assert out.stdout.strip() == digest(make_corpus(540))


def test_evaluation_corpus_mix() -> None:
    corpus = make_corpus(540)
    n = len(corpus)
    tenants = Counter(inv.tenant for inv in corpus)
    assert set(tenants) == set(TENANTS)
    assert min(tenants.values()) >= 60
    assert set(Counter(inv.layout for inv in corpus)) == set(LAYOUTS)
    assert 0.15 <= sum(bool(inv.pii) for inv in corpus) / n <= 0.35
    malformed = [inv for inv in corpus if inv.malformed]
    assert 0.02 <= len(malformed) / n <= 0.10
    assert any(inv.truth.total is None for inv in malformed)
    noisy = [inv for inv in corpus if inv.noise]
    assert 0.08 <= len(noisy) / n <= 0.18
    assert {k for inv in noisy for k in inv.noise} == set(NOISE_KINDS)
    big = sum(1 for inv in corpus if inv.truth.total and inv.truth.total > 10_000)
    assert 0.10 <= big / n <= 0.20
    assert {inv.truth.currency for inv in corpus if not inv.malformed} == set(CURRENCIES)
    assert any(inv.truth.vendor_name.isupper() for inv in corpus)
    text = "\n".join(inv.text for inv in corpus)
    for needle in ("Gesamtbetrag", "TOTAL TTC", "Balance due", "Subtotal", "PO Number",
                   "Please find our invoice", "¥", "£", "€", "$", "CHF", "Amount paid",
                   "Previous balance", "Delivery Date", "CHANGE"):
        assert needle in text
    assert re.search(r"\b\d{1,3} \d{3},\d{2} (?:EUR|€)", text)  # "12 500,00 EUR"


def test_vendor_masters() -> None:
    for tenant in TENANTS:
        vendors = vendor_master(tenant)
        assert vendors == vendor_master(tenant)
        assert 25 <= len(vendors) <= 40
        assert len({v.id for v in vendors}) == len({v.name for v in vendors}) == len(vendors)
        assert all(v.tenant == tenant and v.currency in CURRENCIES for v in vendors)
        assert any(v.iban for v in vendors)
    names = {v.name for v in vendor_master("acme")}
    assert {"Nordic Paper AB", "Nordic Papers AB", "Acme Supplies Ltd",
            "Acme Supply Ltd"} <= names
