"""Co-occurrence at DeepFashion scale: FASHIONBENCH_FULL_BENCH=1 pytest
tests/benchmarks/test_bench_cooccurrence.py --benchmark-enable -s. Without the variable, a
4,000-image version runs once (a smoke test)."""

from __future__ import annotations

import time

from datasets.cooccurrence import cooccurrence, positives, summary

from tests.benchmarks._deepfashion_like import FULL, generate, peak_rss_mb


def test_bench_cooccurrence_deepfashion_scale(benchmark):
    images, labels, tax, _ = generate()
    rss0 = peak_rss_mb()
    times = []

    def run():
        t = time.perf_counter()
        pos = positives(labels, tax, images["image_id"])
        pairs, classes = cooccurrence(pos, images.height, tax["global_class_id"], 0.002)
        s = summary(pairs, classes, images.height, 0.002)
        times.append(time.perf_counter() - t)
        return pairs, s

    pairs, s = benchmark.pedantic(run, rounds=1, iterations=1)
    rss1 = peak_rss_mb()
    benchmark.extra_info.update(images=images.height, labels=labels.height, seconds=times[-1],
                                peak_rss_mb_before=rss0, peak_rss_mb_after=rss1)
    print(f"\ncooccurrence: {images.height} images, {labels.height} labels: {times[-1]:.1f} s, "
          f"peak RSS {rss0:.0f} MB before -> {rss1:.0f} MB after; {s['observed_pairs']} pairs, "
          f"{s['selected_pairs']} selected, rates up to {s['rate_range'][1]:.4f}")
    assert pairs.height == s["observed_pairs"] > 0
    if FULL:
        assert times[-1] < 60, "the full DeepFashion label volume must take under a minute"
        assert rss1 < 4096, "and a few GB at most"
