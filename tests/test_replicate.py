"""The replication command's comparison of two runs' leaderboards (benchmark/replicate.py)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

from benchmark.stats import student_t_ppf

from benchmark import replicate
from datasets import DATASETS


def _entry(mean, sd, seeds=(0, 1, 2)):
    return {"seeds": list(seeds), "map_all": {"mean": mean, "sd": sd, "low": mean - 1, "high": mean + 1}}


def _board(means: dict, pairs: dict, control=None):
    b = {"models": {m: _entry(*v) for m, v in means.items()}, "pairs": pairs}
    if control is not None:
        b["attribute_blind"] = _entry(*control)
    return b


def _pair(delta, significant, detectable=1.0):
    return {"delta": delta, "significant": significant, "detectable": detectable}


def test_shifts_bounds_and_verdicts():
    a = _board({"x": (60.0, 0.5), "y": (58.0, 0.5)},
               {"x_vs_y": _pair(2.0, True, 1.5), "attribute_blind_vs_x": _pair(-5.0, True, 2.5),
                "attribute_blind_vs_y": _pair(-3.0, True, 0.5)}, control=(55.0, 0.2))
    b = _board({"x": (61.5, 0.4), "y": (58.2, 0.6)},
               {"x_vs_y": _pair(-0.5, True, 1.0), "attribute_blind_vs_x": _pair(-6.0, True),
                "attribute_blind_vs_y": _pair(-1.0, False)}, control=(55.1, 0.3))
    r = replicate.compare_boards(a, b)
    # Welch: the t quantile at the Welch-Satterthwaite df of two 3-seed sds (0.5 and 0.4: df 3.82)
    va, vb = 0.5 ** 2 / 3, 0.4 ** 2 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    bound_x = student_t_ppf(0.975, df) * math.sqrt(va + vb)
    assert 2.7 < bound_x / math.sqrt(va + vb) < 2.9  # not 1.96: three seeds a side
    assert r["models"]["x"]["shift"] == pytest.approx(1.5) and r["models"]["x"]["bound"] == pytest.approx(bound_x, abs=1e-4)
    assert r["models"]["x"]["within"] is False and r["models"]["y"]["within"] is True
    assert r["models"]["attribute_blind"]["within"] is True
    assert r["models"]["x"]["bound_1_96"] == pytest.approx(1.96 * math.sqrt(va + vb), abs=1e-3)
    assert r["models"]["x"]["within_1_96"] is False and r["summary"]["within_bound_1_96"] == 2
    assert r["pairs"]["x_vs_y"] == {"a": "a", "b": "b", "delta_a": 2.0, "delta_b": -0.5, "changed": True, "reversed": True}
    assert r["pairs"]["attribute_blind_vs_x"]["changed"] is False
    assert r["pairs"]["attribute_blind_vs_y"] == {"a": "b", "b": "=", "delta_a": -3.0, "delta_b": -1.0,
                                                  "changed": True, "reversed": False}
    s = r["summary"]
    assert (s["models"], s["within_bound"], s["pairs"], s["changed"], s["reversed"]) == (3, 2, 3, 2, 1)
    assert s["changed_share"] == pytest.approx(2 / 3, abs=1e-4) and s["detectable_a"] == 1.5 and s["detectable_b"] == 1.0


def test_compare_reads_both_roots_and_writes_the_report(tmp_path):
    for run, shift in (("a", 0.0), ("b", 0.3)):
        for key in DATASETS:
            d = tmp_path / run / "reports" / key
            d.mkdir(parents=True)
            board = _board({"x": (50 + shift, 0.5), "y": (40.0, 0.5)}, {"x_vs_y": _pair(10.0 + shift, True)},
                           control=(30.0, 0.1))
            (d / "leaderboard.json").write_text(json.dumps(board))
    result = replicate.compare(tmp_path / "a", tmp_path / "b")
    assert set(result["datasets"]) == set(DATASETS)
    assert all(r["summary"]["changed"] == 0 and r["summary"]["within_bound"] == 3 for r in result["datasets"].values())
    replicate.write(result, tmp_path)
    md = (tmp_path / "reports" / "replication.md").read_text()
    assert "verdicts changed: 0 of 1" in md and "| x | 50.00 | 50.30 | +0.30 |" in md
    assert json.loads((tmp_path / "reports" / "replication.json").read_text())["datasets"]["darn"]["seeds"]["a"] == [0, 1, 2]


def test_compare_names_a_missing_run(tmp_path):
    with pytest.raises(SystemExit, match="leaderboard.json is missing"):
        replicate.compare(tmp_path / "a", tmp_path / "b")


def test_run_refuses_overlapping_seeds(tmp_path):
    with pytest.raises(SystemExit, match="overlap"):
        replicate.run([0, 7], tmp_path / "work")


def test_shift_bound_against_a_simulation_of_two_runs_of_one_design():
    """The bound's coverage: two runs of 3 seeds drawn from one normal design stay within it at least
    95% of the time (Welch's df makes it a little conservative at 3 seeds: ~96.7%); 1.96 covers ~88%."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (20000, 3)), rng.normal(0, 1, (20000, 3))
    shift = np.abs(b.mean(1) - a.mean(1))
    sa, sb = a.std(1, ddof=1), b.std(1, ddof=1)
    inside = [s <= replicate.shift_bound(x, 3, y, 3) for s, x, y in zip(shift, sa, sb)]
    assert 0.945 < np.mean(inside) < 0.975
    normal = np.mean(shift <= 1.96 * np.sqrt(sa ** 2 / 3 + sb ** 2 / 3))
    assert normal < 0.91


@pytest.mark.slow
def test_prepare_copies_the_data_stages_so_dvc_skips_them(tmp_path, monkeypatch):
    """`run`'s work folder: the data stages' outputs are copied and committed to its own DVC cache,
    so `dvc repro` there finds them up to date and redraws nothing (a copy missing from the cache
    counted as changed, and the last replication ran every data stage again); its seeds are set."""
    import yaml

    from tests.checkout import copy_checkout, run_in, tiny_fashionai

    src = copy_checkout(tmp_path / "src")
    params = tiny_fashionai(yaml.safe_load((src / "params.yaml").read_text()))
    (src / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert run_in(["git", "init", "-q"], src).returncode == 0
    assert run_in(["git", "add", "-A"], src).returncode == 0
    out = run_in(["dvc", "repro", "cooccurrence@fashionai"], src)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert run_in(["git", "add", "-A"], src).returncode == 0  # the results tracked, as a committed run's are

    monkeypatch.chdir(src)  # datasets.paths are relative to the repository root
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    work = replicate.prepare([7], tmp_path / "work", src)
    assert yaml.safe_load((work / "params.yaml").read_text())["train"]["seeds"] == [7]
    dry = run_in(["dvc", "repro", "--dry", "cooccurrence@fashionai"], work)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "Running stage" not in dry.stdout and "up to date" in dry.stdout, dry.stdout[-2000:]
    # the copy is the source's: the same lock entry for the last data stage
    lock = lambda root: yaml.safe_load((root / "dvc.lock").read_text())["stages"]["cooccurrence@fashionai"]
    assert lock(work)["outs"] == lock(src)["outs"]
