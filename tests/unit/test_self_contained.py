"""Nothing outside the repository: a clone with nothing beside it collects and finds its schemas.

The OpenLineage schemas are package data of the conformance kit, the Compose spec is in
``tests/data/``; no file may point at a folder beside the checkout. The guard copies the
repository's files (``git ls-files``: tracked plus untracked-but-not-ignored, so it also holds
while a change is being made) into an empty temporary folder, collects the whole suite there
with this environment's Python under an audit hook and runs the tests that read the vendored
schemas; any file opened under the folder that holds the checkout (other than the virtual
environment) fails the test. The environments ``make`` builds inside a clone (``.venv``,
``.nox``) are borrowed from this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from aios_mesh.testing.conformance.lineage import OpenLineageSchemas, packaged_schema_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Spelled in pieces so this file does not match itself.
FORBIDDEN = ("../" + "shared", "/ " + '"shared"', "shared" + "/schemas")
#: The status log may tell the story of how things were; it is not read by any code.
ALLOWED = {"docs/dev/STATUS.md"}
#: Ignored folders never copied by the fallback (no git): environments and caches.
_IGNORED = (".git", ".venv", ".nox", ".mypy_cache", ".ruff_cache", ".pytest_cache",
            ".hypothesis", ".aios-mesh", "__pycache__", "*.egg-info", "build", "dist", "site")


def _repository_files() -> list[str]:
    """Every file a fresh clone (plus the change being made) holds, relative to the root."""
    git = shutil.which("git")
    if git is not None and (REPO_ROOT / ".git").exists():
        out = subprocess.run(
            [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO_ROOT, capture_output=True, check=True).stdout
        return sorted({name for name in out.decode().split("\0")
                       if name and (REPO_ROOT / name).is_file()})
    ignore = shutil.ignore_patterns(*_IGNORED)
    names: list[str] = []
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in ignore(folder, dirs)]
        names += [str(Path(folder, f).relative_to(REPO_ROOT)) for f in files
                  if f not in ignore(folder, files)]
    return sorted(names)


def test_no_file_points_beside_the_checkout() -> None:
    offenders = []
    for name in _repository_files():
        if name in ALLOWED:
            continue
        try:
            text = (REPO_ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files
        offenders += [f"{name}: {needle}" for needle in FORBIDDEN if needle in text]
    assert not offenders, "files that read outside the repository:\n" + "\n".join(offenders)


def test_the_schemas_ship_inside_the_package() -> None:
    folder = packaged_schema_dir()
    assert (folder / "OpenLineage.json").is_file()
    assert Path(str(folder)).resolve().is_relative_to(REPO_ROOT / "aios_mesh")
    schemas = OpenLineageSchemas()  # the default is the packaged copy
    assert schemas.root_id == "https://openlineage.io/spec/2-0-2/OpenLineage.json"
    assert {"parent", "errorMessage", "processing_engine", "jobType", "version",
            "datasetType"} <= set(schemas.facet_files)
    assert (REPO_ROOT / "tests" / "data" / "compose-spec.json").is_file()


def test_setuptools_packages_the_schemas() -> None:
    """The wheel holds the schemas: pyproject's package-data names their folders."""
    import tomllib

    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["aios_mesh.testing.conformance"]
    package = REPO_ROOT / "aios_mesh" / "testing" / "conformance"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    wanted = {p for p in (package / "schemas").rglob("*") if p.is_file()}
    assert wanted and wanted <= shipped, sorted(str(p) for p in wanted - shipped)


_RUNNER = textwrap.dedent("""
    import os, sys

    copy, outside, allowed = sys.argv[1], sys.argv[2], sys.argv[3:]
    seen = []

    def hook(event, args):
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        inside = any(path == a or path.startswith(a + os.sep) for a in [copy, *allowed])
        # a dot folder beside the checkout is a user's settings (~/.config ...), not a sibling
        below = path[len(outside) + 1:]
        if path.startswith(outside + os.sep) and not inside and not below.startswith("."):
            seen.append(path)

    sys.addaudithook(hook)
    import pytest

    code = pytest.main(os.environ["RUNNER_ARGS"].split("\\x1f"))
    if seen:
        print("READ OUTSIDE THE COPY:", *sorted(set(seen)), sep="\\n  ")
        code = code or 99
    sys.exit(code)
""")


def _run_in(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # the Python environment, and the server environments borrowed from this checkout
    prefixes = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                              REPO_ROOT / ".nox")}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIOS_MESH_", "PYTEST_", "COV_"))}
    # temporary files (pytest's own, capture files) go inside the copy: a checkout whose
    # parent is the system temp folder (a clone in /tmp) must not count them as siblings
    scratch = copy / ".tmp"
    scratch.mkdir(exist_ok=True)
    env.update(PYTHONPATH=os.pathsep.join([str(copy), str(copy / "adapters")]),
               PYTHONDONTWRITEBYTECODE="1", RUNNER_ARGS="\x1f".join(args),
               TMPDIR=str(scratch))
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, str(copy), str(REPO_ROOT.parent), *sorted(prefixes)],
        cwd=copy, env=env, capture_output=True, text=True, timeout=240, check=False)


def test_a_copy_with_nothing_beside_it_collects_and_reads_its_own_schemas(
        tmp_path: Path) -> None:
    copy = tmp_path / "clone"
    for name in _repository_files():
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    assert list(tmp_path.iterdir()) == [copy]  # nothing beside it
    # `make` builds the model servers' environments inside a clone (.nox/, ignored by git);
    # the copy borrows this checkout's rather than building them again
    if (REPO_ROOT / ".nox").is_dir():
        (copy / ".nox").symlink_to(REPO_ROOT / ".nox", target_is_directory=True)

    # one run: the whole suite is collected (every module imported; an error fails the run),
    # then only the tests that read the vendored schemas run
    ran = _run_in(copy, "-q", "-p", "no:cacheprovider", "tests", "-k",
                  "test_compose_schema or test_facets_of_real_decision_records")
    summary = ran.stdout.splitlines()[-1] if ran.stdout else ""
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    assert " passed" in summary and "error" not in summary, ran.stdout[-2000:]
