"""benchmark.train: learning, resume == uninterrupted (bitwise), no-op re-run, NaN guard, seeds, phases.

Uses a tiny registered model and a tiny synthetic dataset (JPEGs whose colours encode the classes)
written into a temporary folder that the test chdirs into (tests/conftest.py's ``tiny_workdir``),
so `main([...])` runs as the stage does. The tiny models and data live in tests/tiny_training.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F
import yaml

from tests.tiny_training import CALLS, CPA, CRASH_AT, KEY, SimulatedKill, make_params, train_tiny

torch.set_num_threads(1)


def _ckpt(model="tiny_test", seed=0):
    from benchmark.train import checkpoint_path

    return torch.load(checkpoint_path(KEY, model, seed), weights_only=True)


def _log(model="tiny_test"):
    with open(Path("reports") / KEY / model / "train_log.csv") as f:
        return list(csv.DictReader(f))


def _equal_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------- tests


def test_resolve_model_params_and_phase_epochs():
    from benchmark.train import phase_epochs, resolve_model_params

    p = {"models": {"m": {"lr": 1e-4, "w_p": {"deepfashion": 100, "fashionai": 1}, "nested": {"x": 1}}}}
    assert resolve_model_params(p, "m", "deepfashion") == {"lr": 1e-4, "w_p": 100, "nested": {"x": 1}}
    assert resolve_model_params(p, "m", "fashionai")["w_p"] == 1
    assert phase_epochs(("main",), 50, {}) == [50]
    assert phase_epochs(("global", "joint"), 2, {}) == [1, 1]
    assert phase_epochs(("global", "joint"), 5, {}) == [2, 3]
    assert phase_epochs(("global", "joint"), 1, {}) == [1, 1]
    assert phase_epochs(("global", "joint"), 50, {"phase_epochs": [10, 40]}) == [10, 40]
    assert phase_epochs(("global", "joint"), 2, {"phase_epochs": {"global": 3, "joint": 4}}) == [3, 4]
    spec = {"phase_epochs": {"twin": [1, 1], "paper": [50, 20]}}
    assert phase_epochs(("global", "joint"), 2, spec, "paper") == [50, 20]
    assert phase_epochs(("global", "joint"), 2, spec, "twin") == [1, 1]
    with pytest.raises(ValueError):
        phase_epochs(("global", "joint"), 2, spec, "other")


def test_training_loss_falls(tiny_workdir):
    make_params(tiny_workdir, epochs=6, triplets=64, batch=16, lr=0.03)
    assert train_tiny() == 0
    rows = _log()
    assert len(rows) == 6 * 4
    first = np.mean([float(r["loss"]) for r in rows[:4]])
    last = np.mean([float(r["loss"]) for r in rows[-4:]])
    assert last < 0.7 * first, (first, last)


def test_log_checkpoint_and_done_layout(tiny_workdir):
    from benchmark.train import checkpoint_paths, done_path, load_trained_model

    params = make_params(tiny_workdir, epochs=2, triplets=32, batch=8)
    train_tiny()
    rows = _log()
    assert list(rows[0])[:4] == ["step", "epoch", "lr", "loss"]
    assert {"loss_triplet", "loss_bce"} <= set(rows[0])
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert [int(r["epoch"]) for r in rows] == [1] * 4 + [2] * 4
    # ExponentialLR steps once per epoch
    assert float(rows[0]["lr"]) == pytest.approx(0.01) and float(rows[-1]["lr"]) == pytest.approx(0.009)
    ck = _ckpt()
    assert ck["complete"] and ck["epoch"] == 2 and ck["taxonomy"]["classes_per_attribute"] == CPA
    assert ck["params"]["model"]["w_p"] == 2
    assert {"model", "optimizer", "scheduler", "rng", "params"} <= set(ck)
    done = json.loads(done_path(KEY, "tiny_test").read_text())
    assert done["seeds"] == [0]
    (path,) = checkpoint_paths(KEY, "tiny_test", params)
    model, meta = load_trained_model(path)
    assert not model.training and _equal_state(model.state_dict(), ck["model"])
    emb = model.embed(torch.zeros(2, 3, 16, 16))
    assert emb.attribute.shape == (2, 2, 8)


def test_rerun_is_noop_and_param_change_retrains(tiny_workdir):
    make_params(tiny_workdir)
    train_tiny()
    from benchmark.train import checkpoint_path

    p = checkpoint_path(KEY, "tiny_test", 0)
    mtime, calls = p.stat().st_mtime_ns, CALLS[0]
    log = Path("reports") / KEY / "tiny_test" / "train_log.csv"
    before = log.read_text()
    log.unlink()  # dvc removes unpersisted outputs before it runs a stage
    train_tiny()
    assert p.stat().st_mtime_ns == mtime and CALLS[0] == calls  # nothing trained
    assert log.read_text() == before
    make_params(tiny_workdir, lr=0.02)
    train_tiny()
    assert CALLS[0] == calls + 8 and p.stat().st_mtime_ns != mtime
    assert _ckpt()["params"]["model"]["lr"] == 0.02


@pytest.mark.parametrize("model,crash_at", [("tiny_test", 4 + 3), ("tiny_test2", 4 + 2), ("tiny_test", 3)])
def test_resume_equals_uninterrupted(tiny_workdir, model, crash_at):
    """2 epochs straight vs a run killed in epoch 2 (or in epoch 1) and resumed: bitwise equal."""
    from benchmark.train import checkpoint_path

    make_params(tiny_workdir, model=model, epochs=2, triplets=32, batch=8)
    train_tiny(model)
    straight = _ckpt(model)
    straight_log = _log(model)
    # start over: remove outputs, then crash mid-run
    checkpoint_path(KEY, model, 0).unlink()
    (Path("models") / KEY / model / "done.json").unlink()
    CALLS[0], CRASH_AT[0] = 0, crash_at
    with pytest.raises(SimulatedKill):
        train_tiny(model)
    killed_epoch = (crash_at - 1) // 4
    if killed_epoch:
        assert _ckpt(model)["epoch"] == killed_epoch and not _ckpt(model)["complete"]
    else:
        assert not checkpoint_path(KEY, model, 0).exists()
    CRASH_AT[0] = None
    train_tiny(model)
    resumed = _ckpt(model)
    assert resumed["complete"] and resumed["phase"] == straight["phase"]
    assert _equal_state(straight["model"], resumed["model"])
    assert _log(model) == straight_log


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_workdir):
    from benchmark.train import NonFiniteLoss

    make_params(tiny_workdir, epochs=3, nan_at_step=6)
    with pytest.raises(NonFiniteLoss, match=r"step 6 \(epoch 2.*loss=nan.*loss_bce=.*loss_triplet="):
        train_tiny()
    ck = _ckpt()
    assert ck["epoch"] == 1 and not ck["complete"]
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert not (Path("models") / KEY / "tiny_test" / "done.json").exists()


def test_several_seeds_one_checkpoint_each(tiny_workdir):
    from benchmark.train import checkpoint_paths

    params = make_params(tiny_workdir, seeds=(0, 1))
    train_tiny()
    paths_ = checkpoint_paths(KEY, "tiny_test", params)
    assert [p.parent.name for p in paths_] == ["seed0", "seed1"]
    a, b = (torch.load(p, weights_only=True) for p in paths_)
    assert a["complete"] and b["complete"] and not _equal_state(a["model"], b["model"])
    rows = _log()
    assert [r["seed"] for r in rows] == ["0"] * 8 + ["1"] * 8


def test_triplets_come_from_train_split_only(tiny_workdir):
    from benchmark.sampling import sample_triplets
    from benchmark.train import TrainData

    TrainData.__init__  # noqa: B018
    data = TrainData(KEY, 16, "negative", cache=False)
    ids = data.table.image_ids
    splits = pl.read_parquet(Path("data") / KEY / "splits.parquet")
    train_ids = set(splits.filter(pl.col("split") == "train")["image_id"].to_list())
    assert set(ids.tolist()) == train_ids
    t = sample_triplets(data.index, 500, seed=0, epoch=0)
    used = ids[np.concatenate([t.anchor, t.positive, t.negative])]
    assert set(used.tolist()) <= train_ids


def test_model_values_keyed_by_profile_or_dataset_resolve_to_this_run():
    from benchmark.train import resolve_model_params

    p = {"models": {"m": {"embed_dim": {"twin": 256, "paper": 1024}, "lr": 1e-4,
                          "w_p": {"darn": 1, "deepfashion": 100}, "local_backbone": {"resnet18_layer3": "x"}}},
         "train": {"profile": "twin", "profiles": {"twin": {}, "paper": {}}}}
    assert resolve_model_params(p, "m", "darn") == {"embed_dim": 256, "lr": 1e-4, "w_p": 1,
                                                    "local_backbone": {"resnet18_layer3": "x"}}
    p["train"]["profile"] = "paper"
    assert resolve_model_params(p, "m", "deepfashion")["embed_dim"] == 1024
    assert resolve_model_params(p, "m", "deepfashion")["w_p"] == 100
    p["models"]["m"]["embed_dim"] = {"twin": 256}
    with pytest.raises(KeyError, match="no value for the active profile 'paper'"):
        resolve_model_params(p, "m", "darn")
    # an override in the profile would make models.<m> look settable while it is not: refused
    p["train"]["profiles"]["paper"]["model_overrides"] = {"lr": 2e-4}
    with pytest.raises(ValueError, match="model_overrides is gone"):
        resolve_model_params(p, "m", "darn")


@pytest.mark.slow
def test_compile_setting_goes_through_torch_compile_and_trains_like_eager(tiny_workdir, monkeypatch):
    """train.compile wraps M3-Net's step in torch.compile with the named mode. Traced by dynamo
    with the eager backend (no C++ compiler, same kernels), two epochs give the eager run's
    weights, prototypes and losses: the step has no trace-breaking Python (buffer updates,
    dict outputs). Inductor and CUDA graphs themselves are measured by benchmark.perf on a GPU."""
    import yaml as _yaml

    from benchmark.train import checkpoint_path

    def run(setting):
        params = make_params(tiny_workdir, model="m3net", epochs=2, triplets=24, batch=6, lr=1e-3, inner_dim=8)
        params["train"]["compile"] = setting
        params["train"]["profiles"]["tiny"].update(backbone="resnet18_layer3", image_size=32)
        (tiny_workdir / "params.yaml").write_text(_yaml.safe_dump(params))
        for p in (checkpoint_path(KEY, "m3net", 0), Path("models") / KEY / "m3net" / "done.json"):
            p.unlink(missing_ok=True)
        assert train_tiny("m3net") == 0
        return _ckpt("m3net"), _log("m3net")

    eager, eager_log = run(False)
    calls = []
    real_compile = torch.compile

    def eager_backend_compile(module, *, mode=None, dynamic=None):
        calls.append(mode)
        return real_compile(module, backend="eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", eager_backend_compile)
    torch._dynamo.reset()
    traced, traced_log = run("reduce-overhead")
    assert calls == ["reduce-overhead"]
    assert traced["complete"]
    for k, v in eager["model"].items():
        assert torch.allclose(v.float(), traced["model"][k].float(), atol=1e-5), k
    losses = lambda rows: [float(r["loss"]) for r in rows]  # noqa: E731
    assert losses(traced_log) == pytest.approx(losses(eager_log), rel=1e-5, abs=1e-6)


# ------------------------------------------------- per-model triplets, per-phase lr, checkpoint choice


def _with_profile(root: Path, params: dict, **profile) -> dict:
    params["train"]["profiles"]["tiny"].update(profile)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def _val_queries(root: Path) -> None:
    """Rewrite the splits so that the val split has queries and candidates (ids 40..59 -> val)."""
    from datasets import paths
    from datasets.schemas import SplitsSchema, write_table

    n = 60
    split = np.where(np.arange(n) < 40, "train", np.where(np.arange(n) < 52, "val", "test"))
    role = np.where(split == "train", "train", np.where(np.arange(n) % 3 == 0, "query", "candidate"))
    write_table(pl.DataFrame({"image_id": np.arange(n), "split": split, "role": role}),
                root / paths.splits_path(KEY), SplitsSchema)


def test_triplets_per_epoch_can_be_given_per_model(tiny_workdir):
    from benchmark.train import triplets_per_epoch

    spec = {"triplets_per_epoch": {"default": 40000, "asen": 100000}}
    assert triplets_per_epoch(spec, "asen") == 100000
    assert triplets_per_epoch(spec, "m3net") == 40000
    assert triplets_per_epoch({"triplets_per_epoch": 320}, "asen") == 320
    with pytest.raises(ValueError, match="names neither"):
        triplets_per_epoch({"triplets_per_epoch": {"asen": 1}}, "modc")
    params = make_params(tiny_workdir, epochs=1, batch=8)
    _with_profile(tiny_workdir, params, triplets_per_epoch={"default": 16, "tiny_test": 40})
    train_tiny()
    assert len(_log()) == 40 // 8


def test_paper_profile_samples_as_each_reference():
    from benchmark.params import load_params
    from benchmark.train import triplets_per_epoch

    prof = load_params(Path(__file__).resolve().parent.parent / "params.yaml")["train"]["profiles"]["paper"]
    assert {m: triplets_per_epoch(prof, m) for m in ("asen", "asen_v2", "asenpp", "m3net", "m3net_a", "modc")} == {
        "asen": 100000, "asen_v2": 100000, "asenpp": 100000, "m3net": 40000, "m3net_a": 40000, "modc": 40000}
    assert prof["preprocess"] == "resize_crop" and prof["checkpoint"] == "best_val"
    from benchmark.train import lr_schedule

    models = load_params(Path(__file__).resolve().parent.parent / "params.yaml")["models"]
    # ASEN++: StepLR x0.9 every 3 epochs in stage 1, every epoch in stage 2 (the authors' configs); no flips
    assert lr_schedule(models["asenpp"], "global") == (3, 0.9) and lr_schedule(models["asenpp"], "joint") == (1, 0.9)
    assert models["asenpp"]["flip"] is False and models["asen"].get("flip", True) is True
    assert lr_schedule(models["asen"], "main") == (1, 0.985) and lr_schedule(models["m3net"], "main") == (1, 0.975)


def test_lr_schedule_per_phase(tiny_workdir):
    """ASEN++'s StepLR per stage: x0.9 every 3 epochs in stage 1, x0.5 (here) every epoch in stage 2,
    each stage starting from the base lr; without lr_schedule, x lr_decay per epoch."""
    from benchmark.train import lr_schedule

    assert lr_schedule({"lr_decay": 0.985}, "main") == (1, 0.985)
    sched = {"global": {"step_size": 3, "gamma": 0.9}, "joint": {"step_size": 1, "gamma": 0.5}}
    assert lr_schedule({"lr_schedule": sched}, "global") == (3, 0.9)
    make_params(tiny_workdir, model="tiny_test2", epochs=6, triplets=8, batch=8, lr=0.01,
                lr_schedule=sched, phase_epochs=[4, 3])
    train_tiny("tiny_test2")
    lr_of_epoch = {int(r["epoch"]): float(r["lr"]) for r in _log("tiny_test2")}
    want = {1: 0.01, 2: 0.01, 3: 0.01, 4: 0.009, 5: 0.01, 6: 0.005, 7: 0.0025}
    assert lr_of_epoch == pytest.approx(want)


def _brute_val_map(model, root: Path) -> float:
    """Val MAP@all by hand: per attribute, val queries positive in it against val candidates positive
    in it, relevance 'all' (single-label here: the same class), AP over the full ranking, queries
    without a relevant candidate left out, the mean over all queries."""
    from benchmark.loaders import ImageFolderTable, label_matrix, normalize
    from datasets import paths
    from datasets.schemas import read_table

    sp = pl.read_parquet(root / paths.splits_path(KEY)).filter(pl.col("split") == "val").sort("image_id")
    images = pl.read_parquet(root / paths.validated_dir(KEY) / "images.parquet")
    labels = pl.read_parquet(root / paths.validated_dir(KEY) / "labels.parquet")
    tax = pl.read_parquet(root / paths.validated_dir(KEY) / "taxonomy.parquet")
    ids = sp["image_id"].to_numpy()
    lab, _ = label_matrix(labels, tax, ids, "negative")
    table = ImageFolderTable(images, root / paths.raw_dir(KEY), 16, image_ids=ids)
    model.eval()
    with torch.no_grad():
        emb = model.embed(normalize(torch.stack([table.load(i) for i in range(len(ids))]))).attribute.double()
    is_q = (sp["role"] == "query").to_numpy()
    aps, start = [], 0
    for n, m_n in enumerate(CPA):
        sl = lab[:, start:start + m_n].numpy()
        start += m_n
        qs = [i for i in range(len(ids)) if is_q[i] and sl[i].any()]
        cs = [i for i in range(len(ids)) if not is_q[i] and sl[i].any()]
        for q in qs:
            sims = [float(F.cosine_similarity(emb[q, n], emb[c, n], dim=0)) for c in cs]
            order = sorted(range(len(cs)), key=lambda j: (-sims[j], j))
            rel = [bool((sl[cs[j]] >= sl[q]).all()) for j in order]
            if not any(rel):
                continue
            hits, ap = 0, 0.0
            for r, ok in enumerate(rel, 1):
                if ok:
                    hits += 1
                    ap += hits / r
            aps.append(ap / hits)
    return 100.0 * float(np.mean(aps))


def test_best_val_keeps_the_best_validation_epoch(tiny_workdir):
    from benchmark.train import best_path, checkpoint_path, load_trained_model, read_selection, selected_checkpoint_path

    _val_queries(tiny_workdir)
    params = make_params(tiny_workdir, epochs=4, triplets=32, batch=8, lr=0.05)
    _with_profile(tiny_workdir, params, checkpoint="best_val")
    train_tiny()
    sel = read_selection(KEY, "tiny_test", 0)
    scores = {int(k): v for k, v in sel["val_scores"].items()}
    assert sorted(scores) == [1, 2, 3, 4] and sel["policy"] == "best_val" and sel["file"] == "best.pt"
    best_epoch = max(scores, key=lambda e: (scores[e], -e))  # the first of equal scores, as `>` keeps it
    assert sel["epoch"] == best_epoch and sel["val_map_all"] == scores[best_epoch]
    assert selected_checkpoint_path(KEY, "tiny_test", 0) == best_path(KEY, "tiny_test", 0)
    model, meta = load_trained_model(best_path(KEY, "tiny_test", 0))
    assert meta["epoch"] == best_epoch
    assert _brute_val_map(model, tiny_workdir) == pytest.approx(sel["val_map_all"], abs=1e-3)
    last, _ = load_trained_model(checkpoint_path(KEY, "tiny_test", 0))
    assert _brute_val_map(last, tiny_workdir) == pytest.approx(scores[4], abs=1e-3)
    # deterministic: a fresh run writes the same selection.json, byte for byte
    before = (best_path(KEY, "tiny_test", 0).parent / "selection.json").read_text()
    for f in ("checkpoint.pt", "best.pt", "selection.json"):
        (checkpoint_path(KEY, "tiny_test", 0).parent / f).unlink()
    (Path("models") / KEY / "tiny_test" / "done.json").unlink()
    train_tiny()
    assert (best_path(KEY, "tiny_test", 0).parent / "selection.json").read_text() == before


def test_last_policy_selects_the_final_epoch(tiny_workdir):
    from benchmark.train import best_path, checkpoint_path, read_selection, selected_checkpoint_path

    make_params(tiny_workdir, epochs=2)
    train_tiny()
    sel = read_selection(KEY, "tiny_test", 0)
    assert sel["policy"] == "last" and sel["epoch"] == 2 and sel["file"] == "checkpoint.pt"
    assert selected_checkpoint_path(KEY, "tiny_test", 0) == checkpoint_path(KEY, "tiny_test", 0)
    assert not best_path(KEY, "tiny_test", 0).exists()


def test_best_val_in_a_two_phase_model_selects_within_the_last_phase(tiny_workdir):
    """ASEN++: stage 2 starts from stage 1's last epoch; only stage 2's epochs compete (the authors'
    stage-2 run keeps its own model_best)."""
    from benchmark.train import read_selection

    _val_queries(tiny_workdir)
    params = make_params(tiny_workdir, model="tiny_test2", epochs=4, triplets=16, batch=8, phase_epochs=[2, 2])
    _with_profile(tiny_workdir, params, checkpoint="best_val")
    train_tiny("tiny_test2")
    sel = read_selection(KEY, "tiny_test2", 0)
    # every epoch is scored (the convergence record); only the joint phase's compete
    scores = {int(k): v for k, v in sel["val_scores"].items()}
    assert sorted(scores) == [1, 2, 3, 4] and sel["phase"] == "joint"
    assert sel["epoch"] == max((3, 4), key=lambda e: (scores[e], -e)) and sel["val_map_all"] == scores[sel["epoch"]]


def test_best_val_resume_equals_uninterrupted(tiny_workdir):
    from benchmark.train import best_path, checkpoint_path

    _val_queries(tiny_workdir)
    params = make_params(tiny_workdir, epochs=3, triplets=32, batch=8, lr=0.05)
    _with_profile(tiny_workdir, params, checkpoint="best_val")
    train_tiny()
    straight = (torch.load(best_path(KEY, "tiny_test", 0), weights_only=True),
                (checkpoint_path(KEY, "tiny_test", 0).parent / "selection.json").read_text())
    for f in ("checkpoint.pt", "best.pt", "selection.json"):
        (checkpoint_path(KEY, "tiny_test", 0).parent / f).unlink()
    (Path("models") / KEY / "tiny_test" / "done.json").unlink()
    CALLS[0], CRASH_AT[0] = 0, 4 * 2 + 2  # killed in epoch 3
    with pytest.raises(SimulatedKill):
        train_tiny()
    CRASH_AT[0] = None
    train_tiny()
    resumed = torch.load(best_path(KEY, "tiny_test", 0), weights_only=True)
    assert resumed["epoch"] == straight[0]["epoch"] and _equal_state(resumed["model"], straight[0]["model"])
    assert (checkpoint_path(KEY, "tiny_test", 0).parent / "selection.json").read_text() == straight[1]


@pytest.mark.parametrize("flip", [True, False])
def test_model_flip_setting_reaches_the_sampler(tiny_workdir, monkeypatch, flip):
    """models.<m>.flip: false (ASEN++: no mirror augmentation) samples triplets without flips."""
    import benchmark.sampling as sampling

    seen = []
    real = sampling.sample_triplets

    def spy(*args, **kw):
        t = real(*args, **kw)
        seen.append(bool(t.flip.any()))
        return t

    monkeypatch.setattr(sampling, "sample_triplets", spy)
    make_params(tiny_workdir, epochs=2, flip=flip)
    train_tiny()
    assert seen == [flip, flip]


def test_a_rerun_that_reproduces_the_weights_reproduces_every_tracked_byte(tiny_workdir):
    """DVC skips everything downstream only when the model folder and the step log come out
    byte-identical; timings live in train_timing.json, which neither DVC nor git tracks."""
    import shutil

    make_params(tiny_workdir, epochs=2)
    assert train_tiny() == 0
    out = Path("models") / KEY / "tiny_test"
    log = Path("reports") / KEY / "tiny_test" / "train_log.csv"
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    first_log = log.read_bytes()
    timing = json.loads((Path("reports") / KEY / "tiny_test" / "train_timing.json").read_text())
    assert timing["seconds"] > 0 and timing["steps"] > 0
    shutil.rmtree(out)
    log.unlink()
    assert train_tiny() == 0
    second = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert sorted(first) == sorted(second) and any(str(k).endswith("checkpoint.pt") for k in first)
    for k in first:
        assert first[k] == second[k], k
    assert log.read_bytes() == first_log and b"images_per_s" not in first_log


def _levelled_reference(scores, patience, min_delta):
    """Early stopping, spelt out: the best of the epochs before the last ``patience`` ones, and
    whether any of the last ``patience`` beat it by more than ``min_delta``."""
    vals = [s if s is not None and s == s else float("-inf") for s in scores]
    if len(vals) <= patience:
        return False
    before = float("-inf")
    for v in vals[:len(vals) - patience]:
        before = max(before, v)
    for v in vals[len(vals) - patience:]:
        if v > before + min_delta:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.just(float("nan")), st.floats(0, 100)), max_size=12),
       st.integers(1, 4), st.floats(0, 2))
def test_levelled_matches_its_reference(scores, patience, min_delta):
    from benchmark.train import levelled

    assert levelled(scores, patience, min_delta) == _levelled_reference(scores, patience, min_delta)


@given(st.floats(0, 50), st.integers(1, 4), st.floats(0.0, 1.0), st.integers(2, 12))
def test_levelled_invariants(start, patience, min_delta, n):
    from benchmark.train import levelled

    rising = [start + (min_delta + 0.5) * i for i in range(n)]  # every epoch beats the last by > min_delta
    assert not levelled(rising, patience, min_delta)
    flat = [start] * n
    assert levelled(flat, patience, min_delta) == (n > patience)  # stops as soon as the window allows


def test_early_stop_ends_a_levelled_curve_and_records_it(tiny_workdir):
    """A curve that cannot move (lr 1e-12) stops after 1 + patience epochs of the 5 allowed; the
    selection records the run, the checkpoint is complete (a rerun is a no-op)."""
    from benchmark.train import checkpoint_path, read_selection

    _val_queries(tiny_workdir)
    params = make_params(tiny_workdir, epochs=5, triplets=16, batch=8, lr=1e-12)
    _with_profile(tiny_workdir, params, checkpoint="best_val", early_stop={"patience": 2, "min_delta": 0.1})
    train_tiny()
    sel = read_selection(KEY, "tiny_test", 0)
    assert sorted(int(e) for e in sel["val_scores"]) == [1, 2, 3]
    assert sel["epochs_run"] == 3 and sel["max_epochs"] == 5 and sel["epoch"] == 1
    assert sel["early_stop"] == {"epoch": 3, "of": 5, "patience": 2, "min_delta": 0.1}
    ckpt = torch.load(checkpoint_path(KEY, "tiny_test", 0), weights_only=True)
    assert ckpt["complete"] and ckpt["epoch"] == 3
    before = checkpoint_path(KEY, "tiny_test", 0).stat().st_mtime_ns
    train_tiny()
    assert checkpoint_path(KEY, "tiny_test", 0).stat().st_mtime_ns == before
    # without early_stop the same run trains all 5 epochs
    _with_profile(tiny_workdir, params, early_stop=None)
    train_tiny()
    assert read_selection(KEY, "tiny_test", 0)["epochs_run"] == 5


# ------------------------------------------- issue 25: epochs per model, schedules, precision, val scoring

REPO_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


def _repo_params(profile: str) -> dict:
    from benchmark.params import load_params

    params = load_params(REPO_PARAMS)
    params["train"]["profile"] = profile
    return params


def test_paper_profile_trains_each_model_its_references_epochs():
    """ASEN: 200 epochs (Maryeon/asen main.py); ASEN_v2: 50 (its README recipe); M3-Net and MODC: 50
    (the suite's choice); ASEN++: its phase_epochs (50 + 20), which replace the profile's epochs."""
    from benchmark.train import phase_epochs, profile_epochs, resolve_model_params

    params = _repo_params("paper")
    prof = params["train"]["profiles"]["paper"]
    got = {m: profile_epochs(prof, m) for m in ("asen", "asen_v2", "m3net", "m3net_a", "m3net_c", "m3net_eq11", "modc")}
    assert got == {"asen": 200, "asen_v2": 50, "m3net": 50, "m3net_a": 50, "m3net_c": 50, "m3net_eq11": 50, "modc": 50}
    asenpp = resolve_model_params(params, "asenpp", "darn")
    assert phase_epochs(("global", "joint"), profile_epochs(prof, "asenpp"), asenpp, "paper") == [50, 20]
    twin = _repo_params("twin")["train"]["profiles"]["twin"]
    assert {profile_epochs(twin, m) for m in ("asen", "asen_v2", "m3net", "modc")} == {twin["epochs"]}  # one cap
    assert isinstance(twin["epochs"], int)


def test_epochs_per_model_reach_the_run_and_its_records(tiny_workdir):
    from benchmark.train import read_selection

    params = make_params(tiny_workdir, triplets=16, batch=8)
    _with_profile(tiny_workdir, params, epochs={"default": 1, "tiny_test": 3})
    train_tiny()
    assert sorted({int(r["epoch"]) for r in _log()}) == [1, 2, 3]
    recipe = read_selection(KEY, "tiny_test", 0)["recipe"]
    assert recipe["epochs"] == {"main": 3} and recipe["triplets_per_epoch"] == 16
    used = json.loads((Path("models") / KEY / "tiny_test" / "params_used.json").read_text())
    assert used["recipe"] == recipe and used["train"]["epochs"] == {"default": 1, "tiny_test": 3}


def test_asen_family_schedules_follow_their_recipes():
    """ASEN: StepLR(1, 0.985) (main.py's defaults) in both profiles; ASEN_v2: StepLR(3, 0.9) in the
    paper profile (the README's `--decay_rate 0.9 --step_size 3`), the twin keeping x0.985 per epoch;
    the schedules are written as ASEN++'s lr_schedule, per phase."""
    from benchmark.train import lr_schedule, resolve_model_params

    for profile, v2 in (("paper", (3, 0.9)), ("twin", (1, 0.985))):
        params = _repo_params(profile)
        assert lr_schedule(resolve_model_params(params, "asen", "fashionai"), "main") == (1, 0.985)
        assert lr_schedule(resolve_model_params(params, "asen_v2", "fashionai"), "main") == v2
        assert "lr_decay" not in params["models"]["asen_v2"]


def test_lr_schedule_keyed_by_profile_reaches_the_optimiser(tiny_workdir):
    make_params(tiny_workdir, epochs=4, triplets=8, batch=8, lr=0.01,
                lr_schedule={"tiny": {"main": {"step_size": 2, "gamma": 0.5}}, "other": {"main": {"gamma": 0.1}}})
    params = yaml.safe_load((tiny_workdir / "params.yaml").read_text())
    params["train"]["profiles"]["other"] = dict(params["train"]["profiles"]["tiny"])
    (tiny_workdir / "params.yaml").write_text(yaml.safe_dump(params))
    train_tiny()
    lr_of_epoch = {int(r["epoch"]): float(r["lr"]) for r in _log()}
    assert lr_of_epoch == pytest.approx({1: 0.01, 2: 0.01, 3: 0.005, 4: 0.005})


def test_precision_is_validated_and_the_paper_profile_trains_in_fp32():
    from benchmark.train import precision
    from datasets.params_schema import SchemaError, validate

    assert _repo_params("paper")["train"]["profiles"]["paper"]["precision"] == "fp32"
    assert precision({}) == "fp32" and precision({"precision": "bf16"}) == "bf16"
    params = _repo_params("paper")
    params["train"]["profiles"]["paper"]["precision"] = "fp16"
    with pytest.raises(SchemaError, match="precision"):
        validate(params)
    params["train"]["profiles"]["paper"]["precision"] = "fp32"
    params["train"]["profiles"]["paper"]["epochs"] = {"default": 50, "asen": 0}
    with pytest.raises(SchemaError, match="epochs"):
        validate(params)


@pytest.mark.parametrize("prec,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_sets_the_autocast_of_the_step_and_the_val_scoring(tiny_workdir, monkeypatch, prec, dtype):
    """Inside the training step and the val scoring, the dtype of a Linear's output: float32 with no
    autocast under fp32 (before this setting, no autocast on the CPU either, bf16 on CUDA), bfloat16
    under bf16."""
    from tests import tiny_training

    import benchmark.train_card as train_card

    seen = {"train": set(), "val": set()}
    real = tiny_training.TinyModel._features
    carding = []  # the model card measures a fresh copy's FLOPs outside training: not the step's precision
    real_card = train_card.model_card

    def card(*a, **k):
        carding.append(True)
        try:
            return real_card(*a, **k)
        finally:
            carding.pop()

    def spy(self, images):
        feat, emb, logits = real(self, images)
        if not carding:
            seen["train" if self.training else "val"].add(emb.dtype)
        return feat, emb, logits

    monkeypatch.setattr(tiny_training.TinyModel, "_features", spy)
    monkeypatch.setattr(train_card, "model_card", card)
    params = make_params(tiny_workdir, epochs=1, triplets=16, batch=8)
    _with_profile(tiny_workdir, params, precision=prec)
    train_tiny()
    assert seen == {"train": {dtype}, "val": {dtype}}
    from benchmark.train import read_selection

    assert read_selection(KEY, "tiny_test", 0)["recipe"]["precision"] == prec


def _class_level_val(model_name: str):
    """A class-level model on cached maps and a val set whose attribute ranking and multi-granularity
    ranking differ, with a query (row 0's class 2 of attribute 0) that has no relevant candidate."""
    from benchmark.loaders import FeatureTable
    from benchmark.train import ValSet
    from model import build_model

    torch.manual_seed(3)
    cpa = [3, 2]
    kw = dict(embed_dim=16, inner_dim=8, margin=0.4) | ({"w_p": 1.0} if model_name == "m3net" else {})
    model = build_model(model_name, classes_per_attribute=cpa, backbone="features:plain8", pretrained=False, **kw)
    n = 40
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((n, 128, 4, 4)).astype(np.float32)
    labels = np.zeros((n, 5), dtype=bool)
    labels[np.arange(n), rng.integers(0, 2, n)] = True  # attribute 0: classes 0 and 1
    labels[np.arange(n), 3 + rng.integers(0, 2, n)] = True  # attribute 1
    labels[np.arange(n) % 4 == 0, 1 - labels[np.arange(n) % 4 == 0, 0].astype(int)] = True  # some multi-label
    labels[0, :3] = [False, False, True]  # a query of class 2, which no candidate has
    is_q = np.arange(n) < 12
    val = ValSet(table=FeatureTable(maps, np.arange(n)), labels=torch.from_numpy(labels),
                 is_query=torch.from_numpy(is_q), classes_per_attribute=cpa)
    if model_name == "modc":  # each class's prototype on one of its images: the assignment varies by image
        model.eval()
        with torch.no_grad():
            x = model.embed(torch.from_numpy(maps)).attribute
            for g in range(5):
                n, row = int(g >= 3), int(np.flatnonzero(labels[:, g])[-1])
                model.prototypes.update(torch.tensor([g]), x[row, n][None])
    return model, val, maps, labels, is_q, cpa


@pytest.mark.parametrize("model_name", ["m3net", "modc"])
@pytest.mark.parametrize("no_relevant", ["leave_out", "zero"])
def test_val_scoring_ranks_as_the_evaluate_stage_tests(model_name, no_relevant):
    """M3-Net and MODC: the val score is the evaluate stage's overall MAP@all of the multi-granularity
    ranking at evaluate.gamma under evaluate.no_relevant, not the attribute ranking with R = 0 queries
    always left out (the score before)."""
    from benchmark.evaluate import evaluate_split
    from benchmark.metrics import apply_no_relevant
    from benchmark.retrieval import attribute_map_all
    from benchmark.train import validation_map

    model, val, maps, labels, is_q, cpa = _class_level_val(model_name)
    model.eval()
    gamma, cap = 0.3, 2
    with torch.no_grad():
        emb = model.embed(torch.from_numpy(maps), gamma=gamma, max_classes=cap)
    rows_q, rows_c = np.flatnonzero(is_q), np.flatnonzero(~is_q)
    pq = evaluate_split(emb, rows_q, rows_c, labels, cpa, relevance="all", ks=[100], ranking="multi-granularity")
    ap = apply_no_relevant(torch.as_tensor(pq["ap_all"]), no_relevant)
    want = float(100 * ap[~torch.isnan(ap)].mean())
    got = validation_map(model, val, torch.device("cpu"), relevance_mode="all", gamma=gamma, max_classes=cap,
                         no_relevant=no_relevant)
    assert got == pytest.approx(want, abs=1e-4)
    old = attribute_map_all(emb.attribute, rows_q, rows_c, labels, cpa, "all")  # the score before
    assert abs(got - old) > 0.05
    assert np.isnan(pq["ap_all"]).any()  # the R = 0 query is there: the policies differ


def test_the_val_scoring_params_are_in_the_fingerprint(tiny_workdir):
    """The val curve picks best_val's epoch and ends early_stop's run, so a run scored under another
    evaluate.gamma, max_classes, no_relevant or relevance is not resumed (dvc.yaml lists them)."""
    from benchmark.train import run_fingerprint

    params = make_params(tiny_workdir)
    base = run_fingerprint(KEY, "tiny_test", params, 0)
    for key, value in (("gamma", 0.5), ("max_classes", 4), ("no_relevant", "zero"), ("relevance", "any")):
        other = {**params, "evaluate": {key: value}}
        assert run_fingerprint(KEY, "tiny_test", other, 0) != base, key
    dvc = yaml.safe_load((REPO_PARAMS.parent / "dvc.yaml").read_text())
    listed = dvc["stages"]["train"]["params"]
    assert {"evaluate.relevance", "evaluate.gamma", "evaluate.max_classes", "evaluate.no_relevant"} <= set(listed)


def test_the_run_writes_the_model_card_and_an_up_to_date_run_restores_it(tiny_workdir):
    """Issue 27 goal 4: train measures the model card once per model (a fresh copy, on the CPU):
    parameters, FLOPs per image, embedding size, the reference, and each seed's seconds. The model
    folder's copy holds no timing (the byte-reproducibility above); the committed copy, which DVC
    deletes before the stage runs, is written back from it and train_timing.json when the run is
    up to date."""
    make_params(tiny_workdir, epochs=1, seeds=(0, 1))
    assert train_tiny() == 0
    inside = json.loads((Path("models") / KEY / "tiny_test" / "card.json").read_text())
    committed_path = Path("reports") / KEY / "tiny_test" / "card.json"
    committed = json.loads(committed_path.read_text())
    assert "seconds_per_seed" not in inside and {k: committed[k] for k in inside} == inside
    assert len(committed["seconds_per_seed"]) == 2 and all(s > 0 for s in committed["seconds_per_seed"])
    assert committed["device"] == "cpu" and inside["seeds"] == [0, 1] and inside["image_size"] == 16
    assert inside["parameters"]["head"] > 0 and inside["flops"]["head"] > 0
    assert inside["flops"]["total"] == inside["flops"]["head"] + inside["flops"]["trunk"]
    assert inside["embedding_size"] == 8
    committed_path.unlink()
    assert train_tiny() == 0  # up to date: nothing trained
    assert json.loads(committed_path.read_text()) == committed
