"""The real DVC pipeline, as a user runs it: `dvc repro` of one dataset's chain, on a tiny twin,
in a temporary copy of the repository; then `dvc status` says everything is up to date."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from tests.checkout import copy_checkout, run_in, tiny_fashionai

ROOT = Path(__file__).resolve().parents[1]


def _run(args, cwd, **env):
    return run_in(args, cwd, timeout=600, **env)


@pytest.mark.slow
def test_dvc_repro_one_chain_end_to_end(tmp_path):
    work = copy_checkout(tmp_path / "repo")
    params = tiny_fashionai(yaml.safe_load((work / "params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _run(["git", "init", "-q"], work).returncode == 0

    stage = "evaluate@fashionai-m3net"
    out = _run(["dvc", "repro", stage, "control@fashionai"], work)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for name in ("twins@fashionai", "acquire@fashionai", "parse@fashionai", "validate@fashionai",
                 "splits@fashionai", "cooccurrence@fashionai", "pretrain@fashionai", "features@fashionai",
                 "train@fashionai-m3net",
                 stage, "control@fashionai"):
        assert f"Running stage '{name}'" in out.stdout, name
    # the convergence record (val MAP@all per epoch and seed) and the control, evaluated as a model
    curve = (work / "reports/fashionai/m3net/val_curve.csv").read_text().splitlines()
    assert curve[0] == "seed,epoch,val_map_all" and len(curve) == 2 and float(curve[1].split(",")[2]) > 0
    control = json.loads((work / "reports/fashionai/attribute_blind/metrics.json").read_text())
    assert 0 < control["test"]["map_all"]["overall"] < 100
    assert (work / "data/fashionai/eval/attribute_blind/per_query.parquet").exists()
    assert json.loads((work / "reports/fashionai/m3net/pointing.json").read_text())["pointing_game"]["n"] > 0

    metrics = json.loads((work / "reports/fashionai/m3net/metrics.json").read_text())
    for split in ("test", "val"):
        m = metrics[split]
        assert m["queries"]["used"] > 0, m["queries"]
        assert 0 <= m["map_all"]["overall"] <= 100
    shown = _run(["dvc", "metrics", "show", "--json"], work)
    assert shown.returncode == 0 and "map_all" in shown.stdout

    # the committed per-query file (an out with cache: false): git holds it, and compare reads it at a commit
    small = pl.read_parquet(work / "reports/fashionai/m3net/per_query.parquet")
    assert small.height == metrics["test"]["queries"]["used"] + metrics["test"]["queries"]["left_out"]
    assert (work / "reports/fashionai/attribute_blind/per_query.parquet").exists()
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
    assert _run(git + ["add", "reports", "dvc.lock"], work).returncode == 0
    assert _run(git + ["commit", "-q", "-m", "results"], work).returncode == 0
    cmp = _run([sys.executable, "-m", "benchmark.cli", "compare"], work)
    assert cmp.returncode == 0 and "2 dataset/model pairs in both, 2 of them unchanged" in cmp.stdout, cmp.stdout + cmp.stderr

    status = _run(["dvc", "status", stage], work)
    assert status.returncode == 0 and "changed" not in status.stdout, status.stdout
    again = _run(["dvc", "repro", stage], work)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout
