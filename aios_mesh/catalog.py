"""The capability catalog: every capability a mesh serves, by name."""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable, Iterator

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import ConfigError, UnknownCapability
from aios_mesh.lifecycle.versions import check_compatible, version_key

__all__ = ["Catalog", "declared"]


class Catalog:
    """Capabilities by name, with their versions side by side.

    One spec per (name, major version). A caller asks for ``name@2`` (the newest 2.x),
    ``name@2.1`` (exactly that version, while it is the one serving major 2) or ``name``
    (the newest version of all). Registering a version of a major that is already there
    replaces it — only when it keeps that major's promise to its callers
    (:func:`~aios_mesh.lifecycle.versions.check_compatible`); a new major is added beside.

    Example::

        catalog = Catalog([spec])
        catalog.get("classify-ticket")      # UnknownCapability, with a "did you mean", if not
        catalog.get("classify-ticket@1")    # the newest 1.x
    """

    def __init__(self, specs: Iterable[CapabilitySpec] = ()) -> None:
        self._majors: dict[str, dict[str, CapabilitySpec]] = {}  # name -> major -> spec
        # every address a caller may use -> its spec, rebuilt on register: a lookup on the
        # caller's path is one dict read
        self._specs: dict[str, CapabilitySpec] = {}
        self._lock = threading.Lock()
        for spec in specs:
            self.register(spec)

    def register(self, spec: CapabilitySpec) -> CapabilitySpec:
        """Add a capability version, or replace the one of its major (refused with
        :class:`~aios_mesh.lifecycle.versions.IncompatibleVersion` if that would break
        the major's callers); returns it."""
        with self._lock:
            majors = self._majors.setdefault(spec.name, {})
            current = majors.get(spec.major)
            if current is not None and current is not spec:
                check_compatible(current, spec)
            majors[spec.major] = spec
            self._index()
        return spec

    def _index(self) -> None:
        addresses: dict[str, CapabilitySpec] = {}
        for name, majors in self._majors.items():
            ordered = sorted(majors.values(), key=lambda s: version_key(s.version))
            for spec in ordered:
                addresses[f"{name}@{spec.major}"] = spec
                addresses[spec.key] = spec
            addresses[name] = ordered[-1]
        self._specs = addresses

    def get(self, name: str) -> CapabilitySpec:
        """The capability ``name`` / ``name@major`` / ``name@version``, or
        :class:`UnknownCapability` naming the closest."""
        try:
            return self._specs[name]
        except KeyError:
            raise self._unknown(name) from None

    def _unknown(self, address: str) -> UnknownCapability:
        name, _, wanted = address.partition("@")
        majors = self._majors.get(name)
        if majors:
            served = ", ".join(f"{name}@{s.version}" for s in self.versions(name))
            return UnknownCapability(f"capability {name!r} has no version {wanted!r}",
                                     hint=f"it serves {served}; pin a major such as "
                                          f"{name}@{next(iter(majors))}")
        close = difflib.get_close_matches(name, list(self._majors), n=1)
        hint = (f"did you mean {close[0]!r}?" if close
                else "`aios-mesh capabilities` lists what is registered")
        return UnknownCapability(f"no capability named {name!r}", hint=hint)

    def versions(self, name: str) -> list[CapabilitySpec]:
        """Every version of ``name`` being served, oldest first (empty if none)."""
        return sorted(self._majors.get(name, {}).values(), key=lambda s: version_key(s.version))

    def as_dict(self) -> dict[str, CapabilitySpec]:
        """A copy of the catalog: each name's newest version, by name."""
        return {name: self._specs[name] for name in self._majors}

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[CapabilitySpec]:
        """Every version of every capability (a name with two majors comes twice)."""
        return iter([spec for name in list(self._majors) for spec in self.versions(name)])

    def __len__(self) -> int:
        return sum(len(majors) for majors in self._majors.values())


def declared(config: Iterable[CapabilitySpec], code: Iterable[CapabilitySpec]
             ) -> list[CapabilitySpec]:
    """The capabilities a mesh starts with: those of its config file and those given in
    code, in that order. A name declared twice for the same major version (in either place,
    or once in each) is a :class:`ConfigError`: the catalog holds one spec per major, and
    letting one silently win would serve a capability its author did not write. Two majors
    of one name (``version = "1"`` and ``"2"``) are served side by side."""
    found: dict[tuple[str, str], tuple[CapabilitySpec, str]] = {}
    for where, specs in (("the config file", config), ("code", code)):
        for spec in specs:
            seen = found.get((spec.name, spec.major))
            if seen is not None:
                first, first_where = seen
                same = ("with the same version" if first.version == spec.version
                        else f"as {first.key} and {spec.key}")
                places = (f"twice in {where}" if first_where == where
                          else f"in {first_where} and in {where}")
                raise ConfigError(
                    f"capability {spec.name!r} is declared {places}, {same}",
                    hint="declare it once: remove its [[capabilities]] table from the config "
                         "or stop passing it in code (to serve a new version, change the "
                         "one declaration)" if first_where != where
                    else "remove one of the two declarations",
                    capability=spec.name)
            found[(spec.name, spec.major)] = (spec, where)
    return [spec for spec, _ in found.values()]
