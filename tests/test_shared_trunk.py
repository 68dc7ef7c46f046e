"""The twin profile's shared trunk: pretrain and features stages, the cached-map loaders, models
built on ``features:<backbone>``, and training on the cached maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tiny_training import KEY, make_dataset

torch.set_num_threads(1)


def _params(tmp_path, trunk="shared", epochs=1):
    from tests.tiny_training import make_params

    params = make_params(tmp_path, model="asen", epochs=epochs, triplets=24, batch=6,
                         inner_dim=8, lr_decay=0.9)
    prof = params["train"]["profiles"]["tiny"]
    prof.update(backbone="resnet18_layer3", image_size=32, trunk=trunk, preprocess="squash", checkpoint="last",
                pretrain={"epochs": 1, "batch_size": 16, "lr": 1e-3, "seed": 3})
    params["models"]["asen"]["embed_dim"] = 8
    del params["models"]["asen"]["w_p"]  # ASEN has no class-level BCE: the schema refuses the key
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return params


@pytest.fixture
def shared_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path, n=40, size=(32, 32))
    return tmp_path, _params(tmp_path)


def test_features_backbone_is_identity_with_the_trunks_channels():
    from model.backbone import build_trunk, is_features, trunk_channels

    assert isinstance(build_trunk("features:resnet18_layer3"), torch.nn.Identity)
    assert trunk_channels("features:resnet50_layer3") == 1024 and is_features("features:resnet18_layer3")
    assert not is_features("resnet18_layer3")
    with pytest.raises(KeyError, match="features:<name>"):
        trunk_channels("features:vgg16")


def test_feature_table_serves_rows_by_id_and_mirrors_width():
    from benchmark.loaders import FeatureTable, network_input

    feats = np.arange(3 * 2 * 2 * 3, dtype=np.float16).reshape(3, 2, 2, 3)
    t = FeatureTable(feats, [10, 20, 30], image_ids=[30, 10])
    assert t.image_ids.tolist() == [30, 10]
    assert torch.equal(t.load(0), torch.from_numpy(feats[2].astype(np.float32)))
    assert torch.equal(t.load(1, flip=True), torch.from_numpy(feats[0, :, :, ::-1].astype(np.float32)))
    x, i = t[1]
    assert i == 10 and x.dtype == torch.float32
    with pytest.raises(KeyError, match="no cached features"):
        FeatureTable(feats, [10, 20, 30], image_ids=[99])

    # the network's input: uint8 pictures are normalised, maps pass as they are
    f = torch.randn(2, 4, 3, 3)
    assert network_input(f) is f or torch.equal(network_input(f), f)
    u = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert network_input(u).dtype == torch.float32 and float(network_input(u).max()) > 2


def test_feature_table_serves_the_same_values_preloaded_and_mapped(tmp_path, monkeypatch):
    """The served rows held in memory (the twin's tables) and read per item from the memory-mapped
    file (a table over PRELOAD_BYTES) give the same tensors, mirrored or not."""
    from benchmark.loaders import FeatureTable

    rng = np.random.default_rng(0)
    np.save(tmp_path / "f.npy", rng.normal(size=(6, 3, 2, 4)).astype(np.float16))
    feats = np.load(tmp_path / "f.npy", mmap_mode="r")
    ids, served = [5, 6, 7, 8, 9, 10], [9, 5, 7]
    loaded = FeatureTable(feats, ids, image_ids=served)
    monkeypatch.setattr(FeatureTable, "PRELOAD_BYTES", 0)
    mapped = FeatureTable(feats, ids, image_ids=served)
    assert loaded._served is not None and mapped._served is None
    for i in range(3):
        for flip in (False, True):
            a, b = loaded.load(i, flip=flip), mapped.load(i, flip=flip)
            assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)
    a = loaded.load(0)
    a += 1  # an item is a copy: the table's rows are not changed through it
    assert torch.equal(loaded.load(0), mapped.load(0))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 12), cpa=st.lists(st.integers(1, 4), min_size=1, max_size=3))
def test_masked_bce_equals_a_loop_over_annotated_cells(seed, n, cpa):
    from benchmark.pretrain import class_mask, masked_bce

    g = torch.Generator().manual_seed(seed)
    c = sum(cpa)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    targets = (torch.rand(n, c, generator=g) < 0.3).double()
    annotated = torch.rand(n, len(cpa), generator=g) < 0.6
    mask = class_mask(annotated, cpa).double()
    total, cells = 0.0, 0
    for i in range(n):
        start = 0
        for a, m in enumerate(cpa):
            for k in range(start, start + m):
                if annotated[i, a]:
                    p = 1 / (1 + np.exp(-float(logits[i, k])))
                    y = float(targets[i, k])
                    total += -(y * np.log(p) + (1 - y) * np.log(1 - p))
                    cells += 1
            start += m
    want = total / max(cells, 1)
    assert float(masked_bce(logits, targets, mask)) == pytest.approx(want, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 15))
def test_pretrain_mean_ap_equals_the_definition(seed, n):
    from benchmark.pretrain import mean_ap

    rng = np.random.default_rng(seed)
    scores = rng.permutation(n * 3).reshape(n, 3).astype(np.float32)  # no ties
    targets = rng.random((n, 3)) < 0.4
    mask = rng.random((n, 3)) < 0.8
    aps = []
    for c in range(3):
        idx = [i for i in range(n) if mask[i, c]]
        pos = [i for i in idx if targets[i, c]]
        if not pos:
            continue
        ranked = sorted(idx, key=lambda i: -scores[i, c])
        precisions = [sum(targets[j, c] for j in ranked[:r + 1]) / (r + 1) for r, i in enumerate(ranked) if targets[i, c]]
        aps.append(np.mean(precisions))
    want = 100 * np.mean(aps) if aps else float("nan")
    got = mean_ap(scores, targets, mask)
    assert (np.isnan(want) and np.isnan(got)) or got == pytest.approx(want, rel=1e-9)


def test_pretrain_and_features_stages_write_the_trunk_and_every_split_images_map(shared_workdir):
    from benchmark import features, pretrain
    from benchmark.shared_trunk import load_features, load_trunk

    import yaml

    work, params = shared_workdir
    params["train"]["seeds"] = [0, 4]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert pretrain.main([KEY]) == 0
    recs = [torch.load(work / "data" / KEY / "trunk" / f"seed{s}.pt", weights_only=True) for s in (0, 4)]
    assert all(r["backbone"] == "resnet18_layer3" and r["image_size"] == 32 for r in recs)
    assert [r["seed"] for r in recs] == [0, 4]
    # one trunk per seed: its own initialisation and data order
    assert not torch.equal(recs[0]["state_dict"]["0.weight"], recs[1]["state_dict"]["0.weight"])
    report = json.loads((work / "reports" / KEY / "pretrain.json").read_text())
    assert report["images"] == 28 and set(report["seeds"]) == {"0", "4"}
    ep = report["seeds"]["0"]["epochs"]
    assert len(ep) == 1 and np.isfinite(ep[0]["loss"]) and np.isfinite(ep[0]["val_map"])  # the val curve
    curve = (work / "reports" / KEY / "pretrain_curve.csv").read_text().splitlines()
    assert curve[0].split(",")[:3] == ["seed", "epoch", "loss"] and len(curve) == 3
    assert features.main([KEY]) == 0
    maps, ids = load_features(KEY, 0)
    assert maps.dtype == np.float16 and maps.shape == (40, 256, 2, 2) and ids.tolist() == list(range(40))
    assert not np.array_equal(maps, load_features(KEY, 4)[0])
    # the cached map is the seed's trunk's output on the decoded, normalised picture
    from benchmark.inference import ImageSource
    from datasets.schemas import ImagesSchema, read_table

    images = read_table(work / "data" / KEY / "validated" / "images.parquet", ImagesSchema)
    src = ImageSource(work / "data" / KEY / "raw", images, 32, preprocess="squash")
    for s in (0, 4):
        trunk, _ = load_trunk(KEY, s)
        with torch.no_grad():
            want = trunk(src.tensor([5, 17])).numpy()
        np.testing.assert_allclose(load_features(KEY, s)[0][[5, 17]].astype(np.float32), want, rtol=2e-2, atol=2e-2)
    # the same inputs give the same bytes (DVC skips what follows)
    before = (work / "data" / KEY / "features" / "seed4" / "features.npy").read_bytes()
    assert features.main([KEY]) == 0
    assert (work / "data" / KEY / "features" / "seed4" / "features.npy").read_bytes() == before
    first = (work / "data" / KEY / "trunk" / "seed4.pt").read_bytes()
    assert pretrain.main([KEY]) == 0
    assert (work / "data" / KEY / "trunk" / "seed4.pt").read_bytes() == first
    # a seed no longer run leaves no trunk or maps behind
    params["train"]["seeds"] = [4]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert pretrain.main([KEY]) == 0 and features.main([KEY]) == 0
    assert sorted(p.name for p in (work / "data" / KEY / "trunk").iterdir()) == ["seed4.pt"]
    assert sorted(p.name for p in (work / "data" / KEY / "features").iterdir()) == ["seed4"]


def test_end_to_end_profile_leaves_a_note_instead(tmp_path, monkeypatch):
    from benchmark import features, pretrain

    monkeypatch.chdir(tmp_path)
    make_dataset(tmp_path, n=20, size=(32, 32))
    _params(tmp_path, trunk="end_to_end")
    assert pretrain.main([KEY]) == 0 and features.main([KEY]) == 0
    for d in ("trunk", "features"):
        files = sorted(p.name for p in (tmp_path / "data" / KEY / d).iterdir())
        assert files == ["unused.json"]
        assert json.loads((tmp_path / "data" / KEY / d / "unused.json").read_text())["trunk"] == "end_to_end"
    # the pretrain stage's DVC metrics and plot exist under any profile (`dvc repro` fails on a missing out)
    rep = json.loads((tmp_path / "reports" / KEY / "pretrain.json").read_text())
    assert rep["trunk"] == "end_to_end" and rep["seeds"] == {}
    assert (tmp_path / "reports" / KEY / "pretrain_curve.csv").read_text().splitlines() == [
        "seed,epoch,loss,train_map,val_map"]


def test_bad_trunk_mode_is_refused():
    from benchmark.shared_trunk import trunk_mode

    with pytest.raises(ValueError, match="trunk must be one of"):
        trunk_mode({"trunk": "frozen"})


def test_models_train_and_embed_on_cached_maps(shared_workdir):
    """The train stage on a shared trunk: ASEN's and ASEN++'s heads learn from the cached maps
    (their checkpoints hold no trunk), and the embed path reads the same maps."""
    from benchmark import features, pretrain, train
    from benchmark.checkpoint import load_trained_model
    from benchmark.inference import ImageSource, extract_embeddings
    from benchmark.shared_trunk import load_features
    from datasets.schemas import ImagesSchema, read_table

    work, params = shared_workdir
    assert pretrain.main([KEY]) == 0 and features.main([KEY]) == 0
    assert train.main([KEY, "asen"]) == 0
    model, _ = load_trained_model(work / "models" / KEY / "asen" / "seed0" / "checkpoint.pt")
    assert isinstance(model.trunk, torch.nn.Identity)
    assert not any(k.startswith("trunk.") for k in model.state_dict())
    images = read_table(work / "data" / KEY / "validated" / "images.parquet", ImagesSchema)
    src = ImageSource(work / "data" / KEY / "raw", images, 32, features=load_features(KEY, 0))
    emb = extract_embeddings(model.eval(), src, np.arange(30, 40), gamma=0.8, max_classes=4, batch_size=4, device="cpu")
    assert emb.attribute.shape == (10, 2, 8)
    assert torch.allclose(emb.attribute.norm(dim=-1), torch.ones(10, 2), atol=1e-5)


def test_asenpp_crops_the_cached_map_with_the_pixel_crops_geometry():
    from model import build_model

    m = build_model("asenpp", classes_per_attribute=[3, 2], backbone="features:resnet18_layer3", embed_dim=8,
                    inner_dim=8, local_inner_dim=8)
    assert isinstance(m.local_trunk, torch.nn.Identity)
    x = torch.randn(2, 256, 7, 7)
    _, attn = m.global_branch(x, torch.zeros(2, 1, dtype=torch.long))
    crops = m.crop(x, attn)
    assert crops.shape == (2, 256, 4, 4)  # round(0.5 * 7): a 56 px crop's layer3 map
    m.set_phase("joint")
    batch = {"images": torch.randn(6, 256, 7, 7), "attribute": torch.tensor([0, 1]), "class_id": torch.tensor([0, 1])}
    out = m(batch)
    assert torch.isfinite(out["loss"]) and "loss_local" in out
    assert m.embed(x).attribute.shape == (2, 2, 16)


def test_attribute_blind_control_is_the_pooled_map_for_every_attribute():
    from model import build_model

    m = build_model("attribute_blind", classes_per_attribute=[3, 2, 4], backbone="features:plain8", pretrained=False)
    assert not list(m.parameters())  # no head, nothing to train
    x = torch.randn(5, 128, 8, 8)
    emb = m.embed(x)
    want = torch.nn.functional.normalize(x.mean(dim=(2, 3)), dim=-1)
    assert emb.attribute.shape == (5, 3, 128)
    for n in range(3):  # one vector whatever the attribute asked
        assert torch.allclose(emb.attribute[:, n], want, atol=1e-6)
    with pytest.raises(RuntimeError, match="never trained"):
        m({"images": x})


def test_plain8_maps_are_eight_by_eight_at_64_px():
    from model.backbone import build_trunk, trunk_channels

    trunk = build_trunk("plain8", pretrained=False)
    assert trunk(torch.zeros(2, 3, 64, 64)).shape == (2, trunk_channels("plain8"), 8, 8)
