"""train.processes: the train stage launches torchrun itself, so `dvc repro` needs no edited command."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml

import benchmark.train as T
from benchmark.params import load_params


def _params(tmp_path, processes):
    p = copy.deepcopy(load_params())
    p["train"]["processes"] = processes
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump(p))
    return f, p


def test_processes_above_one_launch_torchrun_with_the_same_stage(tmp_path, monkeypatch):
    f, _ = _params(tmp_path, 3)
    calls, runs = [], []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 7)
    monkeypatch.setattr(T, "run", lambda *a: runs.append(a) or 0)
    assert T.main(["deepfashion", "m3net", "--params", str(f)]) == 7  # torchrun's exit status is the stage's
    assert not runs and len(calls) == 1
    cmd = calls[0]
    assert "--nproc_per_node=3" in cmd and "--rdzv-endpoint=localhost:0" in cmd
    assert cmd[cmd.index("-m"):] == ["-m", "benchmark.train", "deepfashion", "m3net", "--params", str(f)]
    # under torchrun (WORLD_SIZE set) the same command trains instead of launching again
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert T.main(["deepfashion", "m3net", "--params", str(f)]) == 0
    assert len(calls) == 1 and runs and runs[0][:2] == ("deepfashion", "m3net")


def test_one_process_trains_here_and_bad_counts_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    runs = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: pytest.fail("torchrun launched for one process"))
    monkeypatch.setattr(T, "run", lambda *a: runs.append(a) or 0)
    f, _ = _params(tmp_path, 1)
    assert T.main(["darn", "asen", "--params", str(f)]) == 0 and len(runs) == 1
    f, _ = _params(tmp_path, 0)
    with pytest.raises(SystemExit, match=r"train\.processes: expected an integer >= 1, got 0"):  # the schema
        T.main(["darn", "asen", "--params", str(f)])


def test_processes_do_not_enter_the_weights_fingerprint(tmp_path, monkeypatch):
    """Existing checkpoints stay valid when train.processes is added or changed (the world size,
    which does change the weights, is recorded on its own)."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    _, p1 = _params(tmp_path, 1)
    monkeypatch.chdir(tmp_path)
    for name in ("images", "labels", "taxonomy"):  # the fingerprint hashes the tables: any bytes do here
        (tmp_path / "data" / "darn" / "validated").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "darn" / "validated" / f"{name}.parquet").write_bytes(name.encode())
    (tmp_path / "data" / "darn" / "splits.parquet").write_bytes(b"splits")
    (tmp_path / "data" / "darn" / "trunk").mkdir(parents=True, exist_ok=True)  # the twin profile's shared trunk
    (tmp_path / "data" / "darn" / "trunk" / "seed0.pt").write_bytes(b"trunk")  # seed 0's
    p2 = copy.deepcopy(p1)
    p2["train"]["processes"] = 4
    p0 = copy.deepcopy(p1)
    del p0["train"]["processes"]
    prints = {T.run_fingerprint("darn", "asen", p, 0) for p in (p0, p1, p2)}
    assert len(prints) == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert T.run_fingerprint("darn", "asen", p2, 0) not in prints


def test_fingerprint_hashes_the_code_dvc_and_the_code_stage_see():
    """One change detector: run_fingerprint's code is the train stage's import closure (its record,
    data/code/stage/benchmark.train.json: tests/test_dvc_deps.py) and the model's files
    (its data/code/model/<model>.json), no other."""
    from pathlib import Path

    from benchmark.codehash import code_record, stage_files

    root = Path(T.__file__).resolve().parents[1]
    rel = lambda files: {p.relative_to(root).as_posix() for p in files}  # noqa: E731
    stage = rel(stage_files(root, "benchmark.train"))
    for model in ("m3net", "asen_v2"):
        assert rel(T.code_files(model)) == stage | set(code_record(root, model)["files"])
    m3net = rel(T.code_files("m3net"))
    assert "model/blocks.py" not in m3net and "model/asen.py" not in m3net
    assert {"benchmark/train.py", "benchmark/loaders.py", "datasets/paths.py", "model/m3net.py"} <= m3net
    assert rel(T.code_files("tiny_test")) == stage  # registered by a test, outside model/
