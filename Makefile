# The two commands for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo

.PHONY: demo test setup lint format clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned in pyproject.toml (2.13.0: the CPU wheel on our machines).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[ui,dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/warpdiff demo -o $(DEMO_OUT)

test: setup
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=600

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) out .pytest_cache
