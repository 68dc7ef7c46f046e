"""benchmark.loaders and benchmark.sampling: label matrices, image decoding, triplets, the batch layout."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.loaders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolderTable,
    TripletDataset,
    batch_to_device,
    classes_per_attribute,
    image_loader,
    label_matrix,
    normalize,
    preprocess_image,
    resize_center_crop,
    resize_square,
    triplet_loader,
)
from benchmark.sampling import Triplets, build_triplet_index, sample_triplets

torch.set_num_threads(1)


def _taxonomy(cpa):
    return pl.DataFrame(
        [{"attribute_id": a, "attribute": f"a{a}", "class_id": c, "class_name": f"c{c}", "global_class_id": sum(cpa[:a]) + c}
         for a in range(len(cpa)) for c in range(cpa[a])],
        schema={"attribute_id": pl.Int16, "attribute": pl.Utf8, "class_id": pl.Int16, "class_name": pl.Utf8,
                "global_class_id": pl.Int32},
    )


def _labels(rows):
    return pl.DataFrame(rows, schema=["image_id", "attribute_id", "class_id", "state"], orient="row").with_columns(
        pl.col("image_id").cast(pl.Int64), pl.col("attribute_id").cast(pl.Int16), pl.col("class_id").cast(pl.Int16)
    )


# ------------------------------------------------------------------------------- label_matrix


def test_label_matrix_states_and_policies():
    tax = _taxonomy([3, 2])
    assert classes_per_attribute(tax) == [3, 2]
    lab = _labels([
        (10, 0, 1, "positive"), (10, 0, 2, "positive"),  # multi-label in attribute 0
        (11, 0, 0, "maybe"), (11, 0, 2, "positive"), (11, 1, 1, "positive"),
        (12, 1, 0, "unknown"),
        (99, 0, 0, "positive"),  # not asked for: ignored
    ])
    ids = [12, 10, 11, 13]  # order of rows = order of ids
    mh, ann = label_matrix(lab, tax, ids, "negative")
    assert mh.dtype == torch.bool and mh.shape == (4, 5) and ann.shape == (4, 2)
    assert mh.tolist() == [[0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 0, 1], [0, 0, 0, 0, 0]]
    assert ann.tolist() == [[0, 1], [1, 0], [1, 1], [0, 0]]
    mh, ann = label_matrix(lab, tax, ids, "positive")
    assert mh[2].tolist() == [1, 0, 1, 0, 1]
    mh, ann = label_matrix(lab, tax, ids, "drop")  # image 11 loses attribute 0 entirely
    assert mh[2].tolist() == [0, 0, 0, 0, 1] and ann[2].tolist() == [0, 1]
    mh, ann = label_matrix(lab, tax, ids, "negative", dense=True)
    assert ann.all() and mh[1].tolist() == [0, 1, 1, 0, 0]
    with pytest.raises(ValueError):
        label_matrix(lab, tax, ids, "sometimes")


# ------------------------------------------------------------------------------------ images


def test_image_table_decodes_rgb_resizes_and_normalises(tmp_path):
    import cv2

    rgb = np.zeros((30, 50, 3), np.uint8)
    rgb[..., 0] = 255  # pure red, written as BGR
    rgb[:, 25:, 1] = 255  # right half yellow: checks the flip
    cv2.imwrite(str(tmp_path / "a.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    cv2.imwrite(str(tmp_path / "b.jpg"), np.full((20, 20, 3), 128, np.uint8))
    images = pl.DataFrame({"image_id": [5, 7], "path": ["b.jpg", "a.jpg"]})
    table = ImageFolderTable(images, tmp_path, 16, image_ids=[7, 5])
    u, i = table[0]
    assert i == 7 and u.shape == (3, 16, 16) and u.dtype == torch.uint8
    x = normalize(u)
    assert x.dtype == torch.float32 and x.shape == (3, 16, 16)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    left = x[:, :, :4].mean(dim=(1, 2)) * std + mean  # back to [0, 1]: red
    right = x[:, :, -4:].mean(dim=(1, 2)) * std + mean  # yellow
    assert left.tolist() == pytest.approx([1.0, 0.0, 0.0], abs=0.05)
    assert right.tolist() == pytest.approx([1.0, 1.0, 0.0], abs=0.05)
    assert torch.equal(table.load(0, flip=True), u.flip(-1))
    grey = normalize(table[1][0]) * std.view(3, 1, 1) + mean.view(3, 1, 1)
    assert grey.mean().item() == pytest.approx(128 / 255, abs=0.02)
    with pytest.raises(TypeError, match="uint8"):
        normalize(x)
    batch, ids = next(iter(image_loader(table, batch_size=2)))
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == torch.uint8 and ids.tolist() == [7, 5]
    with pytest.raises(KeyError):
        ImageFolderTable(images, tmp_path, 16, image_ids=[1])
    table_bad = ImageFolderTable(pl.DataFrame({"image_id": [1], "path": ["missing.jpg"]}), tmp_path, 16)
    with pytest.raises(OSError, match="missing.jpg"):
        table_bad[0]


def test_normalize_is_the_per_pixel_imagenet_formula():
    """The vectorised normalisation against the obvious per-pixel loop, and the same on every layout."""
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8, generator=g)
    x = normalize(u)
    for b in range(2):
        for c in range(3):
            for h in range(4):
                for w in range(5):
                    want = (u[b, c, h, w].item() / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
                    assert x[b, c, h, w].item() == pytest.approx(want, abs=1e-6)
    cl = normalize(u.contiguous(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, x)


def test_resize_is_antialiased_bilinear_and_keeps_flat_colour():
    """torchvision's antialiased bilinear on uint8, equal on a flat image and close to an area average."""
    import cv2

    flat = np.full((300, 300, 3), (12, 130, 250), np.uint8)
    assert (resize_square(flat, 224) == np.array([12, 130, 250], np.uint8)).all()
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8), (9, 9), 3)
    out = resize_square(img, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    area = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(int) - area.astype(int)).mean() < 1.0
    assert resize_square(out, 224) is out  # already the size: untouched
    up = resize_square(img[:20, :20], 64)  # enlarging works too
    assert up.shape == (64, 64, 3)


@pytest.mark.parametrize("h,w", [(40, 80), (90, 30), (37, 51)])
def test_resize_crop_is_the_references_resize_then_centre_crop(h, w):
    """preprocess resize_crop = torchvision Resize(S) (short side) + CenterCrop(S) on the PIL image,
    the ASEN / ASEN++ pipeline: the long side's borders are cut, not squashed in."""
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(h * w)
    import cv2

    img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (5, 5), 2)
    img[:, : w // 8] = (255, 0, 0)  # red borders on the long side (when it is the width)
    img[:, w - w // 8:] = (255, 0, 0)
    out = resize_center_crop(img, 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    ref = np.asarray(transforms.Compose([transforms.Resize(20), transforms.CenterCrop(20)])(Image.fromarray(img)))
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 3.0
    if w >= 2 * h:  # a wide image: the centre crop holds none of the red borders; squashing keeps them
        assert resize_square(img, 20)[:, 0, 0].min() > 200 and resize_square(img, 20)[:, 0, 1].max() < 60
        assert out[:, 0, 1].mean() > 60
    square = img[: min(h, w), : min(h, w)]
    assert np.array_equal(preprocess_image(square, 20, "resize_crop"), resize_square(square, 20))  # twins: no change
    with pytest.raises(ValueError, match="squash"):
        preprocess_image(img, 20, "stretch")


def test_image_table_resize_crop_option(tmp_path):
    import cv2

    rgb = np.zeros((20, 60, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # red | green | blue thirds
    rgb[:, 20:40] = (0, 255, 0)
    rgb[:, 40:] = (0, 0, 255)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    images = pl.DataFrame({"image_id": [1], "path": ["a.png"]})
    crop = ImageFolderTable(images, tmp_path, 10, preprocess="resize_crop")[0][0]
    squash = ImageFolderTable(images, tmp_path, 10)[0][0]
    assert crop.shape == squash.shape == (3, 10, 10)
    assert (crop[1] > 200).all() and (crop[0] < 60).all()  # only the green centre third survives
    assert squash[0, :, 0].min() > 200 and squash[2, :, -1].min() > 200  # squashed: all three thirds
    with pytest.raises(ValueError, match="resize_crop"):
        ImageFolderTable(images, tmp_path, 10, preprocess="crop")


def test_loaders_import_without_polars_and_decode_one_file(tmp_path):
    """The GPU perf run imports benchmark.loaders on a machine without polars, and gives the image
    table a plain dict."""
    import subprocess
    import sys

    import cv2

    code = "import sys, benchmark.loaders; assert 'polars' not in sys.modules, 'polars imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :15, 2] = 255  # left half blue
    cv2.imwrite(str(tmp_path / "x.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    table = ImageFolderTable({"image_id": [3], "path": ["x.jpg"]}, tmp_path, 8)
    plain = table.load(0)
    assert plain.shape == (3, 8, 8) and plain[2, :, 0].float().mean() > plain[2, :, -1].float().mean()
    assert torch.equal(table.load(0, flip=True), plain.flip(-1))


# ---------------------------------------------------------------------------------- sampling


def _random_labels(draw_rng, n, cpa, density):
    pos = draw_rng.random((n, sum(cpa))) < density
    ann = draw_rng.random((n, len(cpa))) < 0.8
    return pos, ann


def _check_triplets(t: Triplets, pos, ann, cpa):
    offsets = np.concatenate([[0], np.cumsum(cpa)[:-1]])
    attr_of_class = np.repeat(np.arange(len(cpa)), cpa)
    eff = pos & ann[:, attr_of_class]  # labels count only in annotated attributes
    g = offsets[t.attribute] + t.class_id
    assert (t.class_id < np.asarray(cpa)[t.attribute]).all()
    assert (t.anchor != t.positive).all()
    assert eff[t.anchor, g].all() and eff[t.positive, g].all()
    assert not eff[t.negative, g].any()
    # the negative has a positive label in the same attribute
    for k in range(len(t)):
        n = t.attribute[k]
        assert eff[t.negative[k], offsets[n]: offsets[n] + cpa[n]].any()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40),
    cpa=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    density=st.floats(0.05, 0.9),
    seed=st.integers(0, 2**31 - 1),
)
def test_sampling_properties_on_random_tables(n, cpa, density, seed):
    pos, ann = _random_labels(np.random.default_rng(seed), n, cpa, density)
    index = build_triplet_index(pos, ann, cpa)
    if len(index.usable_attributes) == 0:
        with pytest.raises(ValueError, match="no usable"):
            sample_triplets(index, 10, seed=0, epoch=0)
        return
    t = sample_triplets(index, 200, seed=seed, epoch=1)
    _check_triplets(t, pos, ann, cpa)
    # every usable (attribute, class) -- and only those -- can be drawn
    offsets = np.concatenate([[0], np.cumsum(cpa)[:-1]])
    drawn = set((offsets[t.attribute] + t.class_id).tolist())
    assert drawn <= set(index.usable_classes.tolist())


def test_sampling_is_deterministic_per_seed_and_epoch_and_uniform_over_attributes():
    rng = np.random.default_rng(0)
    cpa = [4, 2, 6]
    pos, ann = _random_labels(rng, 300, cpa, 0.3)
    index = build_triplet_index(pos, ann, cpa)
    a = sample_triplets(index, 3000, seed=5, epoch=2)
    b = sample_triplets(index, 3000, seed=5, epoch=2)
    c = sample_triplets(index, 3000, seed=5, epoch=3)
    d = sample_triplets(index, 3000, seed=6, epoch=2)
    for f in ("anchor", "positive", "negative", "attribute", "class_id", "flip"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.anchor, c.anchor) and not np.array_equal(a.anchor, d.anchor)
    counts = np.bincount(a.attribute, minlength=3)
    assert (np.abs(counts - 1000) < 120).all(), counts  # uniform over attributes, not over images
    # uniform over the classes of an attribute
    cls0 = np.bincount(a.class_id[a.attribute == 2], minlength=6)
    assert (np.abs(cls0 - cls0.mean()) < 0.35 * cls0.mean()).all(), cls0
    assert 0.4 < a.flip.mean() < 0.6


def test_sampling_excludes_unusable_classes_and_handles_dominant_classes():
    cpa = [3, 2]
    pos = np.zeros((50, 5), bool)
    pos[:, 0] = True  # class 0 of attribute 0 on every image: no negative exists -> unusable
    pos[:3, 1] = True  # class 1: 3 images
    pos[3, 2] = True  # class 2: a single image -> unusable (needs anchor != positive)
    pos[:49, 3] = True  # attribute 1, class 0 on 49 of 50 images: negatives are rare
    pos[49, 4] = True
    ann = np.ones((50, 2), bool)
    index = build_triplet_index(pos, ann, cpa)
    assert index.usable_classes.tolist() == [1, 3]
    t = sample_triplets(index, 2000, seed=0, epoch=0)
    _check_triplets(t, pos, ann, cpa)
    assert (t.negative[t.attribute == 1] == 49).all()


def test_sampling_40k_triplets_is_fast():
    rng = np.random.default_rng(1)
    cpa = [156, 218, 180, 216, 230]  # DeepFashion's taxonomy, 20K images, ~3.5 labels each
    n = 20_000
    pos = np.zeros((n, 1000), bool)
    pos[np.repeat(np.arange(n), 4), rng.integers(0, 1000, 4 * n)] = True
    index = build_triplet_index(pos, np.ones((n, 5), bool), cpa)
    t0 = time.perf_counter()
    t = sample_triplets(index, 40_000, seed=0, epoch=0)
    dt = time.perf_counter() - t0
    assert len(t) == 40_000
    assert dt < 0.5, f"{dt:.3f}s"


# ------------------------------------------------------------------------------------- batch


@pytest.fixture
def synthetic(tmp_path):
    from tests.tiny_training import make_dataset

    info = make_dataset(tmp_path, n=30)
    from datasets import paths

    root = tmp_path
    images = pl.read_parquet(root / paths.validated_dir("fashionai") / "images.parquet")
    labels = pl.read_parquet(root / paths.validated_dir("fashionai") / "labels.parquet")
    tax = pl.read_parquet(root / paths.validated_dir("fashionai") / "taxonomy.parquet")
    ids = np.arange(0, 30, 2)  # any subset, in any order
    table = ImageFolderTable(images, root / paths.raw_dir("fashionai"), 16, image_ids=ids)
    targets, ann = label_matrix(labels, tax, ids)
    return info, table, targets, ann, [3, 2]


def test_collate_matches_the_model_batch_layout(synthetic):
    info, table, targets, ann, cpa = synthetic
    index = build_triplet_index(targets.numpy(), ann.numpy(), cpa)
    tr = sample_triplets(index, 12, seed=0, epoch=0)
    ds = TripletDataset(table, targets, ann, tr)
    batch = next(iter(triplet_loader(ds, batch_size=5)))
    b = 5
    assert set(batch) == {"images", "attribute", "class_id", "targets", "target_mask", "index"}
    assert batch["images"].shape == (3 * b, 3, 16, 16) and batch["images"].dtype == torch.uint8
    assert batch["attribute"].shape == (b,) and batch["attribute"].dtype == torch.long
    assert batch["class_id"].dtype == torch.long
    assert batch["targets"].shape == (3 * b, 5) and batch["targets"].dtype == torch.float32
    assert batch["target_mask"].shape == (3 * b, 2) and batch["target_mask"].dtype == torch.bool
    assert batch["index"].shape == (3 * b,)
    for k in range(b):
        for slot, rows in enumerate((tr.anchor, tr.positive, tr.negative)):
            r = int(rows[k])
            assert batch["index"][slot * b + k] == table.image_ids[r]
            assert torch.equal(batch["images"][slot * b + k], table.load(r, flip=bool(tr.flip[k, slot])))
            assert torch.equal(batch["targets"][slot * b + k], targets[r].float())
            assert torch.equal(batch["target_mask"][slot * b + k], ann[r])
    assert batch["attribute"].tolist() == tr.attribute[:b].tolist()
    g = torch.tensor([0, 3])[batch["attribute"]] + batch["class_id"]
    t = batch["targets"]
    assert (t[torch.arange(b), g] == 1).all() and (t[b + torch.arange(b), g] == 1).all()
    assert (t[2 * b + torch.arange(b), g] == 0).all()
    # the class encoded in the image colour (red channel <-> attribute 0's class) matches the labels
    ids = batch["index"][:b][batch["attribute"] == 0]
    assert (torch.tensor(info["c0"])[ids] == batch["class_id"][batch["attribute"] == 0]).all()
    # on the device: the same batch, images normalised there, channels_last when asked
    dev = batch_to_device(batch, torch.device("cpu"), channels_last=True)
    assert dev["images"].dtype == torch.float32 and dev["images"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(dev["images"], normalize(batch["images"]))
    assert all(torch.equal(dev[k], batch[k]) for k in batch if k != "images")


def test_distributed_loader_splits_the_epoch(synthetic):
    _, table, targets, ann, cpa = synthetic
    index = build_triplet_index(targets.numpy(), ann.numpy(), cpa)
    ds = TripletDataset(table, targets, ann, sample_triplets(index, 16, seed=0, epoch=0))
    seen = []
    for rank in (0, 1):
        batches = list(triplet_loader(ds, batch_size=4, rank=rank, world_size=2))
        assert len(batches) == 2
        seen.append(torch.cat([bt["index"][:4] for bt in batches]))
    anchors = table.image_ids[ds.triplets.anchor]
    assert sorted(torch.cat(seen).tolist()) == sorted(anchors.tolist())


@settings(max_examples=60, deadline=None)
@given(st.integers(8, 90), st.integers(8, 90), st.integers(4, 80), st.integers(0, 2**31 - 1))
def test_resizes_equal_torchvisions_pixel_for_pixel(h, w, size, seed):
    """resize_square / resize_center_crop compute torchvision's Resize(antialias=True) (and
    CenterCrop) without importing it: the same pixels, enlarging or shrinking, any aspect."""
    from torchvision.transforms.v2.functional import center_crop, resize

    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    chw = torch.from_numpy(img).permute(2, 0, 1)
    want_square = resize(chw, [size, size], antialias=True).permute(1, 2, 0).numpy()
    assert np.array_equal(resize_square(img, size), want_square)
    want_crop = center_crop(resize(chw, [size], antialias=True), [size, size]).permute(1, 2, 0).numpy()
    assert np.array_equal(resize_center_crop(img, size), want_crop)
