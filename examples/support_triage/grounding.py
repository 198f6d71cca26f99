"""The retrieve-then-generate step, behind one seam until ``aios_mesh.rag`` lands.

:func:`rag` has the signature the mesh's own ``aios_mesh.rag.rag`` is being built with (issue
20, item 3): ``rag(name, *, collection, llm, embed, k, min_groundedness, policy)`` returns a
capability whose input is :class:`RagQuestion` and output :class:`GroundedAnswer`. When the
mesh's lands, :mod:`examples.support_triage.capabilities` imports that one instead (and its
``rag_writer`` for :data:`~examples.support_triage.capabilities.WRITER`) — one change.

What this one does, as a handler capability whose every step is a child call:

1. embed the question with the ``embed`` capability (its own record);
2. query ``collection`` in the caller's tenant scope only (``k`` nearest chunks), and name the
   index snapshot in the record (``note_index``);
3. ask the ``llm`` capability (template variables ``question`` and ``context``; output
   :class:`Draft`: an answer and the numbers of the chunks it cites, an enum, so constrained
   decoding cannot cite a chunk that was not shown);
4. score groundedness deterministically (:func:`groundedness`).

The threshold (``min_groundedness``) is applied by the routing policy
(``support/route``): an answer below it goes to a human, never to the customer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from aios_mesh.capabilities import SLO, CapabilitySpec, Price, capability
from aios_mesh.context import CallContext

__all__ = ["Draft", "DraftRequest", "GroundedAnswer", "RagQuestion", "groundedness", "rag"]

_WORD = re.compile(r"[a-z0-9]+")
#: Words that carry no content, left out of the overlap.
_STOP = frozenset(("a", "an", "and", "are", "at", "be", "by", "can", "do", "for", "from",
                   "i", "if", "in", "is", "it", "of", "on", "or", "our", "the", "to", "we",
                   "with", "you", "your", "this", "that", "will", "any"))


class RagQuestion(BaseModel):
    question: str = Field(min_length=1, max_length=2000)


class GroundedAnswer(BaseModel):
    """A drafted answer, the chunk ids it cites, the ids retrieved, and how well the answer's
    sentences are backed by the cited text (0..1)."""

    answer: str
    citations: list[str]
    groundedness: float = Field(ge=0, le=1)
    retrieved: list[str]


class DraftRequest(BaseModel):
    """The writer's template variables."""

    question: str = Field(max_length=2000)
    context: str = Field(max_length=4000, description="numbered chunks, one per line")


class Draft(BaseModel):
    """The writer's constrained answer: the reply and the numbers of the chunks it used."""

    answer: str = Field(max_length=400)
    citations: list[Literal[1, 2, 3]] = Field(max_length=3)


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def groundedness(answer: str, cited: Sequence[str]) -> float:
    """The mean, over the answer's sentences, of the share of a sentence's content words
    found in the cited text; 0.0 when nothing is cited or nothing is said.

    >>> groundedness("Return it within 30 days. Shipping is free.",
    ...              ["Return any item within 30 days."])
    0.5
    >>> groundedness("Anything.", [])
    0.0
    """
    source = set(_words(" ".join(cited)))
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if _words(s)]
    if not source or not sentences:
        return 0.0
    shares = [sum(w in source for w in _words(s)) / len(_words(s)) for s in sentences]
    return round(sum(shares) / len(shares), 4)


def rag(name: str, *, collection: str, llm: str, embed: str, k: int = 3,
        min_groundedness: float = 0.5, policy: str | None = None,
        **options: Any) -> CapabilitySpec:
    """A retrieve-then-generate capability (see the module docstring). ``min_groundedness``
    is kept for the mesh's signature; here the routing policy applies the threshold."""
    del min_groundedness
    k = min(k, 3)  # Draft.citations enumerates three chunks

    async def answer(question: RagQuestion, ctx: CallContext) -> GroundedAnswer:
        embedded: Any = (await ctx.invoke(embed, {"text": question.question})).output
        vector = embedded.vector
        retrieval = ctx.ports.retrieval
        hits = await retrieval.query(collection, vector, tenant=ctx.tenant, limit=k)
        ctx.note_index(collection, await retrieval.snapshot(collection))
        ids = [str(hit.payload["chunk_id"]) for hit in hits]
        texts = [str(hit.payload["text"]) for hit in hits]
        context = "\n".join(f"[{i}] {text}" for i, text in enumerate(texts, 1))
        draft: Any = (await ctx.invoke(llm, {"question": question.question,
                                             "context": context})).output
        numbers = sorted({n for n in draft.citations if 1 <= n <= len(ids)})
        cited = [texts[n - 1] for n in numbers]
        return GroundedAnswer(answer=draft.answer, citations=[ids[n - 1] for n in numbers],
                              groundedness=groundedness(draft.answer, cited), retrieved=ids)

    options.setdefault("slo", SLO(timeout_s=120))
    options.setdefault("price", Price(per_call=0.0005))
    return capability(name, policy=policy, indexes=(collection,), **options)(answer)
