"""A bulk job's input: JSONL (one JSON document per line, each a call's payload), sent as the
request body or named as a file under the operator's job folder.

A line that is not JSON does not stop the job: it becomes a row that failed with its own
problem (``invalid_input``, naming the line). Blank lines are not rows.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from aios_mesh.errors import InvalidInput, PayloadTooLarge
from aios_mesh.gateway.identity import Forbidden
from aios_mesh.gateway.jobs.store import NewRow
from aios_mesh.gateway.problems import problem_body

__all__ = ["JSONL_TYPES", "parse_jsonl", "read_job_file"]

#: Content types of a JSONL body.
JSONL_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonl"})


def parse_jsonl(data: bytes) -> list[NewRow]:
    """The rows of a JSONL document, in order; raises :class:`InvalidInput` when it has no
    row at all."""
    rows: list[NewRow] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = raw.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            orjson.loads(line)
            rows.append(NewRow(number, line.decode()))
        except orjson.JSONDecodeError as exc:
            error = InvalidInput(f"line {number} is not valid JSON ({exc.msg} at column "
                                 f"{exc.colno})",
                                 hint="write one JSON document per line (JSON Lines)")
            rows.append(NewRow(number, None, problem_body(error)))
    if not rows:
        raise InvalidInput("the job has no rows", hint="send one JSON payload per line")
    return rows


def read_job_file(folder: Path | None, name: object, *, limit: int) -> bytes:
    """The bytes of the job file ``name``, a relative path under ``folder`` (the operator's
    job folder). Anything else — no folder configured, an absolute path, ``..`` or a link
    leading out of the folder, a missing file — is refused."""
    if folder is None:
        raise Forbidden("this gateway takes no file references",
                        hint="send the JSONL as the request body, or ask the operator to "
                             "set the gateway's job folder")
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise InvalidInput("'file' must be a relative path under the job folder",
                           hint='write {"capability": "...", "file": "batch/rows.jsonl"}')
    root = folder.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise Forbidden(f"{name!r} is outside the job folder",
                        hint="name a file under the job folder (no '..', no links out)")
    if not path.is_file():
        raise InvalidInput(f"there is no file {name!r} in the job folder",
                           hint="check the name (relative to the job folder)")
    size = path.stat().st_size
    if size > limit:
        raise PayloadTooLarge(f"{name!r} is {size} bytes, over the {limit}-byte limit",
                              hint="split it into several jobs")
    return path.read_bytes()
