# The two commands a new user runs (README): `make repro` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv repro test test-fast bench scale replicate clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Runs the whole pipeline on the embedded default (the generated twins), on the CPU.
# The stages run `python -m ...`: the venv's bin comes first on PATH so that is the venv's python.
# STAGES narrows it, e.g. `make repro STAGES=evaluate@fashionai-m3net`.
STAGES ?=
repro: $(STAMP)
	test -d .dvc || $(BIN)/dvc init -q
	$(BIN)/dvc config core.analytics false
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro $(STAGES)

# Every test, the slow ones included (pytest's `slow` marker: whole pipelines, multi-process jobs,
# trainings on a twin; minutes on two cores).
test: $(STAMP)
	$(BIN)/python -m pytest -q

# The tests without the `slow` marker: the quick loop while developing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Performance benchmarks (pytest-benchmark), not run by `make test`.
bench: $(STAMP)
	$(BIN)/python -m pytest -q -p no:randomly tests/benchmarks --benchmark-enable --benchmark-only

# The scale run (benchmark/scale.py): twins at the real releases' sizes through every stage, each
# timed with its peak memory, into reports/scale.json; data go to /tmp/fashionbench-scale (--out).
# Hours on two cores: not part of `make test` (tests/test_scale.py runs a small version).
# SCALE_ARGS narrows it, e.g. `make scale SCALE_ARGS="--datasets deepfashion --images deepfashion=20000"`.
SCALE_ARGS ?=
scale: $(STAMP)
	$(BIN)/python -m benchmark.scale --docs docs/SCALE.md $(SCALE_ARGS)

# Replication (benchmark/replicate.py): the default pipeline again with seeds disjoint from train.seeds, in a
# work folder outside the repository (data stages copied, not redrawn), then both runs' leaderboards compared
# into reports/replication.{json,md}. About as long as `make repro`. REPLICATE_ARGS, e.g. "--seeds 6 7 8".
REPLICATE_ARGS ?=
replicate: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmark.replicate run $(REPLICATE_ARGS)

clean-venv:
	rm -rf $(VENV)
