# The two commands for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo

.PHONY: demo test setup lint format clean ofx

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

# The OpenFX plugin, its unit tests and test host (C++; see README "The OpenFX plugin").
ofx:
	cmake -S host_plugins/ofx -B build/ofx -DCMAKE_BUILD_TYPE=Release
	cmake --build build/ofx -j2

test: setup ofx
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=600

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) out .pytest_cache build/ofx build/ofx-asan
