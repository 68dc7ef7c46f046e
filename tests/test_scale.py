"""The scale run (benchmark.scale): a small version of it end to end, and its memory measurement."""

from __future__ import annotations

import json
import sys

import pytest

from benchmark.scale import REAL, run_measured, work_params


@pytest.mark.slow
def test_peak_rss_of_a_stage_counts_its_whole_process_tree(tmp_path):
    """A child holding ~300 MB, and a parent holding ~300 MB whose child holds ~300 MB more: the
    measured peak is the child's, then the tree's sum (not the largest process alone)."""
    one = "import time; b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"
    r = run_measured([sys.executable, "-c", one], tmp_path, tmp_path / "one.log")
    assert r["returncode"] == 0 and 0.28 <= r["peak_rss_gb"] < 0.5
    two = ("import subprocess, sys, time; b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); "
           f"subprocess.run([sys.executable, '-c', {one!r}], check=True)")
    r2 = run_measured([sys.executable, "-c", two], tmp_path, tmp_path / "two.log")
    assert r2["returncode"] == 0 and r2["peak_rss_gb"] >= 0.56
    bad = run_measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, tmp_path / "bad.log")
    assert bad["returncode"] == 3
    # a small stage launched from a large process reads small (wait4's ru_maxrss would carry the
    # launcher's peak into it)
    held = bytearray(400 << 20)
    held[::4096] = b"x" * len(held[::4096])
    small = run_measured([sys.executable, "-c", "import time; time.sleep(0.3)"], tmp_path, tmp_path / "small.log")
    assert small["peak_rss_gb"] < 0.1
    del held


def test_work_params_size_the_twin_and_keep_the_rest():
    from benchmark.params import load_params

    base = load_params()
    p = work_params("darn", 1234, 300, base, 2)
    assert p["twins"]["darn"]["images"] == 1234 and p["twins"]["image_size"] == 300
    assert p["acquire"]["darn"]["source"] == "twin" and p["validate"]["workers"] == 2
    assert p["twins"]["defects"]["darn_404"] + p["twins"]["defects"]["darn_drop"] == pytest.approx(0.15)
    # the real protocol's sizes: the release's partition, the real split ratios
    assert "partition" not in p["twins"]["darn"] and base["twins"]["darn"]["partition"] == [0.5, 0.1, 0.4]
    assert p["splits"]["ratios"]["darn"]["twin"] == base["splits"]["ratios"]["darn"]["real"]
    assert p["splits"]["ratios"]["deepfashion"] == base["splits"]["ratios"]["deepfashion"]  # only the run's dataset
    # evaluation unchanged but for the sweep: its smallest gamma (the extraction's) and the evaluated one
    ev = base["evaluate"]
    assert p["evaluate"] == dict(ev, gamma_sweep=sorted({min(ev["gamma_sweep"]), ev["gamma"]}), max_classes=3)
    assert p["twins"]["render_size"] == 96 and p["twins"]["workers"] == 0
    prof = p["train"]["profiles"]["twin"]
    assert prof["trunk"] == "end_to_end" and prof["image_size"] == 64 and prof["epochs"] == 1
    assert base["train"]["profiles"]["twin"]["trunk"] == "shared"
    assert base["twins"]["darn"]["images"] != 1234  # the repository's params are not touched
    assert REAL["deepfashion"]["images"] == 289_222


def test_the_pipeline_stages_run_by_dvc_yamls_own_commands():
    """Every scale stage but the two measurements runs dvc.yaml's command for it (read, not restated:
    a changed command is what runs), ``python`` being this interpreter; the loader's batch count is
    an argument of its subcommand."""
    from benchmark import dvcfile
    from benchmark.scale import MEASURED_HERE, STAGES, dvc_stage, stage_cmd

    pipeline = dvcfile.expanded_stages()
    for key in REAL:
        for stage in STAGES:
            cmd = stage_cmd(stage, key, pipeline, loader_batches=7)
            assert cmd[0] == sys.executable
            if stage in MEASURED_HERE:
                assert cmd[1:4] == ["-m", "benchmark.scale", f"_{stage}"] and cmd[4] == key
            else:
                assert ["python"] + cmd[1:] == pipeline[dvc_stage(stage, key)]["cmd"][0].split()
    assert stage_cmd("train", "darn", pipeline)[1:] == ["-m", "benchmark.train", "darn", "m3net"]
    assert stage_cmd("validate", "fashionai", pipeline)[1:] == ["-m", "datasets.validate", "fashionai"]
    assert stage_cmd("loader", "darn", pipeline, loader_batches=7)[-2:] == ["--batches", "7"]
    changed = dict(pipeline, **{"parse@darn": dict(pipeline["parse@darn"], cmd=["python -m datasets.parse darn --x 'a b'"])})
    assert stage_cmd("parse", "darn", changed)[1:] == ["-m", "datasets.parse", "darn", "--x", "a b"]
    two = dict(pipeline, **{"parse@darn": dict(pipeline["parse@darn"], cmd=["python -m a", "python -m b"])})
    with pytest.raises(ValueError, match="2 commands"):
        stage_cmd("parse", "darn", two)


def test_the_loader_subcommand_takes_its_batches_as_an_argument(monkeypatch):
    from benchmark import scale

    seen = []
    monkeypatch.setattr(scale, "_loader_main", lambda key, n: seen.append((key, n)) or 0)
    monkeypatch.delenv("FASHIONBENCH_LOADER_BATCHES", raising=False)
    assert scale.main(["_loader", "darn", "--batches", "3"]) == 0
    assert scale.main(["_loader", "fashionai"]) == 0
    assert seen == [("darn", 3), ("fashionai", scale.LOADER_BATCHES)]


@pytest.mark.slow
def test_small_scale_run_writes_the_contract_and_counts_reconcile(tmp_path):
    from benchmark.scale import main

    report = tmp_path / "scale.json"
    n = 160
    assert main(["--out", str(tmp_path / "work"), "--datasets", "deepfashion", "--images", f"deepfashion={n}",
                 "--image-size", "112", "--loader-batches", "2", "--report", str(report)]) == 0
    rep = json.loads(report.read_text())
    assert rep["machine"]["cores"] >= 1 and rep["machine"]["memory_gb"] > 0
    d = rep["datasets"]["deepfashion"]
    assert d["images"] == n
    for stage in ("acquire", "validate", "splits", "cooccurrence", "loader", "evaluate"):
        s = d["stages"][stage]
        assert s["seconds"] > 0 and 0 < s["peak_rss_gb"] < 6, stage
    v = d["stages"]["validate"]
    assert v["workers"] >= 1 and v["speedup_vs_1_worker"] > 0
    c = d["counts"]
    assert c["twin_images"] == n == c["validated"]["rows_in"] + c["lines_quarantined_at_parse"]
    assert c["validated"]["kept"] + c["validated"]["quarantined"] == c["validated"]["rows_in"]
    assert c["validated"]["quarantined"] >= 1 and c["lines_quarantined_at_parse"] >= 1  # the planted defects
    assert c["split_images"] == c["validated"]["kept"] == sum(c["splits"].values())
    assert d["stages"]["loader"]["train_images"] == c["splits"]["train/train"]
    assert d["stages"]["loader"]["batches"] == 2  # --loader-batches reached the loader's process
    e = d["stages"]["evaluate"]
    assert e["embedded_images"] == c["validated"]["kept"] - c["splits"]["train/train"]
    assert 0 < e["embedding_seconds"] < e["seconds"]
    assert (tmp_path / "work" / "deepfashion" / "data" / "deepfashion" / "splits.parquet").is_file()
    # one stage again on the twin the run left: its record is replaced, the others are kept
    assert main(["--out", str(tmp_path / "work"), "--datasets", "deepfashion", "--images", f"deepfashion={n}",
                 "--image-size", "112", "--no-compare", "--stages", "splits", "--report", str(report)]) == 0
    again = json.loads(report.read_text())
    assert again["datasets"]["deepfashion"]["stages"]["evaluate"] == e
    assert again["datasets"]["deepfashion"]["stages"]["splits"] != d["stages"]["splits"]
    assert len(again["reruns"]) == 1 and again["machine"] == rep["machine"]


def test_merge_keeps_the_other_datasets_and_says_where_they_came_from(tmp_path):
    from benchmark.scale import main, markdown_table

    m = {"cores": 2, "memory_gb": 24.0, "loadavg": [1.0, 1.0, 1.0]}
    stage = {"seconds": 1.0, "peak_rss_gb": 0.1}
    rec = lambda n: {"images": n, "real_images": 9, "image_size": 300, "stages": {"splits": stage}}  # noqa: E731
    old = {"command": "python -m benchmark.scale --fraction 0.1", "started": "T0", "machine": m,
           "datasets": {"deepfashion": rec(10), "darn": rec(5)}}
    new = {"command": "python -m benchmark.scale --datasets deepfashion", "started": "T1", "machine": m,
           "datasets": {"deepfashion": rec(289)}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    assert main(["merge", str(tmp_path / "new.json"), str(tmp_path / "old.json")]) == 0
    got = json.loads((tmp_path / "old.json").read_text())
    assert got["datasets"]["deepfashion"]["images"] == 289 and got["datasets"]["darn"]["images"] == 5
    assert got["command"] == new["command"] and got["earlier"][-1]["command"] == old["command"]
    table = markdown_table(got)
    assert "Records kept from `python -m benchmark.scale --fraction 0.1` on T0 for darn" in table and "| darn | 5 (9)" in table
    assert got["earlier"][-1]["datasets"] == ["darn"]
    # once darn is replaced too, the run it came from is no longer named
    darn = {"command": "python -m benchmark.scale --datasets darn", "started": "T2", "machine": m,
            "datasets": {"darn": rec(250)}}
    (tmp_path / "darn.json").write_text(json.dumps(darn))
    assert main(["merge", str(tmp_path / "darn.json"), str(tmp_path / "old.json")]) == 0
    got = json.loads((tmp_path / "old.json").read_text())
    assert {k: v["images"] for k, v in got["datasets"].items()} == {"deepfashion": 289, "darn": 250}
    assert [(e["command"], e["datasets"]) for e in got["earlier"]] == [(new["command"], ["deepfashion"])]
    assert "--fraction 0.1" not in markdown_table(got)
