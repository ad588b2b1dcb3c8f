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

# Mutation testing of the method's core (noise, warps, guidance, sampler, metrics, flow, camera):
# mutmut per module, each with only its own fast tests (tools/mutants.py), in scratch copies under
# build/mutants. Not in CI: hours on 2 cores (MODULES="noise flow" for some). Writes
# out/mutants.md (scores) and out/mutants/<module>.md (every survivor's diff). After adding
# pins: tools/mutant_recheck.py --mutants build/mutants/<module> SURVIVORS -- <the pins>.
MODULES ?= noise warps guidance sampler metrics flow camera
mutants: setup
	$(BIN)/pip install -q "mutmut>=3.8,<4"
	$(BIN)/python tools/mutants.py $(MODULES)
	@cat out/mutants.md

clean:
	rm -rf $(VENV) out .pytest_cache mutants build/mutants build/ofx build/ofx-asan
