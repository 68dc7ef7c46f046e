"""Splits at DeepFashion scale: FASHIONBENCH_FULL_BENCH=1 pytest tests/benchmarks/test_bench_splits.py
--benchmark-enable -s. Without the variable, a 4,000-image version runs once (a smoke test)."""

from __future__ import annotations

import time

import numpy as np

from datasets.splits import make_splits, split_report

from tests.benchmarks._deepfashion_like import FULL, generate, peak_rss_mb

RATIOS = (220, 28, 28)


def test_bench_splits_deepfashion_scale(benchmark):
    images, labels, tax, dups = generate()
    rss0 = peak_rss_mb()
    times = []

    def run():
        t = time.perf_counter()
        out, info = make_splits(images, labels, tax, ratios=RATIOS, seed=7, query_fraction=0.2, duplicates=dups)
        rep = split_report(out, labels, tax, info, RATIOS)
        times.append(time.perf_counter() - t)
        return out, rep

    out, rep = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(images=images.height, labels=labels.height, seconds=times[-1],
                                peak_rss_mb_before=rss0, peak_rss_mb_after=peak_rss_mb())
    print(f"\nsplits: {images.height} images, {labels.height} labels: {times[-1]:.1f} s, "
          f"peak RSS {rss0:.0f} MB before -> {peak_rss_mb():.0f} MB after; sizes {rep['sizes']}, "
          f"largest class-frequency gap {rep['class_frequency_gap']['max']:.4f}")
    assert out.height == images.height and out["image_id"].n_unique() == images.height
    r = np.array(RATIOS) / sum(RATIOS)
    assert max(abs(rep["sizes"][s] - r[i] * images.height) for i, s in enumerate(("train", "val", "test"))) < 3
    if FULL:
        assert times[-1] < 120, "the full DeepFashion must split in under two minutes"
