"""The report's "not comparable" banner (issue 25, item 8): besides the data source and the
profile's name, it notices a paper profile edited away from the recipe (benchmark/paper_recipe.py)
and a run whose trunks did not start from ImageNet weights, which the train stage records
(model.backbone.imagenet_weights -> selection.json -> the embeddings file -> metrics.json)."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
import yaml

from benchmark import report
from benchmark.paper_recipe import ABSENT, recipe_edits

torch.set_num_threads(1)


def test_the_shipped_params_run_the_recipe(repo_params):
    """params.yaml's paper values are the recipe: a change to either without the other is caught here."""
    edits = recipe_edits(repo_params)
    assert edits == [], ("params.yaml's paper profile differs from benchmark/paper_recipe.py: "
                         + "; ".join(f"{k}: {v!r} (recipe {r!r})" for k, v, r in edits)
                         + ". Change both when the recipe changes on purpose.")


def test_recipe_edits_name_every_paper_value_and_ignore_the_rest(repo_params):
    p = copy.deepcopy(repo_params)
    p["train"]["profiles"]["paper"]["image_size"] = 112  # a profile value
    p["train"]["profiles"]["paper"]["precision"] = "bf16"  # the references train in fp32
    p["train"]["profiles"]["paper"]["compile_note"] = 1  # a key the recipe does not have
    del p["train"]["profiles"]["paper"]["early_stop"]  # a recipe key removed
    p["models"]["m3net"]["lr"]["paper"] = 3e-4  # a paper-keyed model value
    p["models"]["asen"]["margin"] = 0.3  # a value both profiles use
    p["models"]["asenpp"]["phase_epochs"]["paper"] = [1, 1]
    p["models"]["modc"]["embed_dim"]["twin"] = 64  # the twin's values are not the recipe
    p["train"]["profiles"]["paper"]["workers"] = 2  # how the host runs it, not what it computes
    p["train"]["profiles"]["paper"]["pretrain"]["epochs"] = 1  # read only under trunk: shared
    p["train"]["profiles"]["twin"]["epochs"] = 1
    p["models"]["m3net"]["lr_decay"] = 0.975  # the recipe's value written again: no edit
    got = {k: (v, r) for k, v, r in recipe_edits(p)}
    assert got == {"train.profiles.paper.image_size": (112, 224),
                   "train.profiles.paper.precision": ("bf16", "fp32"),
                   "train.profiles.paper.compile_note": (1, ABSENT),
                   "train.profiles.paper.early_stop": (ABSENT, None),
                   "models.m3net.lr": (3e-4, 1e-4),
                   "models.asen.margin": (0.3, 0.2),
                   "models.asenpp.phase_epochs": ([1, 1], [50, 20])}


def _page_head(root) -> str:
    report.main([])
    return (root / "reports" / "fashionai.md").read_text().split("## ")[0]


@pytest.fixture
def real_paper_tree(tmp_path, monkeypatch, repo_params):
    """Real data, the shipped paper profile, one evaluated model whose trunk loaded ImageNet weights."""
    monkeypatch.chdir(tmp_path)
    params = {"report": {"examples": 1}, "train": {**repo_params["train"], "profile": "paper"},
              "models": repo_params["models"], "acquire": {k: {"source": "local"} for k in report.DATASETS}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    def write_metrics(model: str, imagenet: dict | None):
        d = tmp_path / "data" / "fashionai" / "eval" / model  # the evaluate stage's copy, which the report reads
        d.mkdir(parents=True, exist_ok=True)
        sec = {"overall": 50.0, "macro": 50.0, "skirt_length": 50.0}
        split = {"map_all": sec, "map_100": sec, "recall_100": sec,
                 "queries": {"used": 10, "left_out": 0, "no_relevant": 0},
                 "cooccurring": {"map_all": 50.0, "queries": 4, "classes": 2, "pairs": 1}}
        ck = {"policy": "best_val", "epoch": 3, "epochs_run": 50, "max_epochs": 50}
        if imagenet is not None:
            ck["imagenet_weights"] = imagenet
        (d / "metrics.json").write_text(json.dumps({"test": split, "val": split, "checkpoint": ck}))

    write_metrics("m3net", {"trunk": True})
    return tmp_path, params, write_metrics


def test_unedited_recipe_on_real_data_with_imagenet_weights_is_comparable(real_paper_tree):
    root, _, _ = real_paper_tree
    head = _page_head(root)
    assert "paper's training recipe" in head and "not comparable" not in head


def test_an_edited_paper_profile_is_not_comparable(real_paper_tree):
    root, params, _ = real_paper_tree
    params["train"]["profiles"]["paper"]["epochs"] = {"default": 5, "asen": 200, "asen_v2": 50}
    params["models"]["modc"]["embed_dim"]["paper"] = 512
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    head = _page_head(root)
    assert "Edited paper recipe" in head and "not comparable with the paper's numbers" in head
    assert '`train.profiles.paper.epochs`: `{"asen": 200, "asen_v2": 50, "default": 5}` (recipe: `{"default": 50,' in head
    assert "`models.modc.embed_dim`: `512` (recipe: `2048`)" in head
    assert "paper's training recipe (`train.profile: paper`); the paper's published" not in head


def test_a_run_without_imagenet_weights_is_not_comparable(real_paper_tree):
    root, _, write_metrics = real_paper_tree
    write_metrics("asenpp", {"global_trunk": True, "local_trunk": False})
    head = _page_head(root)
    assert "No ImageNet weights" in head and "not comparable with the paper's numbers" in head
    assert "ASEN++ (`local_trunk`)" in head and "M3-Net (" not in head


def test_a_paper_run_that_did_not_record_its_weights_is_not_comparable(real_paper_tree):
    root, _, write_metrics = real_paper_tree
    write_metrics("asen", None)  # metrics of a run from before the record existed
    head = _page_head(root)
    assert "ASEN (not recorded)" in head and "not comparable" in head


def test_banner_names_every_reason_at_once():
    lines = "\n".join(report.banner("twin", "paper", 3, trunk="end_to_end",
                                    recipe_edits=[("train.profiles.paper.image_size", 32, 224)],
                                    random_trunks={"m3net": ["trunk"]}))
    assert "Twin data" in lines and "fine-tunes its own backbone" in lines and "frozen trunk" not in lines
    assert "Edited paper recipe" in lines and "No ImageNet weights" in lines
    assert lines.count("not comparable") == 3
    # another profile's values are not the paper recipe's edits: its own banner says it
    lines = "\n".join(report.banner("local", "twin", 3, recipe_edits=[("train.profiles.paper.epochs", 5, 50)]))
    assert "`twin` training profile" in lines and "Edited paper recipe" not in lines


# --- where pretrained-ness is recorded ---------------------------------------------------------

def test_trunks_record_whether_imagenet_weights_loaded(tmp_path, monkeypatch):
    from model import build_model
    from model.backbone import build_trunk, imagenet_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # nothing in this torchvision cache
    with pytest.warns(UserWarning, match="starting from RANDOM weights"):
        trunk = build_trunk("resnet18_layer3", pretrained=True)
    assert trunk.imagenet_weights is False
    assert build_trunk("resnet18_layer3", pretrained=False).imagenet_weights is False
    assert build_trunk("plain8").imagenet_weights is False  # it has no ImageNet weights
    # weights in the cache (a stand-in file under the name torchvision looks for) are loaded
    import torchvision

    ckpt = tmp_path / "cached" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, ckpt / os.path.basename(url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "cached"))
    loaded = build_trunk("resnet18_layer3", pretrained=True)
    assert loaded.imagenet_weights is True
    assert torch.equal(loaded[0].weight, state["conv1.weight"])
    # a model collects its trunks: ASEN++ has two, a model on cached maps none
    torch.manual_seed(0)
    kw = dict(classes_per_attribute=[2, 3], embed_dim=8, inner_dim=4)
    m = build_model("asenpp", backbone="resnet18_layer3", pretrained=True, local_backbone="resnet18_layer3",
                    local_inner_dim=4, **kw)
    assert imagenet_weights(m) == {"global_trunk": True, "local_trunk": True}
    assert imagenet_weights(build_model("m3net", backbone="features:plain8", pretrained=False, **kw)) == {}


def test_the_record_travels_from_selection_to_metrics(tmp_path):
    """selection.json's imagenet_weights goes into the embeddings file and out of it unchanged;
    evaluate counts a trunk as pretrained only when it was in every seed."""
    from benchmark.inference import embeddings_checkpoint, save_embeddings
    from model.base import Embeddings

    emb = Embeddings(attribute=torch.zeros(2, 1, 4), probs=None, class_index=None, class_emb=None)
    sel = {"policy": "best_val", "epoch": 2, "epochs_run": 3, "max_epochs": 3,
           "imagenet_weights": {"global_trunk": True, "local_trunk": False}}
    save_embeddings(tmp_path / "a.npz", emb, np.arange(2), False, sel)
    assert embeddings_checkpoint(tmp_path / "a.npz")["imagenet_weights"] == sel["imagenet_weights"]
    save_embeddings(tmp_path / "b.npz", emb, np.arange(2), False, {k: v for k, v in sel.items() if k != "imagenet_weights"})
    assert "imagenet_weights" not in embeddings_checkpoint(tmp_path / "b.npz")  # not recorded: not invented


def test_train_records_the_weights_and_a_resumed_run_keeps_the_first_record(tiny_workdir, monkeypatch, capfd):
    """selection.json and every checkpoint hold how the trunks started; pretrained: true without
    weights says so loudly; a run resumed after ImageNet weights appeared in the cache still
    records how its first epoch started (random), not what a fresh build would load now."""
    import model.backbone as backbone
    from benchmark.train import checkpoint_path, read_selection
    from tests import tiny_training as tt

    params = tt.make_params(tiny_workdir, epochs=2, triplets=16, batch=8)
    params["train"]["profiles"]["tiny"]["pretrained"] = True
    (tiny_workdir / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr(backbone, "imagenet_weights", lambda m: {"trunk": False})  # the cache is empty
    tt.CRASH_AT[0] = 2 + 1  # killed in epoch 2 (2 steps an epoch)
    with pytest.raises(tt.SimulatedKill):
        tt.train_tiny()
    err = capfd.readouterr().err
    assert "[train] WARNING fashionai/tiny_test seed 0: pretrained: true, but trunk start(s) from RANDOM weights" in err
    ck = torch.load(checkpoint_path(tt.KEY, "tiny_test", 0), map_location="cpu", weights_only=False)
    assert ck["epoch"] == 1 and ck["build"]["imagenet_weights"] == {"trunk": False}
    tt.CRASH_AT[0] = None
    monkeypatch.setattr(backbone, "imagenet_weights", lambda m: {"trunk": True})  # weights arrived meanwhile
    assert tt.train_tiny() == 0
    assert "resuming" in capfd.readouterr().err
    assert read_selection(tt.KEY, "tiny_test", 0)["imagenet_weights"] == {"trunk": False}
