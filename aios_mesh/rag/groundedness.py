"""The deterministic groundedness check of a retrieval-augmented answer.

An answer is grounded when (1) every citation points at a chunk that was retrieved for it and
(2) every sentence of the answer overlaps the text of the chunks it cites. No model is asked:
the same answer, citations and chunks give the same report on every machine.

    report = groundedness("Refunds take 14 days.", ["kb-7"],
                          {"kb-7": "Refunds are paid within 14 days.", "kb-9": "..."})
    report.score          # 0.75: 3 of the sentence's 4 content words are in kb-7
    report.bad_citations  # (): kb-7 was retrieved

The rules:

* **Words** are runs of letters and digits (Unicode, case-folded, NFKC-normalised); a short
  list of English function words (``the``, ``is``, ``of``, ...) is left out, so "the" in an
  answer never counts as support. A trailing plural ``s`` is dropped from words of four
  letters or more (``refunds`` = ``refund``).
* **Sentences** end at ``.``, ``!`` or ``?`` followed by white space (or the end), and at line
  breaks. Inline citation markers (``[1]``, ``[kb-7]``) are removed first. A sentence with no
  content word is not counted.
* A sentence's **overlap** is the share of its distinct content words found among the words
  of the cited, retrieved chunks together (0 when it cites nothing retrieved).
* The **score** is the smallest overlap over the sentences (the weakest sentence decides: a
  grounded answer may not carry one invented claim); ``mean`` is the average. An answer with
  no content word scores 0.
* **Bad citations** are the citations that name no retrieved chunk, in the order given.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["STOPWORDS", "GroundednessReport", "SentenceOverlap", "content_words",
           "groundedness", "sentences"]

#: English function words that never count as support (kept short on purpose: a content
#: word such as a product name or a number must always count).
STOPWORDS: Final = frozenset((
    "a", "an", "the", "and", "or", "but", "nor", "so", "yet", "of", "to", "in", "on",
    "at", "by", "for", "from", "with", "without", "into", "onto", "over", "under",
    "about", "as", "than", "then", "that", "this", "these", "those", "it", "its", "is",
    "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "has", "have",
    "had", "having", "will", "would", "shall", "should", "can", "could", "may", "might",
    "must", "not", "no", "i", "you", "he", "she", "we", "they", "me", "him", "her", "us",
    "them", "my", "your", "his", "our", "their", "there", "here", "which", "who", "whom",
    "whose", "what", "when", "where", "why", "how", "if", "else", "also", "just", "only",
    "very", "any", "all", "each", "some", "such", "own", "same", "too", "s", "t"))

_MARKER: Final = re.compile(r"\[[^\[\]\n]{1,40}\]")
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD: Final = re.compile(r"[^\W_]+")


def _normal(word: str) -> str:
    if len(word) >= 4 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(text: str) -> frozenset[str]:
    """The distinct content words of ``text`` (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return frozenset(_normal(w) for w in _WORD.findall(folded) if w not in STOPWORDS)


def sentences(text: str) -> list[str]:
    """``text`` cut into sentences, citation markers removed, blank ones dropped."""
    cleaned = _MARKER.sub(" ", text)
    return [s.strip() for s in _SENTENCE_END.split(cleaned) if s.strip()]


@dataclass(frozen=True, slots=True)
class SentenceOverlap:
    """One sentence of the answer and the share of its content words the cited text holds."""

    text: str
    words: int
    overlap: float


@dataclass(frozen=True, slots=True)
class GroundednessReport:
    """The outcome of :func:`groundedness`.

    ``score`` is the weakest sentence's overlap (0..1), ``mean`` the average,
    ``sentences`` each counted sentence's overlap, ``cited`` the citations that name a
    retrieved chunk and ``bad_citations`` those that do not (both without repeats, in the
    order given).
    """

    score: float
    mean: float
    sentences: tuple[SentenceOverlap, ...]
    cited: tuple[str, ...]
    bad_citations: tuple[str, ...]

    def grounded(self, threshold: float) -> bool:
        """No bad citation and a score at or above ``threshold``."""
        return not self.bad_citations and self.score >= threshold

    def summary(self) -> dict[str, object]:
        """The report without the answer's text (what a record or a policy input may hold):
        scores, counts and chunk ids."""
        return {"score": self.score, "mean": self.mean, "sentences": len(self.sentences),
                "overlaps": [s.overlap for s in self.sentences], "cited": list(self.cited),
                "bad_citations": list(self.bad_citations)}


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def groundedness(answer: str, citations: Sequence[str], chunks: Mapping[str, str]
                 ) -> GroundednessReport:
    """Check ``answer`` against the retrieved ``chunks`` (id -> text) it cites.

    Args:
        answer: the generated answer.
        citations: the chunk ids the answer cites.
        chunks: every chunk retrieved for the question, by id.

    Example::

        r = groundedness("Returns are free.", ["c1"], {"c1": "Returns are free of charge."})
        assert r.score == 1.0 and r.bad_citations == ()
    """
    cited = _unique(c for c in citations if c in chunks)
    bad = _unique(c for c in citations if c not in chunks)
    support: set[str] = set()
    for chunk_id in cited:
        support |= content_words(chunks[chunk_id])
    counted: list[SentenceOverlap] = []
    for sentence in sentences(answer):
        words = content_words(sentence)
        if not words:
            continue
        overlap = round(len(words & support) / len(words), 6)
        counted.append(SentenceOverlap(sentence, len(words), overlap))
    if not counted:
        return GroundednessReport(0.0, 0.0, (), cited, bad)
    overlaps = [s.overlap for s in counted]
    return GroundednessReport(min(overlaps), round(sum(overlaps) / len(overlaps), 6),
                              tuple(counted), cited, bad)
