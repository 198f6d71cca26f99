"""Embedded Policy adapter: Rego evaluated in-process by regopy (Microsoft rego-cpp).

URL: ``rego:///policies`` (a folder relative to the ``base_dir`` given to ``from_url``) or
``rego:////abs/policies``; option ``?strict_builtin_errors=false`` turns built-in errors back
into *undefined* (OPA's default) instead of errors. ``RegoPolicy.from_path(folder)`` does the
same without a URL.

The bundle
    Every ``*.rego`` file under the folder (recursively; names starting with ``.`` are skipped)
    and every ``data.json``, merged into ``data`` at its folder's path (``tenants/data.json``
    becomes ``data.tenants``), as in an OPA bundle. Everything is read, checked and compiled
    once, at load. A syntax error raises :class:`~aios_mesh.errors.ConfigError` naming
    ``file:line:col``; so do a data key defined by two files, a data key that overlaps a
    package (rego-cpp would let data silently replace the rules), a file without ``package``,
    and a call to an unknown function found by a one-off evaluation with an empty input.
    ``bundle_hash`` is the sha256 over the sorted ``(relative path, content)`` of those files
    (``*.schema.json`` input schemas included, see :mod:`aios_mesh.policy_bundle`).

The contract of ``await decide(path, input)``
    ``path`` (``"mesh/invoices"`` or ``"mesh.invoices"``, optionally prefixed ``data.``) names
    a Rego package. The package defines ``allow`` (boolean) and optionally ``reason``
    (string), ``reason_code`` (a short identifier, e.g. ``currency_not_accepted``) and
    ``obligations`` (object: ``redact`` list of strings, ``require_human`` bool,
    ``max_cost`` number, ``output`` object — ``pii``, ``pii_kinds``, ``blocked_terms``,
    ``on_blocked``, ``schema``: the output guardrails, docs/governance/output-guardrails.md),
    evaluated against ``input`` = :meth:`PolicyInput.to_document`. The obligations are parsed
    by :func:`~aios_mesh.ports.policy.decision_from_result`, the same for every engine.

    * ``allow`` true/false → ``Decision(allow, reason, Obligations(...), policy=path,
      bundle_hash=...)``. A deny without a ``reason`` gets ``"<pkg>.allow is false"``.
      Denying never raises here; the pipeline turns a deny into ``PolicyDenied``.
    * ``allow`` undefined → ``Decision(allow=False, reason="default deny: <pkg>.allow is
      undefined", reason_code="allow_undefined")``; a deny without ``reason_code`` gets
      ``"unspecified"``.
    * ``allow`` not a boolean, ``reason`` not a string, ``obligations`` not of the shape above
      or with an unknown key (an obligation the mesh cannot enforce must not pass silently)
      → :class:`~aios_mesh.errors.InvalidOutput` naming the package and its files.
    * A runtime error in Rego (conflicting values for a complete rule, a built-in error such
      as ``to_number("x")``, an unknown function) → :class:`InvalidOutput` with
      ``details["rego_code"]`` (e.g. ``eval_conflict_error``); never a process abort.
    * An unknown package → :class:`~aios_mesh.errors.NotFound` listing the known packages
      (a typo in a capability's policy name is a bug, not a deny).
    * An input that is not JSON (a set, a datetime, NaN) → :class:`InvalidInput`.

Performance and threads
    Only ``allow``, ``reason``, ``reason_code`` and ``obligations`` are evaluated (one
    compiled entrypoint per package), so helper rules that are not used cost nothing.
    rego-cpp is fast (a decision takes well under a millisecond; see docs/ports/policy.md),
    so ``decide`` runs inline in
    the event loop. The interpreter keeps the input between ``set_input`` and the query, so a
    ``threading.Lock`` serialises evaluations: safe from several threads or event loops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

from aios_mesh.backends import BackendURL
from aios_mesh.errors import NotFound
from aios_mesh.policy_bundle import InputSchemas, parse_policy_path
from aios_mesh.ports.base import Feature
from aios_mesh.ports.policy import Decision, PolicyInput, decision_from_result

from ._bundle import BundleFiles, load_bundle_files, package_key
from ._engine import CompiledBundle

__all__ = ["RegoPolicy"]



_parse_path = parse_policy_path


class RegoPolicy:
    """The embedded Policy adapter; see the module docstring for the full contract."""

    features: ClassVar[frozenset[Feature]] = frozenset({Feature.OBLIGATIONS})

    def __init__(self, folder: Path, *, strict_builtin_errors: bool = True) -> None:
        self._folder = Path(folder)
        self._strict = strict_builtin_errors
        self._compiled = self._compile()

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: BackendURL, *, base_dir: Path, **options: Any) -> Self:
        """``rego:///policies`` → the folder ``base_dir/policies``."""
        url = url.with_options(options)
        url.check_options({"strict_builtin_errors"}, what="rego")
        return cls(url.resolve_path(base_dir),
                   strict_builtin_errors=url.flag("strict_builtin_errors", True))

    @classmethod
    def from_path(cls, folder: str | Path, *, strict_builtin_errors: bool = True) -> Self:
        """Load the bundle in ``folder`` (``*.rego`` files and ``data.json`` documents)."""
        return cls(Path(folder), strict_builtin_errors=strict_builtin_errors)

    def _compile(self) -> CompiledBundle:
        files: BundleFiles = load_bundle_files(self._folder)
        return CompiledBundle(files, strict_builtin_errors=self._strict)

    def reload(self) -> None:
        """Re-read and recompile the folder; on any error the old bundle stays in place.

        Decisions already running finish on the old bundle (it is freed when they drop it).
        """
        self._compiled = self._compile()

    # -- the port -------------------------------------------------------------------------

    @property
    def bundle_hash(self) -> str:
        """sha256 over the sorted (relative path, content) pairs of the loaded files."""
        return self._compiled.files.bundle_hash

    @property
    def folder(self) -> Path:
        return self._folder

    @property
    def input_schemas(self) -> InputSchemas:
        """The input schemas the bundle's packages declare (``<name>.schema.json``)."""
        return self._compiled.files.schemas

    @property
    def packages(self) -> list[str]:
        """The dotted names of the packages in the bundle."""
        return sorted(package_key(p) for p in self._compiled.packages)

    async def decide(self, path: str, input: PolicyInput) -> Decision:
        """Evaluate package ``path`` against ``input`` (inline: rego-cpp answers in µs)."""
        return self.decide_sync(path, input)

    def decide_sync(self, path: str, input: PolicyInput) -> Decision:
        """The synchronous core of :meth:`decide`."""
        compiled = self._compiled
        package = _parse_path(path)
        if compiled.entrypoint(package) is None:
            known = ", ".join(self.packages[:20])
            raise NotFound(f"no Rego package {package_key(package)!r} in {self._folder}",
                           hint=f"known packages: {known}", policy=path)
        result = compiled.evaluate(package, input.to_document())
        return self._decision(path, package, result, compiled)

    def _decision(self, path: str, package: tuple[str, ...], result: dict[str, Any],
                  compiled: CompiledBundle) -> Decision:
        return decision_from_result(result, package=package_key(package), path=path,
                                    bundle_hash=compiled.files.bundle_hash,
                                    where=", ".join(compiled.packages[package]))

    async def aclose(self) -> None:
        """Release the compiled bundle; later calls raise :class:`MeshError`."""
        self._compiled.close()

    def __repr__(self) -> str:
        return f"RegoPolicy({str(self._folder)!r}, bundle_hash={self.bundle_hash[:12]!r})"
