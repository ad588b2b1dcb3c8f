# The two commands for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= out/demo

.PHONY: demo test setup sysdeps lint format clean mutants ofx

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned in pyproject.toml (2.13.0: the CPU wheel on our machines).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[ui,dev,cluster]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/warpdiff demo -o $(DEMO_OUT)

# System libraries for the tests (apt-get where it can; see the script).
sysdeps:
	bash tools/sysdeps.sh

# The OpenFX plugin, its unit tests and test host (C++; see README "The OpenFX plugin").
ofx: sysdeps
	cmake -S host_plugins/ofx -B build/ofx -DCMAKE_BUILD_TYPE=Release
	cmake --build build/ofx -j2

test: setup ofx
	QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=600 -n 2 --dist loadfile

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# Mutation testing of the method's core (noise, warps, guidance, sampler, metrics, flow) with the
# fast tests ([tool.mutmut] in pyproject.toml). Not in CI: about an hour on 2 cores.
# Writes out/mutants.md: the score per module and every surviving mutant's diff.
mutants: setup
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2 $(MUTANTS) || true
	mkdir -p out && $(BIN)/python tools/mutation_report.py > out/mutants.md
	@head -20 out/mutants.md

clean:
	rm -rf $(VENV) out .pytest_cache mutants build/ofx build/ofx-asan
