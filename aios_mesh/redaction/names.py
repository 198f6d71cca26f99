"""The opt-in detector of names and postal addresses: a spaCy pipeline's named entities.

Names and addresses have no pattern or checksum; finding them takes a trained model. This
detector runs one that is *installed* — a spaCy pipeline package (``en_core_web_sm``) or a
folder holding a pipeline — and never downloads one (``spacy.load`` only loads what is on
disk). aios-mesh ships no model: spaCy's own pipelines are published as release files, not
on the package index this project installs from (see docs/governance/scrubbing.md).

    from aios_mesh.redaction.names import SpacyNames
    from aios_mesh.redaction.scrub import Scrubber

    mesh.recorder.scrubber = Scrubber(detectors=[SpacyNames("en_core_web_sm")])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aios_mesh.errors import ConfigError

__all__ = ["ENTITY_KINDS", "SpacyNames"]

#: spaCy entity labels → redaction kinds: people, and the parts of a postal address.
ENTITY_KINDS: Mapping[str, str] = {"PERSON": "person", "GPE": "address", "LOC": "address",
                                   "FAC": "address"}


class SpacyNames:
    """Names and addresses as the named entities of an installed spaCy pipeline.

    Args:
        model: an installed pipeline package's name, or a folder holding a pipeline.
        kinds: entity label → redaction kind (default :data:`ENTITY_KINDS`).

    Raises:
        ConfigError: spaCy is not installed, or no such pipeline is.
    """

    def __init__(self, model: str | Path, *, kinds: Mapping[str, str] = ENTITY_KINDS) -> None:
        try:
            import spacy
        except ImportError:
            raise ConfigError("the names detector needs spaCy",
                              hint="pip install 'aios-mesh[names]'") from None
        try:
            self.nlp: Any = spacy.load(model)
        except OSError:
            raise ConfigError(f"no spaCy pipeline {str(model)!r} is installed",
                              hint="install the pipeline's package (or give a folder holding "
                                   "one); nothing is downloaded at run time") from None
        self.kinds = dict(kinds)

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """``(start, end, kind)`` of every entity of a label in :attr:`kinds`."""
        return [(e.start_char, e.end_char, self.kinds[e.label_]) for e in self.nlp(text).ents
                if e.label_ in self.kinds]
