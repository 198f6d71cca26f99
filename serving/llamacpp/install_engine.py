"""Install llama.cpp's Python engine (llama-cpp-python) with a progress bar.

llama-cpp-python ships as source only: pip compiles llama.cpp on the first install (about
9 minutes on 2 cores; it needs a C/C++ compiler, and fetches CMake and Ninja from PyPI when
the machine has none), then reuses the wheel from its cache. Run by ``make`` before the rest
of the install, so a missing compiler is reported before anything is built::

    python serving/llamacpp/install_engine.py .venv/bin/python

Why from source: it is the maintained binding (MIT, tracks llama.cpp upstream, brings the
OpenAI-compatible server the tests start); the prebuilt wheels on PyPI are single-maintainer
repackagings (see docs/guides/llm-backends.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_STEP = re.compile(r"^\s*\[(\d+)/(\d+)\]")


def requirement() -> str:
    """The llama-cpp-python requirement of the ``llm`` extra (pyproject.toml is the one
    place it is written)."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for req in doc["project"]["optional-dependencies"]["llm"]:
        if req.startswith("llama-cpp-python"):
            return str(req)
    raise SystemExit("pyproject.toml's llm extra names no llama-cpp-python")


def installed(python: str, req: str) -> bool:
    # --no-index: succeeds only when an installed version already satisfies ``req`` (a
    # fresh venv has no ``packaging`` to compare versions with)
    return subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check",
                           "--no-index", "--no-deps", "--quiet", req],
                          capture_output=True).returncode == 0


def compiler() -> str | None:
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def bar(done: int, total: int, started: float) -> str:
    width = 30
    filled = width * done // max(total, 1)
    return (f"\r    [{'#' * filled}{'.' * (width - filled)}] {done}/{total} compiled, "
            f"{time.monotonic() - started:4.0f} s")


def main() -> int:
    python = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    req = requirement()
    if installed(python, req):
        return 0
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    # (pip's cache of a wheel it built earlier is keyed by the source archive, so
    # `--only-binary` never finds it: the compiler is asked for on every first install.)
    cxx = compiler()
    if cxx is None:
        print("aios-mesh's embedded LLM engine (llama-cpp-python) builds llama.cpp from source "
              "and needs a C/C++ compiler, which this machine lacks.\n"
              "  Debian/Ubuntu: sudo apt-get install -y build-essential\n"
              "  Fedora/RHEL:   sudo dnf install -y gcc-c++ make\n"
              "  macOS:         xcode-select --install\n"
              "then run make again.", file=sys.stderr)
        return 1
    print(f"==> installing the embedded LLM engine, llama-cpp-python: pip compiles llama.cpp "
          f"with {cxx} the first time (~9 min on 2 cores), then reuses its cached wheel",
          flush=True)
    started = time.monotonic()
    tty = sys.stdout.isatty()
    shown = -1
    log: list[str] = []
    with subprocess.Popen([*pip, "-v", req], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            m = _STEP.match(line)
            if m is None:
                continue
            done, total = int(m[1]), int(m[2])
            if tty:
                print(bar(done, total, started), end="", flush=True)
            elif done * 10 // total != shown:  # CI logs: one line per tenth
                shown = done * 10 // total
                print(bar(done, total, started).strip(), flush=True)
    if tty:
        print()
    if proc.returncode != 0:
        sys.stderr.write("".join(log[-40:]))
        print("building llama-cpp-python failed (the end of pip's output is above)",
              file=sys.stderr)
        return proc.returncode
    print(f"    llama-cpp-python installed in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
