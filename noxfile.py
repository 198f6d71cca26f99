"""Developer sessions. `make demo` / `make test` bootstrap .venv and call these.

Sessions run in the project's .venv (``venv_backend="none"``) so the heavy backends are
installed once; each uses the interpreter nox runs under.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]

PY = sys.executable


@nox.session
def demo(session: nox.Session) -> None:
    """Run the main job (invoice intake) on the embedded defaults; posargs go to it
    (``nox -s demo -- --n 60``, ``-- --profile servers``, ``-- --help``)."""
    session.run(PY, "-m", "examples.invoice_intake", *session.posargs,
                env={"MLFLOW_DISABLE_TELEMETRY": "true"})


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: unit, conformance, integration (real servers), e2e."""
    session.run(PY, "-m", "pytest", "-q", *session.posargs,
                env={"MLFLOW_DISABLE_TELEMETRY": "true"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over everything."""
    session.run(PY, "-m", "ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core package and the adapters (``files`` in pyproject.toml)."""
    session.run(PY, "-m", "mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; results land in benchmarks/results/ (``-- name.py ...`` runs some)."""
    scripts = session.posargs or ["overhead.py", "cold_path.py", "policy.py", "quotas.py",
                                  "retrieval.py", "events.py", "serving_triton.py",
                                  "batching.py"]
    for script in scripts:
        if Path("benchmarks", script).exists():
            session.run(PY, f"benchmarks/{script}")
    session.run(PY, "benchmarks/report.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs in strict mode."""
    session.run(PY, "-m", "mkdocs", "build", "--strict", "--site-dir", "site")
