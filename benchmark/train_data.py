"""The train stage's data: the training split's images (or a shared trunk's cached maps), its label
matrix and triplet index, and the val split's queries and candidates the val curve is scored on."""

from __future__ import annotations

import numpy as np
import torch

from datasets import paths

_CACHE_BYTES = 1 << 30


class TrainData:
    """The training split's images, label matrix and triplet index."""

    def __init__(self, dataset: str, image_size: int, maybe_policy: str, *, cache: bool,
                 preprocess: str = "squash", validation: bool = False, features=None):
        """``features``: (maps, ids) of the shared trunk (``benchmark.shared_trunk.load_features``):
        the training and val items are then those cached maps instead of decoded images."""
        from benchmark.loaders import (FeatureTable, ImageFolderTable, classes_per_attribute, dense_annotation,
                                       label_matrix)
        from benchmark.sampling import build_triplet_index
        from datasets.schemas import ImagesSchema, LabelsSchema, SplitsSchema, TaxonomySchema, read_table

        vdir = paths.validated_dir(dataset)
        images = read_table(vdir / "images.parquet", ImagesSchema)
        labels = read_table(vdir / "labels.parquet", LabelsSchema)
        self.taxonomy = read_table(vdir / "taxonomy.parquet", TaxonomySchema)
        splits = read_table(paths.splits_path(dataset), SplitsSchema)
        train_ids = np.intersect1d(
            splits.filter(splits["split"] == "train")["image_id"].to_numpy(), images["image_id"].to_numpy()
        )
        if len(train_ids) == 0:
            raise ValueError(f"{paths.splits_path(dataset)}: no training images")
        self.classes_per_attribute = classes_per_attribute(self.taxonomy)
        self.targets, self.annotated = label_matrix(labels, self.taxonomy, train_ids, maybe_policy,
                                                    dense=dense_annotation(dataset))
        # decoded images are kept in memory only when they fit easily (the twins: a few MB)
        cache = cache and len(train_ids) * image_size * image_size * 3 <= _CACHE_BYTES
        if features is not None:
            self.table = FeatureTable(*features, image_ids=train_ids)
        else:
            self.table = ImageFolderTable(images, paths.raw_dir(dataset), image_size, image_ids=train_ids, cache=cache,
                                          preprocess=preprocess)
        self.index = build_triplet_index(self.targets.numpy(), self.annotated.numpy(), self.classes_per_attribute)
        self.val = None
        if validation:  # best_val: the val split's query and candidate images, decoded once
            self.val = _val_set(dataset, images, labels, splits, self.taxonomy, self.classes_per_attribute,
                                image_size, maybe_policy, preprocess, features)


def _val_set(dataset: str, images, labels, splits, taxonomy, cpa: list[int], image_size: int, maybe_policy: str,
             preprocess: str, features) -> "ValSet":
    """The val split's query and candidate images (or cached maps), their labels and roles."""
    from benchmark.loaders import FeatureTable, ImageFolderTable, dense_annotation, label_matrix

    val = splits.filter((splits["split"] == "val") & splits["role"].is_in(["query", "candidate"]))
    val = val.filter(val["image_id"].is_in(images["image_id"].to_list())).sort("image_id")
    if val.height == 0:
        raise ValueError(f"{paths.splits_path(dataset)}: checkpoint best_val needs val queries and candidates")
    val_ids = val["image_id"].to_numpy()
    val_labels, _ = label_matrix(labels, taxonomy, val_ids, maybe_policy, dense=dense_annotation(dataset))
    if features is not None:
        val_table = FeatureTable(*features, image_ids=val_ids)
    else:
        val_table = ImageFolderTable(images, paths.raw_dir(dataset), image_size, image_ids=val_ids,
                                     cache=len(val_ids) * image_size * image_size * 3 <= _CACHE_BYTES,
                                     preprocess=preprocess)
    return ValSet(table=val_table, labels=val_labels, is_query=torch.from_numpy((val["role"] == "query").to_numpy()),
                  classes_per_attribute=cpa)


class ValSet:
    """The val split's images and labels, for the ``best_val`` checkpoint selection."""

    def __init__(self, *, table, labels: torch.Tensor, is_query: torch.Tensor, classes_per_attribute: list[int]):
        self.table, self.labels, self.is_query = table, labels.bool(), is_query.bool()
        self.classes_per_attribute = list(classes_per_attribute)

