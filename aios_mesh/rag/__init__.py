"""Retrieval-augmented generation: retrieve a tenant's chunks, generate a cited answer, check
that it is grounded — and let the policy decide what an ungrounded answer gets.

* :func:`rag` builds the capability (input :class:`RagQuestion`, output
  :class:`GroundedAnswer`), :func:`rag_writer` the LLM capability it asks as a child call;
* :func:`groundedness` is the deterministic check (citations must name retrieved chunks; each
  sentence must overlap the cited text);
* :class:`GroundednessGate` (the ``groundedness_gate`` step) hands the score to the policy
  and applies its answer (deny, human review); it is a default pipeline step, and
  :func:`install_groundedness_gate` adds it to a pipeline built with its own steps;
* :func:`hashing_embedder` embeds text with no model file (tests, examples, small corpora).

See docs/guides/rag.md.
"""

from aios_mesh.rag.embed import hashing_embedder
from aios_mesh.rag.gate import (
    BUILTIN_POLICY,
    CITATION_NOT_RETRIEVED,
    GROUNDEDNESS_BELOW,
    GroundednessCheck,
    GroundednessGate,
    builtin_decision,
    install_groundedness_gate,
)
from aios_mesh.rag.groundedness import (
    GroundednessReport,
    SentenceOverlap,
    content_words,
    groundedness,
    sentences,
)
from aios_mesh.rag.pattern import (
    DEFAULT_WRITER_PROMPT,
    GroundedAnswer,
    RagHandler,
    RagPrompt,
    RagQuestion,
    RagTrace,
    RagWriterFailed,
    rag,
    rag_settings,
    rag_writer,
    writer_output,
)

__all__ = ["BUILTIN_POLICY", "CITATION_NOT_RETRIEVED", "DEFAULT_WRITER_PROMPT",
           "GROUNDEDNESS_BELOW", "GroundedAnswer", "GroundednessCheck", "GroundednessGate",
           "GroundednessReport", "RagHandler", "RagPrompt", "RagQuestion", "RagTrace",
           "RagWriterFailed", "SentenceOverlap", "builtin_decision", "content_words",
           "groundedness", "hashing_embedder", "install_groundedness_gate", "rag",
           "rag_settings", "rag_writer", "sentences", "writer_output"]
