"""The perf script's CPU path at a tiny size: every measurement runs and the ratios are sane."""

from __future__ import annotations

import json
import math

import torch


def test_perf_runs_on_the_cpu_at_a_tiny_size(tmp_path):
    from benchmark.cli import main

    torch.set_num_threads(1)
    out = tmp_path / "perf.json"
    prof = tmp_path / "profile.txt"
    assert main(["perf", "--size", "tiny", "--device", "cpu", "--workers", "0", "--out", str(out),
                 "--profile", str(prof)]) == 0
    table = prof.read_text()
    assert "aten::" in table and "Self CPU" in table  # the operator table of the extraction
    res = json.loads(out.read_text())
    assert res["device"].startswith("cpu")
    assert set(res["ratios"]) == {"train_step_batch6", "extraction", "loader_vs_train_step"}
    for name, r in res["ratios"].items():
        assert math.isfinite(r) and r > 0, name
    tr = res["training"]["batch6"]
    # the ratio is the two measured throughputs' quotient, not an independent number
    assert math.isclose(tr["ratio"], tr["m3net_images_per_s"] / tr["trunk_images_per_s"], rel_tol=1e-9)
    # gamma 0 selects every class up to 16 per (image, attribute): the tiny taxonomy has 5, 4 and 6
    assert res["extraction"]["classes_per_image_attribute"] == (5 + 4 + 6) / 3
    # the training loader itself: 32 images -> 10 triplets, batches of 2 after the start-up batch
    assert res["loader"]["images"] == 30 and res["loader"]["batch_triplets"] == 2
    assert res["metrics"]["queries"] == 64


def test_synthetic_batch_follows_the_model_batch_layout():
    from benchmark.perf import synthetic_batch

    classes = [3, 5]
    b = synthetic_batch(12, classes, 32, torch.device("cpu"), channels_last=False)
    n = 4
    assert b["images"].shape == (12, 3, 32, 32)
    offsets = torch.tensor([0, 3])
    gid = offsets[b["attribute"]] + b["class_id"]
    rows = torch.arange(n)
    assert (b["class_id"] < torch.tensor(classes)[b["attribute"]]).all()
    # anchors and positives carry the sampled class, negatives do not
    assert b["targets"][rows, gid].eq(1).all() and b["targets"][rows + n, gid].eq(1).all()
    assert b["targets"][rows + 2 * n, gid].eq(0).all()


def test_compile_setting_of_params_maps_to_torch_compile():
    import pytest

    from benchmark.cli import main
    from model.base import compiled

    m = torch.nn.Linear(2, 2)
    assert compiled(m, False) is m and compiled(m, None) is m
    for setting in (True, "default", "reduce-overhead"):
        c = compiled(m, setting)  # lazy: nothing compiles until called
        assert c is not m and c._orig_mod is m
    with pytest.raises(ValueError, match="train.compile"):
        compiled(m, "fast")
    with pytest.raises(SystemExit, match="unknown mode"):
        main(["perf", "--size", "tiny", "--device", "cpu", "--compile", "default,fast"])


def test_perf_refuses_an_invalid_params_file_instead_of_falling_back(tmp_path, monkeypatch):
    """A params.yaml that is there but wrong stops perf with the params error, as it stops a stage;
    only a missing file (perf run outside a checkout) falls back to the model's defaults, said aloud."""
    import pytest
    import yaml

    from benchmark.perf import SIZES, build_m3net
    from datasets.params import ParamsError

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["models"]["m3net"]["lambda_ccc"] = 0.5
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cfg = SIZES["tiny"]
    with pytest.raises(ParamsError, match="lambda_ccc"):
        build_m3net(cfg, torch.device("cpu"))
    (tmp_path / "params.yaml").unlink()
    assert build_m3net(cfg, torch.device("cpu")) is not None
