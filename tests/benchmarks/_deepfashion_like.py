"""Generated labels at the size of the full DeepFashion (289,222 images x 1,000 classes, ~3.5
positives per image, Zipf-like class popularity), or a small version for default test runs.
Full size only with FASHIONBENCH_FULL_BENCH=1, so CI stays fast."""

from __future__ import annotations

import os
import resource

import numpy as np
import polars as pl

FULL = os.environ.get("FASHIONBENCH_FULL_BENCH") == "1"
TYPES = [156, 218, 180, 216, 230]  # DeepFashion's classes per attribute type


def sizes():
    if FULL:
        return 289_222, TYPES
    return 4_000, [t // 10 for t in TYPES]


def generate(seed=0, dup_groups=None):
    n, types = sizes()
    rng = np.random.default_rng(seed)
    n_classes = sum(types)
    tax = pl.DataFrame(
        [(a, f"type{a + 1}", c, f"t{a + 1}_{c}", sum(types[:a]) + c) for a, m in enumerate(types) for c in range(m)],
        schema={"attribute_id": pl.Int16, "attribute": pl.Utf8, "class_id": pl.Int16, "class_name": pl.Utf8,
                "global_class_id": pl.Int32}, orient="row")
    p = 1.0 / np.arange(1, n_classes + 1) ** 0.9
    p = rng.permutation(p / p.sum())
    k = np.clip(rng.poisson(2.6, n) + 1, 1, 15)
    img = np.repeat(np.arange(n, dtype=np.int64), k)
    cls = rng.choice(n_classes, len(img), p=p)
    glob = pl.DataFrame({"image_id": img, "global_class_id": cls.astype(np.int32)}).unique()
    labels = glob.join(tax.select("global_class_id", "attribute_id", "class_id"), on="global_class_id").select(
        "image_id", "attribute_id", "class_id", pl.lit("positive").alias("state"))
    images = pl.DataFrame({"image_id": np.arange(n, dtype=np.int64)}).with_columns(
        pl.format("img/{}.jpg", "image_id").alias("path"), pl.lit(300, pl.Int32).alias("width"),
        pl.lit(300, pl.Int32).alias("height"), pl.lit(1000, pl.Int64).alias("bytes"), pl.lit("x").alias("sha256"))
    g = dup_groups if dup_groups is not None else max(2, n // 500)
    members = rng.choice(n, 2 * g, replace=False)
    dups = pl.DataFrame({"group_id": np.repeat(np.arange(g), 2), "kind": ["exact"] * (2 * g),
                         "image_id": members.astype(np.int64), "spans_partitions": [False] * (2 * g)})
    return images, labels, tax, dups


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
