# Two commands on a fresh machine (needs only python3 >= 3.11 and make):
#   make demo   — run the main job on the embedded defaults
#   make test   — lint, type-check and run the whole test suite (what CI runs)
# Both create ./.venv with every extra on first use (a few minutes, plus ~9 min to compile
# llama.cpp for the embedded LLM — this needs a C/C++ compiler, checked before it starts),
# then reuse it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Model servers live in their own environments (their dependency pins clash with the main one).
BENTO  := .nox/bentoml/.installed
TRITON := .nox/triton/.installed
# LiteLLM's proxy, the peer of benchmarks/llm.py (benchmarks only; its pins are its own)
LITELLM := .nox/litellm/.installed
# Debian's chromium for the review console's browser tests (Playwright drives it; it never
# downloads a browser of its own). A file target: skipped when /usr/bin/chromium exists.
CHROMIUM := /usr/bin/chromium

.PHONY: demo test servers lint typecheck bench docs clean

$(STAMP): pyproject.toml $(wildcard adapters/*/__init__.py) serving/llamacpp/install_engine.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "aios-mesh needs Python >= 3.11"'
	@echo "==> installing aios-mesh and its backends into $(VENV) (first run only)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@# the embedded LLM engine compiles llama.cpp on first install: checks for a C/C++
	@# compiler first and shows progress (serving/llamacpp/install_engine.py)
	@$(BIN)/python serving/llamacpp/install_engine.py $(BIN)/python
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[all,dev]"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		-r serving/triton/client-requirements.txt
	@touch $(STAMP)

$(BENTO): serving/bentoml/requirements.txt $(wildcard adapters/*/__init__.py)
	@echo "==> creating the BentoML server environment in .nox/bentoml (first run only)"
	@test -x .nox/bentoml/bin/python || $(PYTHON) -m venv .nox/bentoml
	@.nox/bentoml/bin/python -m pip install --quiet --disable-pip-version-check \
		-r serving/bentoml/requirements.txt
	@.nox/bentoml/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(BENTO)

$(TRITON): serving/triton/requirements.txt
	@echo "==> creating the Triton (PyTriton) server environment in .nox/triton (first run only)"
	@test -x .nox/triton/bin/python || $(PYTHON) -m venv .nox/triton
	@.nox/triton/bin/python -m pip install --quiet --disable-pip-version-check \
		-r serving/triton/requirements.txt
	@touch $(TRITON)

$(LITELLM): serving/litellm/requirements.txt
	@echo "==> creating the LiteLLM proxy environment in .nox/litellm (benchmarks only, first run)"
	@test -x .nox/litellm/bin/python || $(PYTHON) -m venv .nox/litellm
	@.nox/litellm/bin/python -m pip install --quiet --disable-pip-version-check \
		-r serving/litellm/requirements.txt
	@touch $(LITELLM)

demo: $(STAMP)
	@$(BIN)/nox --no-install --reuse-existing-virtualenvs -s demo

$(CHROMIUM):
	@echo "==> installing Debian's chromium for the browser tests: apt-get install -y --no-install-recommends chromium"
	@apt-get install -y --no-install-recommends chromium

test: $(STAMP) $(BENTO) $(TRITON) $(CHROMIUM)
	@$(BIN)/nox --no-install --reuse-existing-virtualenvs -s lint typecheck docs tests

servers: $(BENTO) $(TRITON)

bench: $(BENTO) $(TRITON) $(LITELLM)  # the serving benchmarks start real servers
lint typecheck bench docs: $(STAMP)
	@$(BIN)/nox --no-install --reuse-existing-virtualenvs -s $@

clean:
	rm -rf $(VENV) .nox .aios-mesh .pytest_cache .mypy_cache .ruff_cache
