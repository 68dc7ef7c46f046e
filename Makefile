# The two commands a new user runs (README): `make repro` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv repro test bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Runs the whole pipeline on the embedded default (the generated twins), on the CPU.
repro: $(STAMP)
	test -d .dvc || $(BIN)/dvc init -q
	$(BIN)/dvc config core.analytics false
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Performance benchmarks (pytest-benchmark), not run by `make test`.
bench: $(STAMP)
	$(BIN)/python -m pytest -q -p no:randomly tests/benchmarks --benchmark-enable --benchmark-only

clean-venv:
	rm -rf $(VENV)
