"""The paper profile's own code path, end to end, on the CPU (issue 25): `dvc repro` of one
dataset's chain with `train.profile: paper` on a tiny twin, in a temporary copy of the repository,
with only sizes overridden. It runs the end-to-end trunks (ResNet-50 layer3, pretrained: true
with an empty torchvision cache, so from random weights, said loudly), `resize_crop`, `best_val`,
ASEN++'s two phases with their schedules, `train.processes: 2` (torchrun, gloo), then the report,
whose banner must say why the numbers are not comparable. A real release and a GPU are then the
only new things a user brings."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tests.checkout import copy_checkout

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = ("m3net", "asenpp")


def _run(args, cwd, env):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _tiny_paper_params(params: dict) -> dict:
    """The shipped params with the paper profile, its sizes made tiny; everything else as shipped
    (end_to_end, resnet50_layer3, pretrained, resize_crop, best_val, the LR schedules)."""
    params["twins"]["fashionai"]["images"] = 400
    train = params["train"]
    train.update(profile="paper", seeds=[0], device="cpu", processes=2)
    paper = train["profiles"]["paper"]
    paper.update(image_size=32, epochs=1, batch_size=8, workers=0, threads=1,
                 triplets_per_epoch={k: 16 for k in paper["triplets_per_epoch"]})
    for m in MODELS:
        mp = params["models"][m]
        mp["embed_dim"]["paper"] = 32
        mp["inner_dim"]["paper"] = 16
    params["models"]["asenpp"]["local_inner_dim"]["paper"] = 16
    params["models"]["asenpp"]["phase_epochs"]["paper"] = [1, 1]
    params["evaluate"]["bootstrap"] = 50
    return params


@pytest.mark.slow
def test_paper_profile_chain_end_to_end_on_the_cpu(tmp_path):
    work = copy_checkout(tmp_path / "repo")
    params = _tiny_paper_params(yaml.safe_load((work / "params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               TORCH_HOME=str(tmp_path / "torch_home"),  # an empty torchvision cache: no ImageNet weights
               OMP_NUM_THREADS="1")
    assert _run(["git", "init", "-q"], work, env).returncode == 0

    t0 = time.perf_counter()
    stages = [f"evaluate@fashionai-{m}" for m in MODELS]
    out = _run(["dvc", "repro", *stages], work, env)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    for m in MODELS:
        for s in ("train", "evaluate"):
            assert f"Running stage '{s}@fashionai-{m}'" in out.stdout, (s, m)
    # end_to_end: no shared trunk was pretrained or cached
    assert (work / "data/fashionai/trunk/unused.json").exists()
    assert not list((work / "data/fashionai/trunk").glob("seed*.pt"))

    # pretrained: true with nothing in the torchvision cache: said loudly, and the run went on
    assert "not in the torchvision cache" in log and "starting from RANDOM weights" in log
    assert "[train] WARNING fashionai/asenpp seed 0: pretrained: true, but global_trunk, local_trunk" in log

    for m in MODELS:
        d = work / "models/fashionai" / m / "seed0"
        ck = torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=False)
        prof = ck["params"]["train"]
        assert (prof["trunk"], prof["preprocess"], prof["checkpoint"], prof["backbone"]) == \
            ("end_to_end", "resize_crop", "best_val", "resnet50_layer3")
        assert ck["world_size"] == 2 and ck["build"]["backbone"] == "resnet50_layer3"  # torchrun, 2 processes
        sel = json.loads((d / "selection.json").read_text())
        assert sel["policy"] == "best_val" and sel["file"] == "best.pt" and (d / "best.pt").exists()
        assert set(sel["imagenet_weights"].values()) == {False}  # recorded: random weights
        assert ck["build"]["imagenet_weights"] == sel["imagenet_weights"]  # in every checkpoint too
        metrics = json.loads((work / "reports/fashionai" / m / "metrics.json").read_text())
        assert metrics["checkpoint"]["policy"] == "best_val"
        assert metrics["checkpoint"]["imagenet_weights"] == sel["imagenet_weights"]
        assert metrics["test"]["queries"]["used"] > 0 and 0 <= metrics["test"]["map_all"]["overall"] <= 100
    m3 = json.loads((work / "models/fashionai/m3net/seed0/selection.json").read_text())
    assert m3["imagenet_weights"] == {"trunk": False}

    # ASEN++: the global phase, then the joint one, each with its own StepLR
    rows = list(csv.DictReader((work / "reports/fashionai/asenpp/train_log.csv").open()))
    phases = [r["phase"] for r in rows]
    assert phases == sorted(phases, key=["global", "joint"].index) and set(phases) == {"global", "joint"}
    assert len(phases) == 2 * (16 // 8)  # 16 triplets of 8 per epoch, one epoch per phase
    sel = json.loads((work / "models/fashionai/asenpp/seed0/selection.json").read_text())
    assert sel["phase"] == "joint" and sel["max_epochs"] == 2 and set(sel["val_scores"]) == {"1", "2"}
    last = torch.load(work / "models/fashionai/asenpp/seed0/checkpoint.pt", map_location="cpu", weights_only=False)
    prev = torch.load(work / "models/fashionai/asenpp/seed0/checkpoint.prev.pt", map_location="cpu",
                      weights_only=False)
    assert (prev["phase"], prev["scheduler"]["step_size"], prev["scheduler"]["gamma"]) == ("global", 3, 0.9)
    assert (last["phase"], last["scheduler"]["step_size"], last["scheduler"]["gamma"]) == ("joint", 1, 0.9)
    # the joint phase: local at lr, global at lr x 0.1, both decayed x0.9 after its one epoch
    lrs = sorted(g["lr"] for g in last["optimizer"]["param_groups"])
    assert lrs == pytest.approx([1e-4 * 0.1 * 0.9, 1e-4 * 0.9])
    assert prev["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)  # step_size 3: no decay yet

    # the report's banner: twin data, an edited recipe, and no ImageNet weights, each named
    rep = _run([sys.executable, "-m", "benchmark.report"], work, env)
    assert rep.returncode == 0, rep.stderr[-3000:]
    head = (work / "reports/fashionai.md").read_text().split("## ")[0]
    assert "Twin data" in head and "fine-tunes its own backbone" in head
    assert "Edited paper recipe" in head and "`train.profiles.paper.image_size`: `32` (recipe: `224`)" in head
    assert "`models.asenpp.phase_epochs`: `[1, 1]` (recipe: `[50, 20]`)" in head
    assert "`train.profiles.paper.workers`" not in head and "`train.profiles.paper.threads`" not in head
    assert "No ImageNet weights" in head and "ASEN++ (`global_trunk`, `local_trunk`)" in head
    assert head.count("not comparable") == 3
    print(f"paper-profile chain: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
