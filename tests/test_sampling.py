"""Triplet negatives (benchmark/sampling.py): ``image_uniform`` (ASEN's TripletGenerator) against
``class_uniform`` (ASEN++'s TripletSampler), by their frequencies on an imbalanced attribute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.sampling import build_triplet_index, sample_triplets

ROOT = Path(__file__).resolve().parent.parent
# chi-square's 0.999 quantile: df 3 -> 16.27, df 11 -> 31.26, df 1 -> 10.83 (tables); a fixed seed
# makes each statistic one deterministic number, the quantile says how far from the law it may lie
CHI2_999 = {1: 10.83, 3: 16.27, 11: 31.26}
COUNTS = [200, 20, 20, 20]  # one attribute, single-label, one frequent class
T = 40_000


def _single_label(counts):
    rows = np.repeat(np.arange(len(counts)), counts)
    pos = np.zeros((len(rows), len(counts)), dtype=bool)
    pos[np.arange(len(rows)), rows] = True
    return pos, np.ones((len(rows), 1), dtype=bool)


def _chi2(observed: np.ndarray, p: np.ndarray) -> float:
    expected = p * observed.sum()
    return float(((observed - expected) ** 2 / expected).sum())


def _negative_class(pos, t):
    return pos[t.negative].argmax(1)


def _expected_image_uniform(counts):
    """P(negative class c) when the positive class m is uniform and the negative uniform over the
    images of the other classes: sum over m != c of 1/K * n_c / (N - n_m)."""
    n, k = np.asarray(counts, float), len(counts)
    return np.array([sum(n[c] / (n.sum() - n[m]) for m in range(k) if m != c) / k for c in range(k)])


def test_class_uniform_draws_every_negative_class_equally_on_an_imbalanced_attribute():
    pos, ann = _single_label(COUNTS)
    t = sample_triplets(build_triplet_index(pos, ann, [4]), T, seed=0, epoch=0, negatives="class_uniform")
    neg = _negative_class(pos, t)
    assert not (neg == t.class_id).any()
    observed = np.bincount(neg, minlength=4)
    assert _chi2(observed, np.full(4, 0.25)) < CHI2_999[3]
    assert _chi2(observed, _expected_image_uniform(COUNTS)) > 100 * CHI2_999[3]  # not ASEN's law
    # ASEN++'s random.sample(classes, 2): every ordered (positive, negative) pair of distinct classes alike
    pairs = np.bincount(t.class_id * 4 + neg, minlength=16).reshape(4, 4)
    off = pairs[~np.eye(4, dtype=bool)]
    assert _chi2(off, np.full(12, 1 / 12)) < CHI2_999[11]
    # the image within the class is uniform too: the frequent class's 200 images alike
    big = t.negative[neg == 0]
    assert _chi2(np.bincount(big, minlength=200)[:200], np.full(200, 1 / 200)) < 300  # df 199: 0.999 quantile 268


def test_image_uniform_draws_negative_classes_in_proportion_to_their_images():
    pos, ann = _single_label(COUNTS)
    t = sample_triplets(build_triplet_index(pos, ann, [4]), T, seed=0, epoch=0, negatives="image_uniform")
    neg = _negative_class(pos, t)
    assert not (neg == t.class_id).any()
    observed = np.bincount(neg, minlength=4)
    expected = _expected_image_uniform(COUNTS)
    assert _chi2(observed, expected) < CHI2_999[3]
    assert _chi2(observed, np.full(4, 0.25)) > 100 * CHI2_999[3]
    # the default is ASEN's, and it draws exactly what the sampler drew before the parameter existed
    default = sample_triplets(build_triplet_index(pos, ann, [4]), T, seed=0, epoch=0)
    assert np.array_equal(default.negative, t.negative) and np.array_equal(default.anchor, t.anchor)


def test_class_uniform_on_multi_label_data_draws_only_valid_classes_uniformly():
    """Class 3's images all carry class 0 too: with positive class 0 it holds no negative, so the
    negative's class is uniform over classes 1 and 2 (the exact fallback); never an image with m."""
    counts = [60, 30, 30, 10]
    pos, ann = _single_label(counts)
    pos[np.flatnonzero(pos[:, 3]), 0] = True  # class 3 rows are multi-label {0, 3}
    index = build_triplet_index(pos, ann, [4])
    t = sample_triplets(index, T, seed=1, epoch=0, negatives="class_uniform")
    assert not pos[t.negative, t.class_id].any()  # a negative never has the positive class
    m0 = t.class_id == 0
    neg0 = pos[t.negative[m0]][:, 1:].argmax(1) + 1
    observed = np.bincount(neg0, minlength=4)[1:]
    assert observed[2] == 0  # class 3: no valid negative for class 0
    assert _chi2(observed[:2], np.array([0.5, 0.5])) < CHI2_999[1]
    # with positive class 3, class 0's images without class 3 are valid: classes 0, 1, 2 alike
    m3 = t.class_id == 3
    neg3 = np.where(pos[t.negative[m3], 0], 0, pos[t.negative[m3]][:, 1:3].argmax(1) + 1)
    assert _chi2(np.bincount(neg3, minlength=3), np.full(3, 1 / 3)) < CHI2_999[3]
    again = sample_triplets(index, T, seed=1, epoch=0, negatives="class_uniform")
    assert np.array_equal(again.negative, t.negative)  # deterministic in (seed, epoch)


def test_unknown_negatives_is_refused():
    pos, ann = _single_label(COUNTS)
    with pytest.raises(ValueError, match="negatives"):
        sample_triplets(build_triplet_index(pos, ann, [4]), 8, seed=0, epoch=0, negatives="uniform")


def test_each_model_keeps_its_references_negatives():
    """ASEN and ASEN_v2 (Maryeon/asen TripletGenerator): image_uniform; ASEN++ (Maryeon/asenpp
    TripletSampler): class_uniform; M3-Net and MODC (no public code): the default, image_uniform."""
    from benchmark.params import load_params, resolve_model_params

    params = load_params(ROOT / "params.yaml")
    got = {m: resolve_model_params(params, m, "darn").get("negatives", "image_uniform")
           for m in ("asen", "asen_v2", "asenpp", "m3net", "modc")}
    assert got == {"asen": "image_uniform", "asen_v2": "image_uniform", "asenpp": "class_uniform",
                   "m3net": "image_uniform", "modc": "image_uniform"}
