"""A bulk job's JSONL input: every non-blank line is a row in order, a bad line fails alone;
file references stay inside the job folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_mesh.errors import InvalidInput, PayloadTooLarge
from aios_mesh.gateway.identity import Forbidden
from aios_mesh.gateway.jobs import parse_jsonl, read_job_file, row_record_id

payloads = st.dictionaries(st.text(max_size=5),
                           st.integers() | st.text(max_size=10) | st.booleans(), max_size=3)
garbage = st.text(min_size=1, max_size=12).filter(
    lambda t: t.strip() != "" and "\n" not in t and "\r" not in t and not _is_json(t))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@given(st.lists(st.one_of(payloads.map(lambda p: ("ok", p)), garbage.map(lambda g: ("bad", g)),
                          st.just(("blank", ""))), min_size=1, max_size=20))
def test_rows_keep_their_order_and_bad_lines_fail_alone(
        lines: list[tuple[str, object]]) -> None:
    text = "\n".join(json.dumps(v) if kind == "ok" else str(v) for kind, v in lines)
    kept = [(n, kind, v) for n, (kind, v) in enumerate(lines, 1) if kind != "blank"]
    if not kept:
        with pytest.raises(InvalidInput):
            parse_jsonl(text.encode())
        return
    rows = parse_jsonl(text.encode())
    assert [r.line for r in rows] == [n for n, _, _ in kept]
    for row, (n, kind, value) in zip(rows, kept, strict=True):
        if kind == "ok":
            assert row.problem is None and row.input is not None
            assert json.loads(row.input) == value
        else:
            assert row.input is None and row.problem is not None
            assert row.problem["code"] == "invalid_input" and f"line {n}" in \
                row.problem["detail"]


def test_crlf_lines_and_bad_utf8() -> None:
    rows = parse_jsonl(b'{"a": 1}\r\n\xff\xfe\r\n')
    assert rows[0].input == '{"a": 1}' and rows[1].problem is not None


@given(st.text(alphabet="ab./", min_size=1, max_size=12))
def test_a_file_reference_never_leaves_the_folder(tmp_path_factory: pytest.TempPathFactory,
                                                  name: str) -> None:
    root = tmp_path_factory.mktemp("jobs")
    (root / "a").write_text('{"n": 1}\n')
    inside = (root / name).resolve().is_relative_to(root.resolve())
    if inside and (root / name).resolve().is_file():
        assert read_job_file(root, name, limit=1000) == b'{"n": 1}\n'
    else:
        escapes = not inside and not name.startswith("/")  # absolute: InvalidInput
        with pytest.raises(Forbidden if escapes else InvalidInput) as err:
            read_job_file(root, name, limit=1000)
        assert err.value.hint


def test_file_references_are_refused_without_a_folder_links_out_and_too_big(
        tmp_path: Path) -> None:
    (tmp_path / "outside.jsonl").write_text('{"n": 1}\n')
    root = tmp_path / "jobs"
    root.mkdir()
    (root / "link.jsonl").symlink_to(tmp_path / "outside.jsonl")
    (root / "big.jsonl").write_text('{"n": 1}\n' * 100)
    with pytest.raises(Forbidden):
        read_job_file(None, "big.jsonl", limit=10_000)
    with pytest.raises(Forbidden):
        read_job_file(root, "link.jsonl", limit=10_000)
    with pytest.raises(InvalidInput):
        read_job_file(root, str(root / "big.jsonl"), limit=10_000)
    with pytest.raises(InvalidInput):
        read_job_file(root, 7, limit=10_000)
    with pytest.raises(PayloadTooLarge):
        read_job_file(root, "big.jsonl", limit=10)
    assert read_job_file(root, "big.jsonl", limit=10_000).count(b"\n") == 100


def test_row_record_ids_are_stable_and_distinct() -> None:
    assert row_record_id("j", 0) == row_record_id("j", 0)
    ids = {row_record_id(j, i) for j in ("j1", "j2") for i in range(100)}
    assert len(ids) == 200 and all(len(i) == 36 for i in ids)
