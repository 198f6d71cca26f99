"""The lock file: strict reading (every bad input is a ConfigError naming the file and the fix),
atomic writing, and the CLI rendering a broken lock as an error, not a traceback."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aios_mesh.cli import app
from aios_mesh.errors import ConfigError, MeshError
from aios_mesh.lockfile import LOCK_VERSION, LockFile
from aios_mesh.ports.registry import ModelRef

PATH = Path("/nonexistent/aios-mesh.lock")  # only named in errors by from_bytes


def _entry(**kw: Any) -> dict[str, Any]:
    return {"name": "m", "version": "3", "source": "models:/m-1", "run_id": None,
            "alias": "champion", "tags": {}, **kw}


def _doc(**kw: Any) -> bytes:
    return orjson.dumps({"lock_version": 1, "models": {"m@champion": _entry()}, **kw})


def _config_error(data: bytes) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        LockFile.from_bytes(data, PATH)
    return info.value


# -- reading what `aios-mesh lock` wrote ------------------------------------------------------

def test_write_then_read_round_trips(tmp_path: Path) -> None:
    lock = LockFile(created_at="2025-01-01T00:00:00+00:00")
    lock.models["m@champion"] = ModelRef("m", "3", source="models:/m-1", run_id="r1",
                                         alias="champion", tags={"tracking_uri": "sqlite://"})
    lock.indexes["vendors"] = "snap-7"
    path = tmp_path / "sub" / "aios-mesh.lock"
    lock.write(path)
    assert LockFile.read(path) == lock
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert sorted(p.name for p in path.parent.iterdir()) == ["aios-mesh.lock"]  # no temp left


def test_a_missing_lock_is_no_lock(tmp_path: Path) -> None:
    assert LockFile.read(tmp_path / "aios-mesh.lock") is None


def test_hand_written_leniencies_load() -> None:
    # an integer version, null tags, no optional fields and unknown extra keys (a newer writer)
    lock = LockFile.from_bytes(orjson.dumps({
        "lock_version": 1, "written_by": "aios-mesh 9",
        "models": {"m@champion": {"name": "m", "version": 3, "tags": None, "new": 1},
                   "n/2": {"name": "n", "version": "2"}}}), PATH)
    assert lock.models["m@champion"] == ModelRef("m", "3")
    assert lock.models["n/2"].version == "2"
    assert lock.indexes == {} and lock.created_at == ""


# -- bad input: a typed error that names the file and the fix ---------------------------------

BAD_DOCUMENTS = [
    pytest.param(b"", "is empty", id="empty"),
    pytest.param(b" \n\t", "is empty", id="blank"),
    pytest.param(b'{"lock_version": 1,', "is not valid JSON", id="truncated"),
    pytest.param(b"\xff\xfe{}", "is not valid JSON", id="not-utf8"),
    pytest.param(b"[]", "the document should be a JSON object (got array)", id="array"),
    pytest.param(b"null", "the document should be a JSON object (got null)", id="null"),
    pytest.param(b'{"models": {}}', "has no lock_version", id="no-version"),
    pytest.param(b'{"lock_version": 2}', "format version 2; this aios-mesh reads version 1",
                 id="newer-version"),
    pytest.param(b'{"lock_version": "1"}', 'format version "1"', id="version-string"),
    pytest.param(b'{"lock_version": true}', "format version true", id="version-bool"),
    pytest.param(b'{"lock_version": 1.0}', "format version 1.0", id="version-float"),
    pytest.param(b'{"lock_version": 1, "models": []}',
                 "models should be a JSON object (got array)", id="models-list"),
    pytest.param(b'{"lock_version": 1, "indexes": [1, 2]}',
                 "indexes should be a JSON object (got array)", id="indexes-list"),
    pytest.param(b'{"lock_version": 1, "indexes": {"vendors": 7}}',
                 "indexes.vendors should be a string (got number)", id="index-number"),
    pytest.param(b'{"lock_version": 1, "created_at": 5}', "created_at should be a string",
                 id="created-at-number"),
    pytest.param(b'{"lock_version": 1, "models": {"m@champion": "3"}}',
                 "models['m@champion'] should be a JSON object (got string)", id="entry-string"),
    pytest.param(_doc(models={"m@champion": {"name": "m"}}),
                 "models['m@champion'].version is missing", id="entry-no-version"),
    pytest.param(_doc(models={"m@champion": _entry(version=True)}),
                 "models['m@champion'].version should be a string (got boolean)",
                 id="version-is-bool"),
    pytest.param(_doc(models={"m@champion": _entry(version=None)}),
                 "version should be a string (got null)", id="version-null"),
    pytest.param(_doc(models={"m@champion": _entry(name="")}),
                 "models['m@champion'].name should not be empty", id="empty-name"),
    pytest.param(_doc(models={"m@champion": _entry(tags=["a"])}),
                 "models['m@champion'].tags should be a JSON object (got array)",
                 id="tags-list"),
    pytest.param(_doc(models={"not a spec!": _entry()}),
                 "the key 'not a spec!' in models: malformed model reference", id="bad-spec"),
]


@pytest.mark.parametrize(("data", "message"), BAD_DOCUMENTS)
def test_bad_documents_are_config_errors_that_name_the_file_and_the_fix(
        data: bytes, message: str) -> None:
    exc = _config_error(data)
    assert message in exc.message
    assert exc.message.startswith(f"lock file {PATH} ")
    assert exc.hint is not None and "aios-mesh lock" in exc.hint
    assert exc.details["path"] == str(PATH)


def test_a_wrong_shape_says_what_shape_is_expected_and_lists_every_problem() -> None:
    exc = _config_error(_doc(models={f"m@a{i}": _entry(version=None) for i in range(5)}))
    assert "(and 2 more)" in exc.message
    assert len(exc.details["problems"]) == 5
    assert exc.hint is not None and '"lock_version": 1' in exc.hint and '"models"' in exc.hint


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory, not a file") as info:
        LockFile.read(tmp_path)
    assert str(tmp_path) in info.value.message and "lock_file" in str(info.value.hint)


def test_an_unreadable_lock_is_a_config_error(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "aios-mesh.lock"
    path.write_bytes(_doc())

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError, match="cannot be read: permission denied") as info:
        LockFile.read(path)
    assert str(path) in info.value.message and "chmod" in str(info.value.hint)


def test_a_path_through_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot be read"):
        LockFile.read(tmp_path / "file" / "aios-mesh.lock")


# -- atomic writing -----------------------------------------------------------------------------

def _locked(version: str) -> LockFile:
    return LockFile({"m@champion": ModelRef("m", version, alias="champion")})


@pytest.mark.parametrize("fails", ["fsync", "replace"])
def test_a_failed_write_leaves_the_old_lock_whole(tmp_path: Path, fails: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "aios-mesh.lock"
    _locked("1").write(path)
    path.chmod(0o640)
    before = path.read_bytes()

    def boom(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, fails, boom)
    with pytest.raises(ConfigError, match="cannot write lock file") as info:
        _locked("2").write(path)
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["aios-mesh.lock"]  # the temp file is gone
    _locked("3").write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # a rewrite keeps the file's mode
    lock = LockFile.read(path)
    assert lock is not None and lock.models["m@champion"].version == "3"


def test_writing_over_a_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "aios-mesh.lock").mkdir()
    with pytest.raises(ConfigError, match="cannot write lock file"):
        _locked("1").write(tmp_path / "aios-mesh.lock")
    assert [p.name for p in tmp_path.iterdir()] == ["aios-mesh.lock"]


# -- properties: any document loads into a valid lock or is a ConfigError, nothing else --------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=12)
SPECS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,8}(@[A-Za-z0-9_\-]{1,6}|/[0-9]{1,3})?",
                      fullmatch=True)
TEXT = st.text(max_size=8)
# near-valid entries, so the property reaches the field checks and not only "not an object"
ENTRIES = st.fixed_dictionaries(
    {}, optional={"name": TEXT | JSON, "version": TEXT | st.integers() | JSON,
                  "source": TEXT | JSON, "run_id": st.none() | TEXT | JSON,
                  "alias": st.none() | TEXT | JSON,
                  "tags": st.none() | st.dictionaries(TEXT, TEXT, max_size=2) | JSON})
DOCUMENTS = JSON | st.fixed_dictionaries(
    {}, optional={
        "lock_version": st.sampled_from([LOCK_VERSION, LOCK_VERSION, 0, 2, True, 1.0, "1"]) | JSON,
        "created_at": TEXT | JSON,
        "models": st.dictionaries(SPECS | TEXT, ENTRIES | JSON, max_size=3) | JSON,
        "indexes": st.dictionaries(TEXT, TEXT | JSON, max_size=3) | JSON,
    })


def _load_or_config_error(data: bytes) -> LockFile | None:
    try:
        lock = LockFile.from_bytes(data, PATH)
    except ConfigError as exc:  # anything else fails the test
        error = exc
    else:
        error = None
    if error is not None:
        assert error.message.startswith(f"lock file {PATH} ")
        assert error.hint
        return None
    assert all(isinstance(s, str) and isinstance(r, ModelRef) and r.name and r.version
               and isinstance(r.version, str) and all(isinstance(v, str) for v in r.tags.values())
               for s, r in lock.models.items())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in lock.indexes.items())
    # what loads, writes back into a document that loads the same
    again = LockFile.from_bytes(orjson.dumps(lock.to_document()), PATH)
    assert (again.models, again.indexes) == (lock.models, lock.indexes)
    return lock


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS)
def test_any_json_document_loads_or_is_a_config_error(doc: Any) -> None:
    _load_or_config_error(json.dumps(doc).encode())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_load_or_are_a_config_error(data: bytes) -> None:
    _load_or_config_error(data)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(SPECS, st.builds(ModelRef, name=st.from_regex(r"[a-z][a-z0-9-]{0,8}",
                                                                     fullmatch=True),
                                        version=st.from_regex(r"[0-9]{1,4}", fullmatch=True),
                                        source=TEXT, run_id=st.none() | TEXT,
                                        alias=st.none() | TEXT,
                                        tags=st.dictionaries(TEXT, TEXT, max_size=2)),
                       max_size=4),
       st.dictionaries(TEXT, TEXT, max_size=3))
def test_every_written_lock_reads_back_equal(tmp_path: Path, models: dict[str, ModelRef],
                                             indexes: dict[str, str]) -> None:
    lock = LockFile(models, indexes, created_at="2025-01-01T00:00:00+00:00")
    path = tmp_path / "aios-mesh.lock"  # the same file each example: write replaces it
    lock.write(path)
    assert LockFile.read(path) == lock


# -- the CLI: a broken lock is an error message, never a traceback -----------------------------

@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "aios-mesh.toml"
    path.write_text('state_dir = "state"\n[tenants.acme]\n'
                    "[telemetry]\nlineage = false\ndecision_events = false\n")
    return path


@pytest.mark.parametrize("args", [
    ["capabilities"], ["lock"], ["doctor"],
    ["invoke", "route-ticket", "--tenant", "acme", "--json", "{}"],
], ids=lambda args: args[0])
@pytest.mark.parametrize(("lock", "message"), [
    (b"", "is empty"),
    (b'{"lock_version": 1, "models": []}', "models should be a JSON object"),
    (b'{"lock_version": 1, "indexes": [1, 2]}', "indexes should be a JSON object"),
    (None, "is a directory"),
], ids=["empty", "models-list", "indexes-list", "directory"])
def test_cli_reports_a_broken_lock_without_a_traceback(config: Path, args: list[str],
                                                       lock: bytes | None, message: str) -> None:
    path = config.parent / "aios-mesh.lock"
    if lock is None:
        path.mkdir()
    else:
        path.write_bytes(lock)
    result = CliRunner().invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not an escaped error
    assert not isinstance(result.exception, MeshError)
    assert "Traceback" not in result.output
    flat = result.output.replace("\n", "")  # rich wraps long paths
    words = re.sub(r"\s+", " ", result.output)
    assert "ConfigError" in words and message in words
    assert str(path) in flat
    assert "aios-mesh lock" in words or "lock_file" in words  # the hint says how to fix it
