"""The regopy (rego-cpp) side: compile a bundle once, evaluate one package per call.

Everything that touches the native library lives here, behind three rules learnt the hard way
(each has a test in ``tests/unit/test_rego_policy.py``):

* never read ``expressions()[0]`` of an output without checking it (an undefined result aborts
  the process), and never query a bundle whose ``ok()`` is false (segfault): we read the
  output's JSON text and the error nodes through ``regopy.rego_shared`` ourselves;
* ``data.pkg.allow`` queried directly is *undefined* when the rule is ``false``: each package
  gets a small wrapper rule ``result["allow"] := data.pkg.allow`` (and ``reason``,
  ``obligations``), compiled as a bundle entrypoint; a false value is then a real ``false``
  and only the three rules the mesh reads are evaluated (not the package's helpers);
* ``Interpreter.set_input`` converts Python values lossily (strings cut at NUL, ints past
  64 bits become 0, floats rounded to 6 decimals, ``"``/``\\`` kept unescaped so they never
  equal a Rego literal). Documents that are safe for it take that fast path; every other
  document goes through ``set_input_term`` with JSON, which is exact but slower.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from typing import Any, Final

import regopy
from regopy import rego_shared as native

from aios_mesh.errors import ConfigError, InvalidInput, InvalidOutput, MeshError

from ._bundle import INTERNAL_PACKAGE, BundleFiles, line_col, package_key

__all__ = ["CompiledBundle", "RegoErrorInfo", "native_input"]

_KIND_ERROR: Final = 1800
_KIND_ERROR_MSG: Final = 1801
_KIND_ERROR_CODE: Final = 1803
_RESULT_RULES: Final = ("allow", "reason", "reason_code", "obligations")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# JSON escapes these characters; rego-cpp keeps escapes verbatim inside strings, so a string
# holding one must travel as JSON text to compare equal to the same Rego literal.
_UNSAFE_CHARS: Final = re.compile(r'["\\\x00-\x1f\x7f]')
_ERROR_RE: Final = re.compile(rb"\(error (\d+):")
_LOCATION_RE: Final = re.compile(rb"\|(\d+)\|(\d+)")
_ERRORMSG_RE: Final = re.compile(rb"\(errormsg (\d+):")


@dataclass(frozen=True, slots=True)
class RegoErrorInfo:
    """One error reported by rego-cpp."""

    message: str
    code: str = ""
    module: str | None = None
    offset: int | None = None

    def where(self, sources: dict[str, str], root: str) -> str:
        if self.module is None:
            return ""
        if self.offset is not None and self.module in sources:
            line, col = line_col(sources[self.module], self.offset)
            return f"{root}/{self.module}:{line}:{col}"
        return f"{root}/{self.module}"


def _take(raw: bytes, start: int, size: int) -> str:
    return raw[start:start + size].decode("utf-8", "replace")


def parse_error_text(text: str) -> list[RegoErrorInfo]:
    """Errors from the text of a ``RegoError`` (``(rego-errorseq (error 6:a.rego|32|2 ...``)."""
    raw = text.encode("utf-8")
    found: list[RegoErrorInfo] = []
    starts = [m for m in _ERROR_RE.finditer(raw)]
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(raw)
        name_len = int(match[1])
        module = _take(raw, match.end(), name_len) or None
        pos = match.end() + name_len
        loc = _LOCATION_RE.match(raw, pos)
        offset = int(loc[1]) if loc else None
        msg = _ERRORMSG_RE.search(raw, pos, end)
        message = _take(raw, msg.end(), int(msg[1])) if msg else "unknown error"
        found.append(RegoErrorInfo(message=message, module=module, offset=offset))
    if not found:
        found.append(RegoErrorInfo(message=text.strip() or "unknown rego error"))
    return found


def _node_value(node: int) -> str:
    try:
        return str(native.rego_node_value(node))
    except regopy.RegoError:
        return ""


def errors_from_node(node: int | None) -> list[RegoErrorInfo]:
    """Walk an error node (``rego-errorseq`` / ``rego-error``) and collect message and code."""
    found: list[RegoErrorInfo] = []

    def walk(current: int, depth: int) -> None:
        if depth > 8:
            return
        kind = int(native.rego.regoNodeType(current))
        size = int(native.rego_node_size(current))
        if kind == _KIND_ERROR:
            message, code = "", ""
            for i in range(size):
                child = native.rego_node_get(current, i)
                child_kind = int(native.rego.regoNodeType(child))
                if child_kind == _KIND_ERROR_MSG:
                    message = _node_value(child)
                elif child_kind == _KIND_ERROR_CODE:
                    code = _node_value(child)
            found.append(RegoErrorInfo(message=message or "unknown error", code=code))
            return
        for i in range(size):
            walk(native.rego_node_get(current, i), depth + 1)

    if node:
        walk(node, 0)
    return found or [RegoErrorInfo(message="unknown rego error")]


class _NotFastSafe(Exception):
    """The value would not survive regopy's direct conversion; use the JSON path."""


_lib = native.rego
_in_int, _in_float, _in_str = _lib.regoInputInt, _lib.regoInputFloat, _lib.regoInputString
_in_bool, _in_null, _in_item = _lib.regoInputBoolean, _lib.regoInputNull, _lib.regoInputObjectItem
_in_object, _in_array = _lib.regoInputObject, _lib.regoInputArray


def _push(p_input: int, value: Any) -> None:
    kind = type(value)
    if kind is str:
        if _UNSAFE_CHARS.search(value) is not None:
            raise _NotFastSafe
        rc = _in_str(p_input, value.encode("utf-8"))
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str or _UNSAFE_CHARS.search(key) is not None:
                raise _NotFastSafe
            if _in_str(p_input, key.encode("utf-8")):
                raise regopy.RegoError("rego-cpp refused an input key")
            _push(p_input, item)
            if _in_item(p_input):
                raise regopy.RegoError("rego-cpp refused an input item")
        rc = _in_object(p_input, len(value))
    elif value is None:
        rc = _in_null(p_input)
    elif kind is bool:
        rc = _in_bool(p_input, value)
    elif kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise _NotFastSafe
        rc = _in_int(p_input, value)
    elif kind is float:
        if not math.isfinite(value) or float(f"{value:.6f}") != value:
            raise _NotFastSafe
        rc = _in_float(p_input, value)
    elif kind is list or kind is tuple:
        for item in value:
            _push(p_input, item)
        rc = _in_array(p_input, len(value))
    else:
        raise _NotFastSafe
    if rc:
        raise regopy.RegoError(f"rego-cpp refused an input value of type {kind.__name__}")


def native_input(value: Any) -> int | None:
    """A rego-cpp input built directly from ``value``, or None when that would be lossy.

    regopy's direct conversion cuts strings at NUL, turns ints past 64 bits into 0, rounds
    floats to six decimals and keeps ``"``/``\\`` unescaped (so such a string never equals the
    same Rego literal). Only values that survive it exactly are converted here: strings
    without a character JSON escapes, 64-bit ints, floats that print exactly with six
    decimals, dict (str keys)/list/tuple/bool/None. The caller frees the returned pointer.
    """
    p_input = int(native.rego_new_input())
    try:
        _push(p_input, value)
    except (_NotFastSafe, UnicodeEncodeError, RecursionError):
        native.rego_free_input(p_input)
        return None
    except BaseException:
        native.rego_free_input(p_input)
        raise
    return p_input


def _wrapper_module(index: int, package: tuple[str, ...]) -> tuple[str, str]:
    ref = "data" + "".join(f"[{json.dumps(seg)}]" for seg in package)
    rules = "\n".join(f'result["{rule}"] := {ref}.{rule}' for rule in _RESULT_RULES)
    return f"{INTERNAL_PACKAGE}/e{index}", f"package {INTERNAL_PACKAGE}.e{index}\n\n{rules}\n"


class CompiledBundle:
    """A bundle compiled once; :meth:`evaluate` runs one package against one input document.

    One rego-cpp interpreter holds the input between ``set_input`` and the query, so calls are
    serialised by a lock (uncontended under one event loop; threads take turns).
    """

    def __init__(self, files: BundleFiles, *, strict_builtin_errors: bool = True) -> None:
        self.files = files
        self.packages = files.packages
        self._sources = {m.relpath: m.source for m in files.modules}
        self._entrypoints: dict[tuple[str, ...], str] = {}
        self._lock = threading.Lock()
        builder = regopy.Interpreter()
        builder.log_level = regopy.LogLevel.NONE  # errors come back to us, not to stdout
        if files.data:
            # one call with the merged document: several add_data calls lose keys in rego-cpp
            self._guard_load(lambda: builder.add_data_json(json.dumps(files.data)), "data")
        for module in files.modules:
            self._guard_load(lambda m=module: builder.add_module(m.relpath, m.source),
                             module.relpath)
        for index, package in enumerate(sorted(self.packages)):
            name, source = _wrapper_module(index, package)
            self._guard_load(lambda n=name, s=source: builder.add_module(n, s), None)
            self._entrypoints[package] = f"{name}/result"
        bundle = self._guard_load(lambda: builder.build(None, list(self._entrypoints.values())),
                                  None)
        if not bundle.ok():
            # querying a bundle that is not ok segfaults: refuse it here
            errors = errors_from_node(native.rego_bundle_node(bundle._impl))
            raise self._load_error(errors)
        self._builder = builder
        self._bundle: regopy.Bundle | None = bundle
        self._interpreter = regopy.Interpreter()
        self._interpreter.log_level = regopy.LogLevel.NONE
        self._interpreter.strict_built_in_errors = strict_builtin_errors
        self._smoke_check()

    # -- load -----------------------------------------------------------------------------

    def _guard_load(self, call: Any, module: str | None) -> Any:
        try:
            return call()
        except regopy.RegoError as exc:
            errors = parse_error_text(str(exc))
            if module is not None:
                errors = [e if e.module else RegoErrorInfo(e.message, e.code, module, e.offset)
                          for e in errors]
            raise self._load_error(errors) from exc

    def _load_error(self, errors: list[RegoErrorInfo]) -> ConfigError:
        root = str(self.files.root)
        first = errors[0]
        where = first.where(self._sources, root)
        listed = "; ".join(f"{e.where(self._sources, root) or root}: {e.message}"
                           for e in errors[:5])
        return ConfigError(
            f"cannot compile the policy bundle: {listed}",
            hint=f"fix the Rego at {where}" if where else "fix the Rego (and data.json) files "
                 f"of {root}; `opa check {root}` shows the same problems",
            file=where or root, errors=[e.message for e in errors])

    def _smoke_check(self) -> None:
        # rego-cpp compiles calls to unknown functions without complaint and reports them at
        # evaluation ("wellformed_error"). Evaluate every package once with an empty input so
        # most such mistakes fail at load; input-dependent branches can still hide one.
        for package in self.packages:
            try:
                self.evaluate(package, {})
            except InvalidOutput as exc:
                if exc.details.get("rego_code") == "wellformed_error":
                    files = ", ".join(self.packages[package])
                    raise ConfigError(
                        f"package {package_key(package)} ({files}) does not compile: "
                        f"{exc.details.get('rego_message')}",
                        hint="check the names of the functions and rules it calls",
                        file=files) from exc
            except MeshError:
                pass

    # -- evaluate -------------------------------------------------------------------------

    def entrypoint(self, package: tuple[str, ...]) -> str | None:
        return self._entrypoints.get(package)

    def evaluate(self, package: tuple[str, ...], document: Any, *,
                 exact_json: bool = False) -> dict[str, Any]:
        """The package's ``{allow?, reason?, obligations?}`` (keys absent when undefined).

        ``exact_json`` forces the JSON input path (tests compare both paths).
        """
        entry = self._entrypoints[package]
        name = package_key(package)
        files = ", ".join(self.packages.get(package, ()))
        p_input: int | None = None
        term: str | None = None
        try:
            p_input = None if exact_json else native_input(document)
            if p_input is None:
                term = json.dumps(document, ensure_ascii=False, allow_nan=False,
                                  separators=(",", ":"))
        except (TypeError, ValueError, OverflowError, regopy.RegoError) as exc:
            raise InvalidInput(f"the policy input for {name} is not a JSON document: {exc}",
                               hint="keep PolicyInput.attributes to JSON values (str, number, "
                                    "bool, null, list, dict with str keys)",
                               policy=name) from exc
        try:
            with self._lock:
                if self._bundle is None:
                    raise MeshError("the Rego policy adapter is closed",
                                    hint="create a new adapter (RegoPolicy.from_path)")
                impl = self._interpreter._impl
                if p_input is not None:
                    native.rego_set_input(impl, p_input)
                else:
                    native.rego_set_input_term(impl, term)
                out = native.rego_bundle_query_entrypoint(impl, self._bundle._impl, entry)
                try:
                    ok = bool(native.rego_output_ok(out))
                    text = native.rego_output_string(out) if ok else ""
                    errors = (errors_from_node(native.rego_output_node(out))
                              if not ok or text.startswith("(") else None)
                finally:
                    native.rego_free_output(out)
        except UnicodeEncodeError as exc:
            raise InvalidInput(f"the policy input for {name} holds a string that is not "
                               f"valid Unicode", hint="remove lone surrogates from the input",
                               policy=name) from exc
        except regopy.RegoError as exc:
            raise InvalidOutput(f"policy {name} ({files}) could not be evaluated: {exc}",
                                hint="check the package with `opa check`; report a rego-cpp "
                                     "bug if it passes there", policy=name) from exc
        finally:
            if p_input is not None:
                native.rego_free_input(p_input)
        if errors is not None:
            first = errors[0]
            raise InvalidOutput(
                f"policy {name} ({files}) failed at evaluation: {first.message}"
                + (f" [{first.code}]" if first.code else ""),
                hint="fix the rule (conflicting values for a complete rule, a failing built-in "
                     "such as to_number on a non-number, an unknown function ...)",
                policy=name, rego_code=first.code, rego_message=first.message)
        if text == "undefined":
            return {}
        try:
            parsed = json.loads(text)
            result = parsed["expressions"][0] if isinstance(parsed, dict) else None
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise InvalidOutput(f"policy {name} ({files}) returned unreadable output",
                                hint="report this as a rego-cpp bug with the policy",
                                policy=name) from exc
        if not isinstance(result, dict):
            raise InvalidOutput(f"policy {name} ({files}) returned {type(result).__name__}, "
                                f"not an object", hint="report this as a rego-cpp bug",
                                policy=name)
        return result

    def close(self) -> None:
        with self._lock:
            self._bundle = None
