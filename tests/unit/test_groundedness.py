"""The deterministic groundedness check (aios_mesh.rag.groundedness), by its properties:
bounded scores, exact bad-citation sets, copied sentences fully grounded, more cited text
never lowering a sentence's overlap, order and case not mattering, and the same report
every time. Plus the built-in rule and the writer's output model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from aios_mesh.rag import (
    BUILTIN_POLICY,
    CITATION_NOT_RETRIEVED,
    GROUNDEDNESS_BELOW,
    builtin_decision,
    content_words,
    groundedness,
    hashing_embedder,
    sentences,
    writer_output,
)
from aios_mesh.rag.pattern import RagHandler

WORDS = st.sampled_from(["refund", "order", "days", "fourteen", "shipping", "invoice",
                         "warranty", "battery", "screen", "paris", "berlin", "42", "2026",
                         "the", "is", "of", "and", "Refunds", "ORDER", "café", "naïve"])
SENTENCE = st.lists(WORDS, min_size=1, max_size=12).map(lambda ws: " ".join(ws) + ".")
TEXT = st.lists(SENTENCE, min_size=0, max_size=5).map(" ".join)
IDS = st.text(alphabet="abcdefghijk-0123456789", min_size=1, max_size=8)
CHUNKS = st.dictionaries(IDS, TEXT, min_size=0, max_size=6)


@settings(max_examples=300, deadline=None)
@given(answer=TEXT, chunks=CHUNKS, extra=st.lists(IDS, max_size=4), data=st.data())
def test_scores_are_bounded_and_bad_citations_are_exactly_the_unretrieved(
        answer: str, chunks: dict[str, str], extra: list[str], data: st.DataObject) -> None:
    cited = data.draw(st.lists(st.sampled_from(sorted(chunks)), max_size=4)) if chunks else []
    citations = cited + extra
    report = groundedness(answer, citations, chunks)
    assert 0.0 <= report.score <= report.mean <= 1.0
    assert all(0.0 <= s.overlap <= 1.0 for s in report.sentences)
    assert report.score == (min(s.overlap for s in report.sentences)
                            if report.sentences else 0.0)
    assert set(report.bad_citations) == {c for c in citations if c not in chunks}
    assert set(report.cited) == {c for c in citations if c in chunks}
    assert len(report.bad_citations) == len(set(report.bad_citations))
    assert report.grounded(0.0) == (not report.bad_citations)


@settings(max_examples=200, deadline=None)
@given(chunk=TEXT.filter(lambda t: bool(content_words(t))), other=CHUNKS, data=st.data())
def test_an_answer_copied_from_the_cited_chunk_is_fully_grounded(
        chunk: str, other: dict[str, str], data: st.DataObject) -> None:
    chunks = {**other, "source": chunk}
    picked = data.draw(st.lists(st.sampled_from(sentences(chunk)), min_size=1, max_size=3))
    answer = " ".join(picked)
    report = groundedness(answer, ["source"], chunks)
    counted = [s for s in picked if content_words(s)]
    assert report.score == (1.0 if counted else 0.0)
    assert report.bad_citations == ()


@settings(max_examples=200, deadline=None)
@given(answer=TEXT, chunks=CHUNKS.filter(bool), data=st.data())
def test_citing_more_never_lowers_an_overlap_and_citing_nothing_scores_zero(
        answer: str, chunks: dict[str, str], data: st.DataObject) -> None:
    ids = sorted(chunks)
    some = data.draw(st.lists(st.sampled_from(ids), max_size=len(ids)))
    more = some + data.draw(st.lists(st.sampled_from(ids), max_size=len(ids)))
    few, many = groundedness(answer, some, chunks), groundedness(answer, more, chunks)
    assert len(few.sentences) == len(many.sentences)
    for a, b in zip(few.sentences, many.sentences, strict=True):
        assert b.overlap >= a.overlap
    assert many.score >= few.score
    assert groundedness(answer, [], chunks).score == 0.0


@settings(max_examples=200, deadline=None)
@given(answer=TEXT, chunks=CHUNKS.filter(bool), data=st.data())
def test_order_case_and_markers_do_not_matter_and_the_report_is_deterministic(
        answer: str, chunks: dict[str, str], data: st.DataObject) -> None:
    ids = sorted(chunks)
    citations = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=4))
    report = groundedness(answer, citations, chunks)
    assert groundedness(answer, citations, chunks) == report
    shuffled = dict(reversed(list(chunks.items())))
    again = groundedness(answer, list(reversed(citations)), shuffled)
    assert again.score == report.score and set(again.cited) == set(report.cited)
    loud = groundedness(answer.upper(), citations, chunks)
    assert loud.score == report.score
    marked = groundedness(answer.replace(".", " [1].", 1), citations, chunks)
    assert marked.score == report.score


def test_examples_by_hand() -> None:
    chunks = {"kb-7": "Refunds are paid within 14 days.", "kb-9": "Shipping is free."}
    r = groundedness("Refunds take 14 days.", ["kb-7"], chunks)
    assert r.score == 0.75 and r.cited == ("kb-7",) and r.bad_citations == ()
    # the weakest sentence decides; the mean is reported beside it
    two = groundedness("Refunds are paid within 14 days. The moon is cheese.", ["kb-7"],
                       chunks)
    assert [s.overlap for s in two.sentences] == [1.0, 0.0]
    assert two.score == 0.0 and two.mean == 0.5
    bad = groundedness("Shipping is free.", ["kb-9", "kb-404", "kb-404"], chunks)
    assert bad.score == 1.0 and bad.bad_citations == ("kb-404",)
    assert not bad.grounded(0.5)
    assert groundedness("The, of and.", ["kb-7"], chunks).sentences == ()
    assert sentences("One. Two!\nThree? [2] four") == ["One.", "Two!", "Three?", "four"]
    assert "the" not in content_words("The refunds") and "refund" in content_words("Refunds")
    assert r.summary()["cited"] == ["kb-7"] and "text" not in str(r.summary())


def test_the_builtin_rule_denies_bad_citations_and_reviews_low_scores() -> None:
    base = {"score": 0.9, "threshold": 0.5, "bad_citations": []}
    assert builtin_decision(base).allow and not builtin_decision(base).obligations.require_human
    low = builtin_decision({**base, "score": 0.2})
    assert low.allow and low.obligations.require_human
    assert low.reason_code == GROUNDEDNESS_BELOW and low.policy == BUILTIN_POLICY
    bad = builtin_decision({**base, "bad_citations": ["#9"]})
    assert not bad.allow and bad.reason_code == CITATION_NOT_RETRIEVED


def test_the_writer_can_only_cite_source_numbers() -> None:
    draft = writer_output(3)
    assert draft.model_validate({"answer": "x", "citations": [1, 3]})
    schema = draft.model_json_schema()
    assert schema["properties"]["citations"]["items"]["enum"] == [1, 2, 3]
    for bad in ({"answer": "x", "citations": [4]}, {"answer": "x", "citations": []},
                {"answer": "", "citations": [1]}, {"answer": "x", "citations": [1], "y": 1}):
        with pytest.raises(ValidationError):
            draft.model_validate(bad)


def test_citation_numbers_map_to_retrieved_ids() -> None:
    ids = ["kb-a", "kb-b"]
    assert RagHandler._cited(2, ids) == "kb-b" and RagHandler._cited("1", ids) == "kb-a"
    assert RagHandler._cited(3, ids) == "#3" and RagHandler._cited(0, ids) == "#0"
    assert RagHandler._cited("kb-z", ids) == "kb-z"


def test_the_hashing_embedder_is_deterministic_and_unit_length() -> None:
    embed = hashing_embedder(64)
    a, b = embed("How do refunds work?"), embed("How do refunds work?")
    assert a == b and len(a) == 64
    assert abs(sum(v * v for v in a) - 1.0) < 1e-9
    assert embed("?") == [1.0] + [0.0] * 63
    near = sum(x * y for x, y in zip(a, embed("refunds work how"), strict=True))
    far = sum(x * y for x, y in zip(a, embed("battery screen warranty"), strict=True))
    assert near > far
