"""Images and labels as tensors: the one place that decodes images for training AND evaluation.

Public (the evaluate stage uses these):
- :func:`classes_per_attribute` (taxonomy) -> list[int]
- :func:`label_matrix` (labels, taxonomy, image_ids, maybe_policy, dense=) -> (multi_hot (n, C) bool,
  annotated (n, N) bool), torch tensors, rows in the order of ``image_ids``
- :class:`ImageFolderTable`: Dataset of (image (3, H, W) float normalised, image_id)
- :func:`image_loader`: a DataLoader over an ImageFolderTable for embedding extraction
- :func:`dense_annotation` (dataset key) -> bool

Training: :class:`TripletDataset` + :func:`collate_triplets` produce exactly the batch of
``model/base.py``; :func:`triplet_loader` wraps them, with a DistributedSampler under torchrun.
"""

from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:  # polars only where tables are read: the GPU perf run imports this module without it
    import polars as pl

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAYBE_POLICIES = ("negative", "positive", "drop")

# Datasets whose source states every class for every image (DeepFashion's list_attr_img.txt has all
# 1000 values per image), so every image is annotated in every attribute even where the long-form
# table holds no row. Elsewhere an image is annotated in attribute n iff it has a label row in n.
_DENSE = frozenset({"deepfashion"})


def dense_annotation(dataset_key: str) -> bool:
    return dataset_key in _DENSE


# --------------------------------------------------------------------------------------- labels


def classes_per_attribute(taxonomy: pl.DataFrame) -> list[int]:
    """Number of classes M_n of each attribute, in attribute_id order."""
    import polars as pl

    counts = taxonomy.group_by("attribute_id").agg(pl.len().alias("m")).sort("attribute_id")
    ids = counts["attribute_id"].to_list()
    if ids != list(range(len(ids))):
        raise ValueError(f"taxonomy attribute ids are not 0..N-1: {ids}")
    return [int(m) for m in counts["m"].to_list()]


def label_matrix(
    labels: pl.DataFrame,
    taxonomy: pl.DataFrame,
    image_ids,
    maybe_policy: str = "negative",
    *,
    dense: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-hot positives over global class ids and the annotated-attribute mask.

    Returns ``multi_hot`` (n_images, C) bool and ``annotated`` (n_images, N) bool, row i for
    ``image_ids[i]``. States: ``positive`` is 1; ``unknown``/``negative`` are 0 but annotate the
    attribute; ``maybe`` follows ``maybe_policy``: ``negative`` (0, annotated), ``positive`` (1),
    ``drop`` (the image's whole attribute is left unannotated and its labels there removed).
    ``dense``: every image is annotated in every attribute (see :func:`dense_annotation`).
    Labels of images not in ``image_ids`` are ignored.
    """
    import polars as pl

    if maybe_policy not in MAYBE_POLICIES:
        raise ValueError(f"maybe_policy must be one of {MAYBE_POLICIES}, got {maybe_policy!r}")
    ids = np.asarray(image_ids, dtype=np.int64)
    n_cls = taxonomy.height
    n_attr = len(classes_per_attribute(taxonomy))
    rows = pl.DataFrame({"image_id": ids, "row": np.arange(len(ids), dtype=np.int64)})
    lab = (
        labels.lazy()
        .join(rows.lazy(), on="image_id", how="inner")
        .join(
            taxonomy.lazy().select(
                pl.col("attribute_id").cast(pl.Int16),
                pl.col("class_id").cast(pl.Int16),
                pl.col("global_class_id").cast(pl.Int64),
            ),
            on=["attribute_id", "class_id"],
            how="left",
        )
        .collect()
    )
    if lab["global_class_id"].null_count():
        bad = lab.filter(pl.col("global_class_id").is_null()).row(0, named=True)
        raise ValueError(f"label (attribute {bad['attribute_id']}, class {bad['class_id']}) is not in the taxonomy")
    r = lab["row"].to_numpy()
    a = lab["attribute_id"].to_numpy().astype(np.int64)
    g = lab["global_class_id"].to_numpy()
    state = lab["state"].to_numpy()

    annotated = np.full((len(ids), n_attr), bool(dense))
    annotated[r, a] = True
    positive = state == "positive"
    if maybe_policy == "positive":
        positive |= state == "maybe"
    multi_hot = np.zeros((len(ids), n_cls), dtype=bool)
    multi_hot[r[positive], g[positive]] = True
    if maybe_policy == "drop":
        m = state == "maybe"
        annotated[r[m], a[m]] = False
        attr_of_class = np.repeat(np.arange(n_attr), classes_per_attribute(taxonomy))
        multi_hot &= annotated[:, attr_of_class]
    return torch.from_numpy(multi_hot), torch.from_numpy(annotated)


# --------------------------------------------------------------------------------------- images


def read_image(path: str | Path) -> np.ndarray:
    """JPEG -> (H, W, 3) uint8 RGB (OpenCV decodes BGR)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"{path}: cannot read or decode the image (validation should have quarantined it)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (the paper resizes, no crop); area filter when shrinking."""
    import cv2

    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if min(img.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def to_tensor(img: np.ndarray, *, flip: bool = False) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, ImageNet-normalised, optionally mirrored."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    if flip:
        t = t.flip(-1)
    return t.sub_(_MEAN).div_(_STD)


def decode_and_transform(path: str | Path, image_size: int, *, train: bool = False, seed: int = 0) -> torch.Tensor:
    """One file -> (3, S, S) normalised; ``train`` mirrors it with probability 1/2, seeded by ``seed``."""
    flip = train and bool(np.random.default_rng([int(seed)]).random() < 0.5)
    return to_tensor(resize_square(read_image(path), image_size), flip=flip)


class ImageFolderTable(Dataset):
    """Images of a table (``image_id``, ``path`` relative to ``raw_root``), resized and normalised.

    ``image_ids`` selects and orders the rows (default: the table's order). Item i is
    (image (3, S, S) float32, image_id). ``augment`` mirrors an image with probability 1/2, the
    decision a function of (seed, epoch, i) so that it does not depend on worker scheduling
    (call :meth:`set_epoch`). ``cache`` keeps decoded, resized uint8 images in memory (small
    datasets; each DataLoader worker has its own copy).
    """

    def __init__(self, images: pl.DataFrame, raw_root, image_size: int, *, image_ids=None,
                 augment: bool = False, seed: int = 0, cache: bool = False):
        self.raw_root = Path(raw_root)
        self.image_size = int(image_size)
        if image_ids is None:
            image_ids = images["image_id"].to_numpy()
        self.image_ids = np.asarray(image_ids, dtype=np.int64)
        lookup = dict(zip(images["image_id"].to_list(), images["path"].to_list()))
        missing = [i for i in self.image_ids.tolist() if i not in lookup]
        if missing:
            raise KeyError(f"{len(missing)} image ids are not in the images table, e.g. {missing[:5]}")
        self.paths = [lookup[i] for i in self.image_ids.tolist()]
        self.augment, self.seed, self.epoch = augment, int(seed), 0
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def pixels(self, i: int) -> np.ndarray:
        """Row i decoded and resized: (S, S, 3) uint8 RGB."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        img = resize_square(read_image(self.raw_root / self.paths[i]), self.image_size)
        if self._cache is not None:
            self._cache[i] = img
        return img

    def load(self, i: int, *, flip: bool = False) -> torch.Tensor:
        return to_tensor(self.pixels(i), flip=flip)

    def __getitem__(self, i: int):
        flip = False
        if self.augment:
            flip = bool(np.random.default_rng([self.seed, self.epoch, int(i)]).random() < 0.5)
        return self.load(int(i), flip=flip), int(self.image_ids[i])


def image_loader(table: ImageFolderTable, *, batch_size: int, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches of (images (B, 3, S, S), image_ids (B,)) in table order, for embedding extraction."""
    return DataLoader(
        table,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


# ------------------------------------------------------------------------------------- triplets


class TripletDataset(Dataset):
    """One epoch's triplets (benchmark.sampling.Triplets over the rows of ``table``).

    ``targets`` (n_rows, C) bool and ``annotated`` (n_rows, N) bool are the label matrix of the
    same rows. Item t is a dict of the three images and their labels; :func:`collate_triplets`
    lays a list of them out as the model batch.
    """

    def __init__(self, table: ImageFolderTable, targets: torch.Tensor, annotated: torch.Tensor, triplets=None):
        self.table = table
        self.targets = torch.as_tensor(targets, dtype=torch.bool)
        self.annotated = torch.as_tensor(annotated, dtype=torch.bool)
        self.triplets = triplets

    def set_triplets(self, triplets) -> None:
        self.triplets = triplets

    def __len__(self) -> int:
        return 0 if self.triplets is None else len(self.triplets)

    def __getitem__(self, t: int) -> dict:
        tr = self.triplets
        rows = (int(tr.anchor[t]), int(tr.positive[t]), int(tr.negative[t]))
        images = [self.table.load(r, flip=bool(tr.flip[t, k])) for k, r in enumerate(rows)]
        return {
            "images": torch.stack(images),  # (3, 3, S, S): anchor, positive, negative
            "rows": torch.tensor(rows, dtype=torch.long),
            "attribute": int(tr.attribute[t]),
            "class_id": int(tr.class_id[t]),
        }


class _Collate:
    """Picklable collate (workers under spawn) holding the label matrices."""

    def __init__(self, targets: torch.Tensor, annotated: torch.Tensor, image_ids: np.ndarray):
        self.targets, self.annotated = targets, annotated
        self.image_ids = torch.as_tensor(image_ids, dtype=torch.long)

    def __call__(self, items: list[dict]) -> dict:
        return collate_triplets(items, self.targets, self.annotated, self.image_ids)


def collate_triplets(items: list[dict], targets: torch.Tensor, annotated: torch.Tensor, image_ids) -> dict:
    """B triplet items -> the batch of model/base.py (rows [0:B] anchors, [B:2B] positives, [2B:3B] negatives)."""
    images_b3 = torch.stack([it["images"] for it in items])  # (B, 3, 3, S, S)
    rows_b3 = torch.stack([it["rows"] for it in items])  # (B, 3)
    images = images_b3.transpose(0, 1).reshape(-1, *images_b3.shape[2:])  # (3B, 3, S, S)
    rows = rows_b3.t().reshape(-1)  # (3B,)
    return {
        "images": images,
        "attribute": torch.tensor([it["attribute"] for it in items], dtype=torch.long),
        "class_id": torch.tensor([it["class_id"] for it in items], dtype=torch.long),
        "targets": targets[rows].float(),  # (3B, C)
        "target_mask": annotated[rows],  # (3B, N)
        "index": torch.as_tensor(image_ids)[rows],  # (3B,)
    }


def triplet_loader(dataset: TripletDataset, *, batch_size: int, workers: int = 0, rank: int = 0,
                   world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    """Batches of ``batch_size`` triplets (per process) in the epoch's sampled order.

    The triplets are already a random draw, so no shuffling; under torchrun a DistributedSampler
    gives each rank an interleaved, equal share (drop_last keeps every rank on the same step count).
    """
    sampler = None
    if world_size > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False, drop_last=True)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_Collate(dataset.targets, dataset.annotated, dataset.table.image_ids),
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,
    )
