"""The evaluation images of one dataset: which images, their roles, their positive labels.

A shared library of the stages after training (``embed``, ``evaluate``, ``attention``): every one
of them sees the val and test images in the same order (by image id), so row r of an embeddings
file, of the label matrix and of the role index arrays is the same image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from datasets import paths
from datasets.schemas import ImagesSchema, LabelsSchema, SplitsSchema, TaxonomySchema, read_table

EVAL_SPLITS = ("val", "test")
ROLES = ("query", "candidate")


def evaluation_rows(splits: pl.DataFrame) -> pl.DataFrame:
    """The splits table's val and test rows, by image id: row r is row r of every embeddings file."""
    return splits.filter(pl.col("split").is_in(list(EVAL_SPLITS))).sort("image_id")


def evaluation_image_ids(splits: pl.DataFrame) -> np.ndarray:
    """The val and test images, by id: the rows of every embeddings file."""
    return evaluation_rows(splits)["image_id"].to_numpy()


def positive_matrix(labels: pl.DataFrame, taxonomy: pl.DataFrame, image_ids: np.ndarray,
                    maybe_policy: str = "negative", dense: bool = False) -> np.ndarray:
    """(n, C) bool multi-hot over global class ids: the positive labels of ``image_ids``."""
    from benchmark.loaders import label_matrix

    multi_hot, _ = label_matrix(labels, taxonomy, image_ids, maybe_policy, dense=dense)
    return np.asarray(multi_hot, dtype=bool)


def attribute_layout(taxonomy: pl.DataFrame) -> tuple[list[str], list[int]]:
    """Attribute names and classes per attribute, attributes in id order."""
    from benchmark.loaders import classes_per_attribute

    t = taxonomy.group_by("attribute_id").agg(pl.col("attribute").first()).sort("attribute_id")
    return t["attribute"].to_list(), classes_per_attribute(taxonomy)


@dataclass
class EvalSet:
    images: pl.DataFrame
    taxonomy: pl.DataFrame  # sorted by global class id
    ids: np.ndarray  # (n,) image ids of the val and test images, ascending
    labels: np.ndarray  # (n, C) bool positive labels, rows as ids
    role_rows: dict  # (split, role) -> rows into ids
    names: list[str]  # attribute names, in attribute id order
    classes_per_attribute: list[int]


def load_eval_set(key: str, maybe_policy: str = "negative") -> EvalSet:
    """The validated tables and splits of ``key``, as the stages after training read them."""
    from benchmark.loaders import dense_annotation

    vdir = paths.validated_dir(key)
    images = read_table(vdir / "images.parquet", ImagesSchema)
    labels = read_table(vdir / "labels.parquet", LabelsSchema)
    taxonomy = read_table(vdir / "taxonomy.parquet", TaxonomySchema).sort("global_class_id")
    splits = read_table(paths.splits_path(key), SplitsSchema)
    names, cpa = attribute_layout(taxonomy)
    ev_rows = evaluation_rows(splits)
    ids = ev_rows["image_id"].to_numpy()
    labels_m = positive_matrix(labels, taxonomy, ids, maybe_policy, dense_annotation(key))
    role_rows = {(s, r): np.flatnonzero(((ev_rows["split"] == s) & (ev_rows["role"] == r)).to_numpy())
                 for s in EVAL_SPLITS for r in ROLES}
    return EvalSet(images=images, taxonomy=taxonomy, ids=ids, labels=labels_m, role_rows=role_rows, names=names,
                   classes_per_attribute=cpa)
