"""Stage `cooccurrence`: how often two classes are positive on the same image (paper section 4.3.1).

For every unordered pair of classes (global ids, ``class_a < class_b``) seen together on at least
one image: ``images`` carrying both, and ``rate = images / N`` where N is the number of validated
images (images without a positive label count in N). Per class: images and rate. A pair is
*selected* when its rate is at least ``cooccurrence.min_rate`` (the paper: 0.002, 468 pairs and
122 classes on DeepFashion); a class is selected when it is in a selected pair. Pairs never seen
together are not stored (their rate is 0).

All of it is one polars self-join of the (image, class) positives on the image, so the cost is the
number of co-occurring (image, pair) rows: ~3M for the full DeepFashion (3.5 labels per image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

from datasets import DATASETS, paths
from datasets.atomic import atomic_path
from datasets.schemas import (
    CooccurrenceClassesSchema,
    CooccurrencePairsSchema,
    ImagesSchema,
    LabelsSchema,
    TaxonomySchema,
    read_table,
    write_table,
    write_json,
)


def positives(labels: pl.DataFrame, taxonomy: pl.DataFrame, image_ids=None) -> pl.DataFrame:
    """Unique (image_id, global_class_id) of the positive labels (of the given images, if any)."""
    lf = labels.lazy().filter(pl.col("state") == "positive")
    if image_ids is not None:
        lf = lf.join(pl.DataFrame({"image_id": image_ids}, schema={"image_id": pl.Int64}).lazy(),
                     on="image_id", how="semi")
    return (
        lf.join(taxonomy.lazy().select("attribute_id", "class_id", "global_class_id"),
                on=["attribute_id", "class_id"], how="inner")
        .select("image_id", pl.col("global_class_id").cast(pl.Int32))
        .unique()
        .collect()
    )


def cooccurrence(
    pos: pl.DataFrame, n_images: int, class_ids, min_rate: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pairs and classes tables from unique (image_id, global_class_id) positives.

    ``class_ids``: every class of the taxonomy (classes never positive get a row with 0 images).
    """
    if n_images <= 0:
        raise ValueError("co-occurrence rates need at least one image")
    p = pos.lazy().select(pl.col("image_id").cast(pl.Int64), pl.col("global_class_id").cast(pl.Int32)).unique()
    a = p.rename({"global_class_id": "class_a"})
    b = p.rename({"global_class_id": "class_b"})
    pairs = (
        a.join(b, on="image_id", how="inner")
        .filter(pl.col("class_a") < pl.col("class_b"))
        .group_by("class_a", "class_b")
        .agg(pl.len().cast(pl.Int64).alias("images"))
        .with_columns((pl.col("images") / n_images).alias("rate"))
        .with_columns((pl.col("rate") >= min_rate).alias("selected"))
        .sort("class_a", "class_b")
        .collect()
    )
    counts = p.group_by("global_class_id").agg(pl.len().cast(pl.Int64).alias("images")).collect()
    sel = pairs.filter("selected")
    sel_ids = pl.concat([sel["class_a"], sel["class_b"]]).unique()
    classes = (
        pl.DataFrame({"global_class_id": np.asarray(class_ids)}, schema={"global_class_id": pl.Int32})
        .join(counts, on="global_class_id", how="left")
        .with_columns(pl.col("images").fill_null(0))
        .with_columns(
            (pl.col("images") / n_images).alias("rate"),
            pl.col("global_class_id").is_in(sel_ids.implode()).alias("selected"),
        )
        .sort("global_class_id")
    )
    return pairs, classes


def summary(pairs: pl.DataFrame, classes: pl.DataFrame, n_images: int, min_rate: float) -> dict:
    n_classes = classes.height
    sel = pairs.filter("selected")
    top = pairs.sort("images", descending=True).head(1)
    return {
        "images": int(n_images),
        "classes": int(n_classes),
        "possible_pairs": n_classes * (n_classes - 1) // 2,
        "observed_pairs": pairs.height,
        "min_rate": float(min_rate),
        "min_images": int(np.ceil(min_rate * n_images - 1e-9)),
        "rate_range": [0.0 if pairs.height < n_classes * (n_classes - 1) // 2 else float(pairs["rate"].min()),
                       float(pairs["rate"].max()) if pairs.height else 0.0],
        "observed_rate_range": [float(pairs["rate"].min()), float(pairs["rate"].max())] if pairs.height else None,
        "top_pair": top.select("class_a", "class_b", "images", "rate").to_dicts()[0] if pairs.height else None,
        "selected_pairs": sel.height,
        "selected_classes": int(classes["selected"].sum()),
        "class_rate_range": [float(classes["rate"].min()), float(classes["rate"].max())] if n_classes else None,
    }


def heatmap(pairs: pl.DataFrame, classes: pl.DataFrame, taxonomy: pl.DataFrame, k: int, path, title: str) -> None:
    """Pair rates among the k classes with most images (diagonal: the class's own rate, hatched out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = classes.filter(pl.col("images") > 0).sort(["images", "global_class_id"], descending=[True, False]).head(k)
    ids = top["global_class_id"].to_list()
    index = {c: i for i, c in enumerate(ids)}
    m = np.zeros((len(ids), len(ids)))
    sub = pairs.filter(pl.col("class_a").is_in(ids) & pl.col("class_b").is_in(ids))
    for a, b, r in sub.select("class_a", "class_b", "rate").iter_rows():
        m[index[a], index[b]] = m[index[b], index[a]] = r
    np.fill_diagonal(m, np.nan)
    names = dict(taxonomy.select("global_class_id", "class_name").iter_rows())
    n = max(len(ids), 1)
    fig, ax = plt.subplots(figsize=(4 + 0.22 * n, 3.5 + 0.22 * n))
    im = ax.imshow(m, cmap="viridis", interpolation="nearest")
    labels = [f"{names.get(c, c)} ({c})" for c in ids]
    ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(ids)), labels, fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="co-occurrence rate (images with both / all images)")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix[1:])
    plt.close(fig)


def run(key: str, params: dict) -> dict:
    p = params["cooccurrence"]
    min_rate, k = float(p["min_rate"]), int(p["heatmap_classes"])
    vdir = paths.validated_dir(key)
    images = read_table(vdir / "images.parquet", ImagesSchema)
    labels = read_table(vdir / "labels.parquet", LabelsSchema)
    taxonomy = read_table(vdir / "taxonomy.parquet", TaxonomySchema)
    n_images = images.height
    pos = positives(labels, taxonomy, images["image_id"])
    pairs, classes = cooccurrence(pos, n_images, taxonomy["global_class_id"].sort(), min_rate)
    out = paths.cooccurrence_dir(key)
    write_table(pairs, out / "pairs.parquet", CooccurrencePairsSchema)
    write_table(classes, out / "classes.parquet", CooccurrenceClassesSchema)
    report = summary(pairs, classes, n_images, min_rate)
    rdir = paths.reports_dir(key)
    write_json(rdir / "cooccurrence.json", report)
    heatmap(pairs, classes, taxonomy, k, rdir / "cooccurrence.png",
            f"{key}: class co-occurrence, {min(k, classes.height)} most frequent classes")
    return report


def main(argv=None) -> int:
    from datasets.params import load_params

    ap = argparse.ArgumentParser(prog="python -m datasets.cooccurrence", description=__doc__.splitlines()[0])
    ap.add_argument("key", choices=DATASETS)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    r = run(args.key, params)
    print(f"{args.key}: rates in [{r['rate_range'][0]:.4g}, {r['rate_range'][1]:.4g}], "
          f"{r['selected_pairs']} pairs and {r['selected_classes']} classes at >= {r['min_rate']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
