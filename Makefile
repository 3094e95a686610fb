# Two entry points, each sets up what it needs first:
#   make run    the main job (tiny preset on a CPU machine, the 8B-shaped proxy on a GPU)
#   make test   lint, format check, type check and the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)

.PHONY: setup run test lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
ifeq ($(HAS_GPU),yes)
	# A GPU machine brings its own CUDA torch: reuse it rather than downloading another.
	python3 -m venv --system-site-packages $(VENV)
else
	python3 -m venv $(VENV)
	# No GPU here: the CPU build of torch, never the multi-GB CUDA one.
	$(PY) -m pip install --quiet torch==2.13.0
endif
	$(PY) -m pip install --quiet -e '.[test,plots]'
	touch $@

run: setup
	$(VENV)/bin/trainbench run $(ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

test: lint
	bash scripts/slurm-cluster.sh ensure-installed || echo "Slurm not installable here: its tests will skip"
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)
