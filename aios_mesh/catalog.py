"""The capability catalog: every capability a mesh serves, by name."""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable, Iterator

from aios_mesh.capabilities import CapabilitySpec
from aios_mesh.errors import ConfigError, UnknownCapability

__all__ = ["Catalog", "declared"]


class Catalog:
    """Capabilities by name. Registering a name again replaces its spec.

    Example::

        catalog = Catalog([spec])
        catalog.get("classify-ticket")      # UnknownCapability, with a "did you mean", if not
    """

    def __init__(self, specs: Iterable[CapabilitySpec] = ()) -> None:
        self._specs: dict[str, CapabilitySpec] = {}
        self._lock = threading.Lock()
        for spec in specs:
            self.register(spec)

    def register(self, spec: CapabilitySpec) -> CapabilitySpec:
        """Add (or replace) a capability; returns it."""
        with self._lock:
            self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> CapabilitySpec:
        """The capability called ``name``, or :class:`UnknownCapability` naming the closest."""
        try:
            return self._specs[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._specs), n=1)
            hint = (f"did you mean {close[0]!r}?" if close
                    else "`aios-mesh capabilities` lists what is registered")
            raise UnknownCapability(f"no capability named {name!r}", hint=hint) from None

    def as_dict(self) -> dict[str, CapabilitySpec]:
        """A copy of the catalog, by name."""
        return dict(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[CapabilitySpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)


def declared(config: Iterable[CapabilitySpec], code: Iterable[CapabilitySpec]
             ) -> list[CapabilitySpec]:
    """The capabilities a mesh starts with: those of its config file and those given in
    code, in that order. A name declared twice (in either place, or once in each) is a
    :class:`ConfigError`: the catalog holds one spec per name, and letting one silently win
    would serve a capability its author did not write."""
    found: dict[str, tuple[CapabilitySpec, str]] = {}
    for where, specs in (("the config file", config), ("code", code)):
        for spec in specs:
            seen = found.get(spec.name)
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
            found[spec.name] = (spec, where)
    return [spec for spec, _ in found.values()]
