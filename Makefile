# Two commands on a fresh machine (needs only python3 >= 3.11 and make):
#   make demo   — run the main job on the embedded defaults
#   make test   — lint, type-check and run the whole test suite (what CI runs)
# Both create ./.venv with every extra on first use (a few minutes), then reuse it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench docs clean

$(STAMP): pyproject.toml $(wildcard adapters/*/__init__.py)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "aios-mesh needs Python >= 3.11"'
	@echo "==> installing aios-mesh and its backends into $(VENV) (first run only)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[all,dev]"
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/nox --no-install --reuse-existing-virtualenvs -s demo

test: $(STAMP)
	@$(BIN)/nox --no-install --reuse-existing-virtualenvs -s lint typecheck docs tests

lint typecheck bench docs: $(STAMP)
	@$(BIN)/nox --no-install --reuse-existing-virtualenvs -s $@

clean:
	rm -rf $(VENV) .nox .aios-mesh .pytest_cache .mypy_cache .ruff_cache
