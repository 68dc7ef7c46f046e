"""Stage `splits`: train / val / test and the query / candidate roles, one row per image.

Two ways, chosen by what validation left in ``data/<key>/validated/``:

- ``source``: the source published its split with roles (the ASEN files: ``asen_roles.parquet``
  beside ``partition.parquet``). The split comes from ``partition``, the role of a val/test image
  from ``asen_roles`` (``query`` wins if ASEN names an image in both roles; a val/test image ASEN
  gives no role is a candidate). DeepFashion's own ``list_eval_partition`` alone (no roles) does
  not count: the paper re-splits DeepFashion "following the multi-class labels of each image".
- ``stratified``: iterative stratification (``datasets.stratify``) over the positive classes
  (global ids) by ``splits.ratios.<key>`` (its ``twin`` or ``real`` entry, by ``acquire.<key>.source``), seeded by ``splits.seed``; then, within val and within
  test, query : candidate = ``query_fraction`` : ``1 - query_fraction`` by the same method with the
  attribute as the rounding group, so every attribute keeps its ratio.

Either way, a duplicate group found by validation (``duplicates.parquet``, exact and near groups
joined transitively) is one unit: all its images share the split and the role. In the source mode
a group the source split across partitions goes whole to the partition holding most of it (ties:
train, then val, then test), never leaking an image's copy from train into test.

What is guaranteed (and tested in ``tests/test_splits.py``):
- every validated image appears exactly once;
- per stratum of the stratification (the units placed in one round), each split's share is within
  one image of its ratio (within the largest duplicate group's size where a stratum holds one);
  on single-label data a stratum is a class, so every class is within one image of its ratio;
- within val and test, per attribute on single-label data, |queries - q * images| < 1; on any
  data, every attribute with at least two units in a split has a query and a candidate;
- the same seed and tables give the same split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

from datasets import DATASETS, paths
from datasets.schemas import (
    SPLITS,
    AsenRolesSchema,
    DuplicatesSchema,
    ImagesSchema,
    LabelsSchema,
    PartitionSchema,
    SplitsSchema,
    TaxonomySchema,
    read_table,
    write_table,
    write_json,
)
from datasets.stratify import cover_rare_labels, iterative_stratification

EVAL_SPLITS = ("val", "test")


# ----------------------------------------------------------------------------------- helpers


def positive_classes(labels: pl.DataFrame, taxonomy: pl.DataFrame) -> pl.DataFrame:
    """(image_id, global_class_id, attribute_id) of every positive label, unique."""
    tax = taxonomy.select("attribute_id", "class_id", "global_class_id")
    return (
        labels.filter(pl.col("state") == "positive")
        .join(tax, on=["attribute_id", "class_id"], how="inner")
        .select("image_id", pl.col("global_class_id").cast(pl.Int64), pl.col("attribute_id").cast(pl.Int64))
        .unique(subset=["image_id", "global_class_id"])
    )


def duplicate_units(image_ids: np.ndarray, duplicates: pl.DataFrame | None) -> np.ndarray:
    """Unit index per image (positions in ``image_ids``): duplicate groups, joined transitively,
    become one unit; every other image is a unit of its own. Units are numbered 0.. in the order of
    their first image."""
    n = len(image_ids)
    parent = np.arange(n)
    if duplicates is not None and duplicates.height:
        pos = pl.DataFrame({"image_id": image_ids, "pos": np.arange(n)})
        d = duplicates.join(pos, on="image_id", how="inner").sort("kind", "group_id", "pos")

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for members in d.group_by(["kind", "group_id"], maintain_order=True).agg("pos")["pos"].to_list():
            root = find(members[0])
            for m in members[1:]:
                rm = find(m)
                if rm != root:
                    lo, hi = min(root, rm), max(root, rm)
                    parent[hi] = lo
                    root = lo
        for i in range(n):  # flatten
            parent[i] = find(i)
    _, unit = np.unique(parent, return_inverse=True)
    return unit.astype(np.int64)


def _unit_csr(unit_of_pos: np.ndarray, pos_labels: pl.DataFrame, n_units: int):
    """Units x labels CSR with, per entry, the number of the unit's images carrying the label."""
    ul = (
        pos_labels.with_columns(pl.Series("unit", unit_of_pos[pos_labels["pos"].to_numpy()]))
        .group_by("unit", "label")
        .agg(pl.len().alias("n"))
        .sort("unit", "label")
    )
    units = ul["unit"].to_numpy()
    indptr = np.zeros(n_units + 1, np.int64)
    np.cumsum(np.bincount(units, minlength=n_units), out=indptr[1:])
    return indptr, ul["label"].to_numpy().astype(np.int64), ul["n"].to_numpy().astype(np.float64)


def _sub_csr(indptr, indices, data, rows):
    lens = indptr[rows + 1] - indptr[rows]
    sub_ptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lens, out=sub_ptr[1:])
    starts = indptr[rows]
    total = int(lens.sum())
    take = np.repeat(starts, lens) + (np.arange(total) - np.repeat(sub_ptr[:-1], lens))
    return sub_ptr, indices[take], data[take]


def _ensure_attribute_coverage(roles: np.ndarray, indptr, indices, label_attr, weights, rng) -> int:
    """Flip units so every attribute with >= 2 units has a query (role 0) and a candidate (role 1),
    without taking the last query/candidate from another attribute where avoidable. Returns flips."""
    n_attr = int(label_attr.max(initial=-1)) + 1
    if n_attr == 0:
        return 0
    unit_attrs = []
    for u in range(len(roles)):
        unit_attrs.append(np.unique(label_attr[indices[indptr[u]:indptr[u + 1]]]))
    count = np.zeros((2, n_attr), np.int64)
    members = [[] for _ in range(n_attr)]
    for u, attrs in enumerate(unit_attrs):
        count[roles[u], attrs] += 1
        for a in attrs:
            members[a].append(u)
    flips = 0
    for a in range(n_attr):
        if len(members[a]) < 2:
            continue
        for want in (0, 1):
            if count[want, a] > 0:
                continue
            other = 1 - want
            cands = [members[a][i] for i in rng.permutation(len(members[a]))]
            cands.sort(key=lambda u: weights[u])
            safe = [u for u in cands if (count[other, unit_attrs[u]] >= 2).all()]
            u = (safe or cands)[0]
            roles[u] = want
            count[other, unit_attrs[u]] -= 1
            count[want, unit_attrs[u]] += 1
            flips += 1
    return flips


# ----------------------------------------------------------------------------------- the split


def make_splits(
    images: pl.DataFrame,
    labels: pl.DataFrame,
    taxonomy: pl.DataFrame,
    *,
    ratios,
    seed: int,
    query_fraction: float,
    duplicates: pl.DataFrame | None = None,
    partition: pl.DataFrame | None = None,
    asen_roles: pl.DataFrame | None = None,
    min_label_images: int | None = None,
) -> tuple[pl.DataFrame, dict]:
    """Return the splits table (image_id, split, role) and facts for the report.

    ``min_label_images``: every class with at least this many images reaches every split
    (``datasets.stratify.cover_rare_labels``; the stratified mode only)."""
    image_ids = np.sort(images["image_id"].to_numpy().astype(np.int64))
    n = len(image_ids)
    pos_df = pl.DataFrame({"image_id": image_ids, "pos": np.arange(n, dtype=np.int64)})
    pos_labels = (
        positive_classes(labels, taxonomy)
        .join(pos_df, on="image_id", how="inner")
        .select("pos", pl.col("global_class_id").alias("label"))
    )
    n_labels = int(taxonomy["global_class_id"].max() or 0) + 1 if taxonomy.height else 0
    label_attr = np.full(n_labels, -1, np.int64)
    if taxonomy.height:
        label_attr[taxonomy["global_class_id"].to_numpy()] = taxonomy["attribute_id"].to_numpy()

    unit = duplicate_units(image_ids, duplicates)
    n_units = int(unit.max()) + 1 if n else 0
    weights = np.bincount(unit, minlength=n_units).astype(np.int64)
    indptr, indices, data = _unit_csr(unit, pos_labels, n_units)
    info: dict = {"images": n, "units": n_units, "duplicate_units": int((weights > 1).sum())}

    split_code = {s: i for i, s in enumerate(SPLITS)}
    role_of_pos = np.full(n, "", dtype=object)

    if asen_roles is not None and partition is not None:
        info["mode"] = "source"
        part = pos_df.join(partition, on="image_id", how="left")["partition"].to_list()
        missing = sum(p is None for p in part)
        code = np.array([split_code.get(p, 0) for p in part], np.int64)
        # a unit goes to the partition holding most of its images; ties: train, val, test
        votes = np.zeros((n_units, len(SPLITS)), np.int64)
        np.add.at(votes, (unit, code), 1)
        unit_split = votes.argmax(axis=1)
        moved = int((unit_split[unit] != code).sum())
        info.update(images_without_partition=missing, images_moved_with_duplicate_group=moved)
        roles = (
            asen_roles.group_by("image_id")
            .agg((pl.col("role") == "query").any().alias("q"), (pl.col("role") == "candidate").any().alias("c"))
        )
        r = pos_df.join(roles, on="image_id", how="left")
        q = r["q"].fill_null(False).to_numpy()
        c = r["c"].fill_null(False).to_numpy()
        info["images_named_query_and_candidate"] = int((q & c).sum())
        # a unit is a query if any of its images is one (the group stays on one side)
        unit_q = np.zeros(n_units, bool)
        np.logical_or.at(unit_q, unit, q)
        split_of_pos = unit_split[unit]
        is_eval = split_of_pos != split_code["train"]
        info["eval_images_without_role"] = int((is_eval & ~q & ~c).sum())
        role_of_pos[:] = "train"
        role_of_pos[is_eval] = np.where(unit_q[unit][is_eval], "query", "candidate")
    else:
        info["mode"] = "stratified"
        strat = iterative_stratification(
            indptr, indices, n_labels, ratios, [int(seed), 0], data=data, weights=weights
        )
        unit_split = strat.assignment.astype(np.int64)
        info["strata"] = int(len(np.unique(strat.strata)))
        if min_label_images:
            unit_split, swaps, uncovered = cover_rare_labels(
                unit_split, indptr, indices, n_labels, ratios, int(min_label_images), [int(seed), 2],
                data=data, weights=weights)
            info["rare_label_swaps"] = swaps
            info["rare_label_splits_uncovered"] = uncovered
        unit_role = np.full(n_units, "train", dtype=object)
        flips = {}
        for s in EVAL_SPLITS:
            rows = np.flatnonzero(unit_split == split_code[s])
            if len(rows) == 0:
                continue
            sp, si, sd = _sub_csr(indptr, indices, data, rows)
            rs = iterative_stratification(
                sp, si, n_labels, [query_fraction, 1 - query_fraction], [int(seed), 1 + split_code[s]],
                data=sd, weights=weights[rows], label_group=np.maximum(label_attr, 0),
            ).assignment.astype(np.int64)
            flips[s] = _ensure_attribute_coverage(
                rs, sp, si, np.maximum(label_attr, 0), weights[rows],
                np.random.default_rng([int(seed), 10 + split_code[s]]),
            )
            unit_role[rows] = np.where(rs == 0, "query", "candidate")
        info["role_flips_for_attribute_coverage"] = flips
        split_of_pos = unit_split[unit]
        role_of_pos = unit_role[unit]

    out = pl.DataFrame(
        {
            "image_id": image_ids,
            "split": np.array(SPLITS, dtype=object)[split_of_pos].tolist(),
            "role": role_of_pos.tolist(),
        },
        schema={"image_id": pl.Int64, "split": pl.Utf8, "role": pl.Utf8},
    )
    return out, info


# ----------------------------------------------------------------------------------- the report


def split_report(splits: pl.DataFrame, labels: pl.DataFrame, taxonomy: pl.DataFrame, info: dict, ratios) -> dict:
    pos = positive_classes(labels, taxonomy).join(splits, on="image_id", how="inner")
    sizes = {s: int(splits.filter(pl.col("split") == s).height) for s in SPLITS}
    n = sum(sizes.values())
    r = np.asarray(ratios, float) / float(np.sum(ratios)) if info.get("mode") == "stratified" else None
    roles = (
        splits.group_by("split", "role").len().sort("split", "role").iter_rows()
    )
    attr_names = dict(taxonomy.select("attribute_id", "attribute").unique().iter_rows())
    per_attr = {}
    counts = pos.select("image_id", "attribute_id", "split", "role").unique().group_by(
        "attribute_id", "split", "role").len()
    for a in sorted(attr_names):
        sub = counts.filter(pl.col("attribute_id") == a)
        entry = {s: int(sub.filter(pl.col("split") == s)["len"].sum()) for s in SPLITS}
        for s in EVAL_SPLITS:
            for role in ("query", "candidate"):
                entry[f"{s}_{role}"] = int(sub.filter((pl.col("split") == s) & (pl.col("role") == role))["len"].sum())
        per_attr[attr_names[a]] = entry

    gap = {"max": 0.0}
    cls = pos.group_by("global_class_id", "split").len()
    if cls.height and all(sizes.values()):
        # sorted: group_by's row order varies between runs, and with it the last digit of the mean
        wide = cls.pivot(on="split", index="global_class_id", values="len").fill_null(0).sort("global_class_id")
        for s in SPLITS:
            if s not in wide.columns:
                wide = wide.with_columns(pl.lit(0).alias(s))
        freq = np.stack([wide[s].to_numpy() / sizes[s] for s in SPLITS], axis=1)
        g = freq.max(axis=1) - freq.min(axis=1)
        i = int(np.argmax(g))
        cid = int(wide["global_class_id"][i])
        row = taxonomy.filter(pl.col("global_class_id") == cid).row(0, named=True)
        gap = {
            "max": float(g[i]),
            "global_class_id": cid,
            "attribute": row["attribute"],
            "class": row["class_name"],
            "frequency": {s: float(freq[i, k]) for k, s in enumerate(SPLITS)},
            "mean_over_classes": float(g.mean()),
        }
    report = {
        **info,
        "sizes": sizes,
        "fractions": {s: (sizes[s] / n if n else 0.0) for s in SPLITS},
        "roles": {f"{s}/{role}": int(k) for s, role, k in roles},
        "per_attribute": per_attr,
        "class_frequency_gap": gap,
    }
    if r is not None:
        report["target_fractions"] = {s: float(r[k]) for k, s in enumerate(SPLITS)}
        report["largest_size_error_images"] = float(max(abs(sizes[s] - r[k] * n) for k, s in enumerate(SPLITS)))
    return report


# ----------------------------------------------------------------------------------- the stage


def _read_optional(path: Path, schema):
    return read_table(path, schema) if path.exists() else None


def split_ratios(setting, source: str | None) -> list:
    """``splits.ratios.<key>``: a list, or ``{real: [...], twin: [...]}`` chosen by ``acquire.<key>.source``."""
    if isinstance(setting, dict):
        which = "twin" if source == "twin" else "real"
        if which not in setting:
            raise ValueError(f"splits.ratios has no {which!r} entry (acquire source {source!r}): {setting}")
        return list(setting[which])
    return list(setting)


def run(key: str, params: dict) -> dict:
    p = params["splits"]
    vdir = paths.validated_dir(key)
    images = read_table(vdir / "images.parquet", ImagesSchema)
    labels = read_table(vdir / "labels.parquet", LabelsSchema)
    taxonomy = read_table(vdir / "taxonomy.parquet", TaxonomySchema)
    duplicates = _read_optional(vdir / "duplicates.parquet", DuplicatesSchema)
    partition = _read_optional(vdir / "partition.parquet", PartitionSchema)
    asen_roles = _read_optional(vdir / "asen_roles.parquet", AsenRolesSchema)
    setting = p["ratios"][key]
    ratios = split_ratios(setting, params["acquire"][key]["source"] if isinstance(setting, dict) else None)
    splits, info = make_splits(
        images, labels, taxonomy, ratios=ratios, seed=int(p["seed"]), query_fraction=float(p["query_fraction"]),
        duplicates=duplicates, partition=partition, asen_roles=asen_roles,
        min_label_images=p.get("min_label_images"),
    )
    write_table(splits, paths.splits_path(key), SplitsSchema)
    report = split_report(splits, labels, taxonomy, info, ratios)
    write_json(paths.reports_dir(key) / "splits.json", report)
    return report


def main(argv=None) -> int:
    from datasets.params import load_params

    ap = argparse.ArgumentParser(prog="python -m datasets.splits", description=__doc__.splitlines()[0])
    ap.add_argument("key", choices=DATASETS)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    report = run(args.key, params)
    print(f"{args.key}: {report['mode']} split, sizes {report['sizes']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
