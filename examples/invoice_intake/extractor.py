"""A small learned invoice field extractor and a vendor-name embedder.

Extraction: regexes propose candidates per field (amounts, dates, id-like codes, currency
marks, name lines); each candidate gets a feature dict (its shape, the words before it on its
line, the table header above it, its position, its rank among the amounts, ...); one
``DictVectorizer`` + ``LogisticRegression`` per field scores them and the most probable
candidate wins. ``confidence`` is the smallest of the winners' probabilities.

Embedding: char n-gram TF-IDF + TruncatedSVD(64) + L2 normalisation, fitted on vendor names.

Both can be saved as MLflow pyfunc models; the wrapper classes and this module are pickled by
value, so the saved models load where ``examples`` is not importable. sklearn, numpy, pandas
and mlflow are imported lazily (inside functions).
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

__all__ = [
    "DIM",
    "FIELDS",
    "Embedder",
    "Extractor",
    "field_correct",
    "parse_amount",
    "parse_date",
    "save_embedder",
    "save_extractor",
    "train_embedder",
    "train_extractor",
]

FIELDS = ("vendor_name", "invoice_number", "invoice_date", "currency", "total")
DIM = 64
MIN_PROB = 0.05  # a winner below this is reported as missing (None)

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_MONTH_RE = (r"(?:January|February|March|April|May|June|July|August|September|October|"
             r"November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)")
_DATE_RES = (
    ("iso", re.compile(r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)")),
    ("dmy", re.compile(r"(?<![\d.])(\d{1,2})([./])(\d{1,2})\2(\d{4})(?!\d)")),
    ("long_dmy", re.compile(rf"(?<!\d)(\d{{1,2}})\.? ({_MONTH_RE})\.? (\d{{4}})(?!\d)",
                            re.IGNORECASE)),
    ("long_mdy", re.compile(rf"\b({_MONTH_RE})\.? (\d{{1,2}}),? (\d{{4}})(?!\d)",
                            re.IGNORECASE)),
)
_AMOUNT_RE = re.compile(
    r"(?<![\w.,/:'-])(\d{1,3}(?: \d{3})+(?:[.,]\d{1,2})?|\d{1,3}(?:[,.']\d{3})+(?:[.,]\d{1,2})?"
    r"|\d+(?:[.,]\d{1,2})?)"
    r"(?![\w%]|[.,/:-]\d)")
_ID_RE = re.compile(r"(?<![\w/-])([A-Za-z0-9][A-Za-z0-9/-]*[A-Za-z0-9])(?![\w/-])")
_CUR_RE = re.compile(r"\b(USD|EUR|GBP|CHF|JPY)\b|([$€£¥])")
_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY"}
_WORD_RE = re.compile(r"[^\W\d_]+|[#°%]")
_LABEL_RE = re.compile(r"^\s*([A-Za-z][A-Za-z .#-]{0,20}?)\s*:\s*(.*)$")


# --------------------------------------------------------------------------- normalisers


def parse_amount(s: str) -> float | None:
    """'1,440.00' / '1.440,00' / '1 440,00' / '1440.00' / '144,000' (JPY) / "1'440.00"
    -> float."""
    s = s.strip().replace("'", "").replace(" ", "")
    if not s or not re.fullmatch(r"[\d.,]+", s) or not s[0].isdigit():
        return None
    dec: str | None = None
    if "," in s and "." in s:
        dec = "," if s.rfind(",") > s.rfind(".") else "."
    elif "," in s or "." in s:
        sep = "," if "," in s else "."
        parts = s.split(sep)
        if len(parts) == 2 and len(parts[1]) in (1, 2):
            dec = sep
    if dec is None:
        digits = s.replace(",", "").replace(".", "")
        return float(digits) if digits else None
    head, _, frac = s.rpartition(dec)
    head = head.replace(",", "").replace(".", "")
    try:
        return float(f"{head or '0'}.{frac}")
    except ValueError:
        return None


def _month(name: str) -> int:
    name = name.lower().rstrip(".")
    for i, m in enumerate(_MONTHS):
        if m.startswith(name[:3]):
            return i + 1
    raise ValueError(name)


def _iso(y: int, m: int, d: int) -> str | None:
    try:
        return date(y, m, d).isoformat()
    except ValueError:
        return None


def _date_matches(line: str) -> list[tuple[int, int, str, str]]:
    """(start, end, kind, iso) for every date in the line (dd/mm/yyyy is day-first)."""
    out: list[tuple[int, int, str, str]] = []
    for kind, rx in _DATE_RES:
        for m in rx.finditer(line):
            g = m.groups()
            label = kind
            if kind == "iso":
                iso = _iso(int(g[0]), int(g[1]), int(g[2]))
            elif kind == "dmy":
                iso = _iso(int(g[3]), int(g[2]), int(g[0]))
                label = "dmy_slash" if g[1] == "/" else "dmy_dot"
            elif kind == "long_dmy":
                iso = _iso(int(g[2]), _month(g[1]), int(g[0]))
            else:
                iso = _iso(int(g[2]), _month(g[0]), int(g[1]))
            if iso:
                out.append((m.start(), m.end(), label, iso))
    return out


def parse_date(s: str) -> str | None:
    """Any supported date format -> ISO yyyy-mm-dd."""
    found = _date_matches(s)
    return found[0][3] if found else None


# --------------------------------------------------------------------------- features


def _shape(s: str) -> str:
    out = re.sub(r"[A-Z]", "A", s)
    out = re.sub(r"[a-z]", "a", out)
    return re.sub(r"\d", "9", out)


def _short_shape(s: str) -> str:
    return re.sub(r"(.)\1+", r"\1", _shape(s))


def _words(s: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(s)]


def _bucket(n: int, top: int = 8) -> int:
    return min(n, top)


class _Doc:
    """The invoice text split into lines, with per-line helpers shared by the fields."""

    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        # index of the previous non-empty line for each line (or -1)
        self.prev: list[int] = []
        last = -1
        for i, line in enumerate(self.lines):
            self.prev.append(last)
            if line.strip():
                last = i
        self.n = max(len(self.lines), 1)
        self.last_nonempty = last

    def context(self, li: int, start: int, end: int) -> dict[str, Any]:
        line = self.lines[li]
        before, after = line[:start], line[end:]
        f: dict[str, Any] = {
            "relpos": int(5 * li / self.n),
            "lidx": _bucket(li),
            "ridx": _bucket(self.last_nonempty - li),
            "pipe": "|" in line,
        }
        bw = _words(before.split("|")[-1])
        for k, w in enumerate(reversed(bw[-3:])):
            f[f"w-{k + 1}={w}"] = 1
        if len(bw) >= 2:
            f[f"b2={bw[-2]} {bw[-1]}"] = 1
        if not bw:
            f["nobefore"] = 1
        for w in _words(before)[-6:]:
            f[f"bag={w}"] = 1
        stripped = before.rstrip()
        f["pc=" + (stripped[-1] if stripped else "^")] = 1
        aw = _words(after)
        f["a1=" + (aw[0] if aw else "$")] = 1
        if "|" in line:
            col = before.count("|")
            f[f"col={_bucket(col, 5)}"] = 1
            p = self.prev[li]
            if p >= 0 and "|" in self.lines[p]:
                cells = self.lines[p].split("|")
                if col < len(cells):
                    head = " ".join(_words(cells[col]))
                    f[f"hdr={head}"] = 1
                    for w in head.split():
                        f[f"hw={w}"] = 1
        p = self.prev[li]
        if p >= 0:
            for w in _words(self.lines[p])[:3]:
                f[f"pw={w}"] = 1
        return f


_Cand = tuple[Any, dict[str, Any]]  # (normalised value, features)


def _date_spans(doc: _Doc) -> list[list[tuple[int, int, str, str]]]:
    return [_date_matches(line) for line in doc.lines]


def _overlaps(start: int, end: int, spans: Iterable[tuple[int, int, str, str]]) -> bool:
    return any(s < end and start < e for s, e, _, _ in spans)


def _amount_cands(doc: _Doc) -> list[_Cand]:
    dates = _date_spans(doc)
    raw: list[tuple[int, int, int, float, str]] = []
    for li, line in enumerate(doc.lines):
        for m in _AMOUNT_RE.finditer(line):
            if _overlaps(m.start(), m.end(), dates[li]):
                continue
            value = parse_amount(m.group(1))
            if value is not None:
                raw.append((li, m.start(), m.end(), value, m.group(1)))
    values = sorted({r[3] for r in raw}, reverse=True)

    def cur_near(li: int, start: int, end: int) -> bool:
        return bool(_CUR_RE.search(doc.lines[li][max(0, start - 5):end + 5]))

    # the largest amount written with decimals / with a currency mark next to it
    top_dec = max((r[3] for r in raw if re.search(r"[.,]\d{2}$", r[4])), default=None)
    top_cur = max((r[3] for r in raw if cur_near(r[0], r[1], r[2])), default=None)
    out: list[_Cand] = []
    for li, start, end, value, s in raw:
        f = doc.context(li, start, end)
        line = doc.lines[li]
        rank = values.index(value)
        f.update({
            "largest_dec": value == top_dec,
            "largest_cur": value == top_cur,
            f"rank={_bucket(rank, 4)}": 1,
            "largest": rank == 0,
            "dec": bool(re.search(r"[.,]\d{2}$", s)),
            "sep": bool(re.search(r"[.,' ]\d{3}", s)),
            f"intdig={_bucket(len(str(int(value))), 7)}": 1,
            f"sshape={_short_shape(s)}": 1,
            "cur_near": cur_near(li, start, end),
            "pct_before": line[:start].rstrip().endswith("%:") or "%" in line[:start],
        })
        out.append((value, f))
    return out


def _date_cands(doc: _Doc) -> list[_Cand]:
    found = [(li, d) for li, spans in enumerate(_date_spans(doc)) for d in spans]
    ordered = sorted({d[3] for _, d in found})
    out: list[_Cand] = []
    for li, (start, end, kind, iso) in found:
        f = doc.context(li, start, end)
        rank = ordered.index(iso)
        f.update({f"kind={kind}": 1, f"drank={_bucket(rank, 3)}": 1,
                  f"drrank={_bucket(len(ordered) - 1 - rank, 3)}": 1,
                  f"ndates={_bucket(len(ordered), 4)}": 1})
        out.append((iso, f))
    return out


def _number_cands(doc: _Doc) -> list[_Cand]:
    dates = _date_spans(doc)
    out: list[_Cand] = []
    for li, line in enumerate(doc.lines):
        for m in _ID_RE.finditer(line):
            tok = m.group(1)
            if len(tok) < 3 or not any(ch.isdigit() for ch in tok):
                continue
            if _overlaps(m.start(), m.end(), dates[li]):
                continue
            f = doc.context(li, m.start(), m.end())
            prefix = re.match(r"[A-Za-z]*", tok)
            f.update({
                f"shape={_shape(tok)}": 1,
                f"sshape={_short_shape(tok)}": 1,
                f"prefix={prefix.group(0).upper() if prefix else ''}": 1,
                f"len={_bucket(len(tok), 12)}": 1,
                "alldig": tok.isdigit(),
                "hash_before": line[:m.start()].endswith("#"),
                "dec_after": bool(re.match(r"[.,]\d", line[m.end():])),
            })
            out.append((tok, f))
    return out


def _currency_cands(doc: _Doc) -> list[_Cand]:
    out: list[_Cand] = []
    for li, line in enumerate(doc.lines):
        for m in _CUR_RE.finditer(line):
            code = m.group(1) or _SYMBOLS[m.group(2)]
            f = doc.context(li, m.start(), m.end())
            f.update({f"tok={m.group(0)}": 1, "symbol": m.group(2) is not None,
                      "digit_after": bool(re.match(r"\s?\d", line[m.end():])),
                      "digit_before": bool(re.search(r"\d\s?$", line[:m.start()]))})
            out.append((code, f))
    return out


_NAME_LABELS = {"from", "vendor", "supplier", "seller"}


def _vendor_cands(doc: _Doc) -> list[_Cand]:
    out: list[_Cand] = []
    nonempty = [i for i, line in enumerate(doc.lines) if line.strip()]
    keep = set(nonempty[:6]) | set(nonempty[-3:])
    for li in sorted(keep):
        raw = doc.lines[li].strip()
        label = ""
        m = _LABEL_RE.match(raw)
        if m:
            label, raw = m.group(1).strip().lower(), m.group(2).strip()
        if not raw or any(ch.isdigit() for ch in raw) or "|" in raw or "@" in raw:
            continue
        tokens = raw.split()
        f: dict[str, Any] = {
            f"label={label}": 1,
            "known_label": label in _NAME_LABELS,
            f"lidx={_bucket(nonempty.index(li), 6)}": 1,
            f"ridx={_bucket(len(nonempty) - 1 - nonempty.index(li), 4)}": 1,
            f"ntok={_bucket(len(tokens), 6)}": 1,
            "upper": raw.isupper(),
            "title": all(t[:1].isupper() for t in tokens),
            "punct_end": raw[-1] in ".,!?",
            f"last={tokens[-1].lower().rstrip('.')}": 1,
            f"first={tokens[0].lower()}": 1,
        }
        for w in _words(raw):
            f[f"tw={w}"] = 1
        p = doc.prev[li]
        f["prev=" + (" ".join(_words(doc.lines[p])[:2]) if p >= 0 else "^")] = 1
        out.append((raw, f))
    return out


_GENERATORS = {
    "vendor_name": _vendor_cands,
    "invoice_number": _number_cands,
    "invoice_date": _date_cands,
    "currency": _currency_cands,
    "total": _amount_cands,
}


def _matches(field: str, value: Any, truth: Any) -> bool:
    if truth is None or value is None:
        return False
    if field == "total":
        return bool(abs(float(value) - float(truth)) < 0.005)
    return bool(value == truth)


# --------------------------------------------------------------------------- extractor


class _Constant:
    """Stands in for a classifier when the training candidates of a field were all one class."""

    def __init__(self, p: float) -> None:
        self.p = p

    def predict_proba(self, feats: Sequence[dict[str, Any]]) -> Any:
        import numpy as np

        return np.array([[1.0 - self.p, self.p]] * len(feats))


class Extractor:
    """Per-field candidate scorers; ``extract(text)`` -> FIELDS + "confidence"."""

    def __init__(self, models: dict[str, Any]) -> None:
        self.models = models  # field -> sklearn Pipeline(DictVectorizer, LogisticRegression)

    def _best(self, field: str, doc: _Doc) -> tuple[Any, float]:
        cands = _GENERATORS[field](doc)
        if not cands:
            return None, 0.0
        probs = self.models[field].predict_proba([f for _, f in cands])[:, 1]
        i = int(probs.argmax())
        p = float(probs[i])
        if p < MIN_PROB:
            return None, p
        return cands[i][0], p

    def extract(self, text: str) -> dict[str, Any]:
        doc = _Doc(text)
        out: dict[str, Any] = {}
        probs: list[float] = []
        for field in FIELDS:
            value, p = self._best(field, doc)
            out[field] = float(value) if field == "total" and value is not None else value
            probs.append(p)
        out["confidence"] = round(min(probs), 6)
        return out


def _truth_value(inv: Any, field: str) -> Any:
    return getattr(inv.truth, field)


def _fit(invoices: Sequence[Any]) -> Extractor:
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    docs = [_Doc(inv.text) for inv in invoices]
    models: dict[str, Any] = {}
    for field in FIELDS:
        feats: list[dict[str, Any]] = []
        labels: list[int] = []
        for inv, doc in zip(invoices, docs, strict=True):
            truth = _truth_value(inv, field)
            for value, f in _GENERATORS[field](doc):
                feats.append(f)
                labels.append(int(_matches(field, value, truth)))
        if not labels:
            raise ValueError(f"no candidates for field {field!r} in the training invoices")
        if len(set(labels)) < 2:  # e.g. every currency mark is the invoice's currency
            models[field] = _Constant(float(labels[0]))
            continue
        model = make_pipeline(DictVectorizer(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(feats, labels)
        models[field] = model
    return Extractor(models)


def field_correct(field: str, got: Any, truth: Any) -> bool:
    """Whether an extracted value is right: equal (totals to the cent); a missing value is
    right only where the invoice has none."""
    return got is None if truth is None else _matches(field, got, truth)


def accuracy(extractor: Extractor, invoices: Sequence[Any]) -> dict[str, float]:
    """Exact-match accuracy per field (None == None counts as a match)."""
    hits = dict.fromkeys(FIELDS, 0)
    for inv in invoices:
        got = extractor.extract(inv.text)
        for field in FIELDS:
            hits[field] += int(field_correct(field, got[field], _truth_value(inv, field)))
    n = max(len(invoices), 1)
    return {field: hits[field] / n for field in FIELDS}


def train_extractor(invoices: Sequence[Any]) -> tuple[Extractor, dict[str, float]]:
    """Fit on 80% of ``invoices`` (a fixed shuffle) and report accuracy on the other 20%."""
    order = list(range(len(invoices)))
    random.Random(0).shuffle(order)
    cut = int(len(order) * 0.8)
    train = [invoices[i] for i in order[:cut]]
    holdout = [invoices[i] for i in order[cut:]]
    extractor = _fit(train)
    return extractor, accuracy(extractor, holdout)


# --------------------------------------------------------------------------- embedder


class Embedder:
    """Char n-gram TF-IDF -> TruncatedSVD -> L2 normalised DIM-float vectors."""

    def __init__(self, tfidf: Any, svd: Any) -> None:
        self.tfidf = tfidf
        self.svd = svd

    def embed(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        z = self.svd.transform(self.tfidf.transform(list(texts)))
        if z.shape[1] < DIM:
            z = np.hstack([z, np.zeros((z.shape[0], DIM - z.shape[1]))])
        norms = np.linalg.norm(z, axis=1, keepdims=True)
        z = z / np.where(norms == 0, 1.0, norms)
        return [[float(x) for x in row] for row in z]


def _name_variants(name: str) -> list[str]:
    out = [name]
    head, _, _ = name.rpartition(" ")
    if head:
        out.append(head)
    return out


def train_embedder(names: list[str]) -> Embedder:
    """Fit on the names plus their suffix-less variants (sorted, so order does not matter)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    corpus = sorted({v for n in names for v in _name_variants(n)})
    if not corpus:
        raise ValueError("no names to train on")
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4))
    x = tfidf.fit_transform(corpus)
    k = max(1, min(DIM, x.shape[1] - 1, x.shape[0] - 1 if x.shape[0] > 1 else 1))
    svd = TruncatedSVD(n_components=k, random_state=0)
    svd.fit(x)
    return Embedder(tfidf, svd)


# --------------------------------------------------------------------------- MLflow pyfunc


def _pyfunc_classes() -> tuple[type, type]:
    import mlflow.pyfunc

    class ExtractorModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        """pyfunc: DataFrame["text"] -> DataFrame[FIELDS + "confidence"]."""

        def __init__(self, extractor: Extractor) -> None:
            self.extractor = extractor

        # no type hints on predict: MLflow would try (and fail) to derive a schema from them
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            import pandas as pd

            rows = [self.extractor.extract(str(t)) for t in model_input["text"]]
            frame = pd.DataFrame(rows, columns=[*FIELDS, "confidence"], dtype=object)
            frame["confidence"] = frame["confidence"].astype("float64")
            return frame

    class EmbedderModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        """pyfunc: DataFrame["text"] -> DataFrame["vector"] (lists of DIM floats)."""

        def __init__(self, embedder: Embedder) -> None:
            self.embedder = embedder

        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            import pandas as pd

            vectors = self.embedder.embed([str(t) for t in model_input["text"]])
            return pd.DataFrame({"vector": vectors})

    return ExtractorModel, EmbedderModel


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{dist}=={version(dist)}" for dist in
            ("mlflow", "scikit-learn", "pandas", "numpy", "cloudpickle")]


def _save(python_model: Any, path: Path, sample_texts: list[str]) -> None:
    import cloudpickle  # type: ignore[import-untyped]
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    # pickle this module's classes and functions by value: the model must load in a process
    # (BentoML's virtualenv) where the `examples` package is not importable
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    signature = ModelSignature(inputs=Schema([ColSpec("string", "text")]))
    example = pd.DataFrame({"text": [str(t) for t in sample_texts[:2]] or [""]})
    mlflow.pyfunc.save_model(str(path), python_model=python_model, signature=signature,
                             input_example=example, pip_requirements=_requirements())


def save_extractor(extractor: Extractor, path: Path, sample_texts: list[str]) -> None:
    """Write an MLflow pyfunc model directory at ``path`` (input-only signature, so None
    values in the output are never rejected)."""
    cls, _ = _pyfunc_classes()
    _save(cls(extractor), path, sample_texts)


def save_embedder(embedder: Embedder, path: Path, sample_texts: list[str]) -> None:
    """Write an MLflow pyfunc model directory at ``path``."""
    _, cls = _pyfunc_classes()
    _save(cls(embedder), path, sample_texts)
