"""Images and labels as tensors: the one place that decodes images for training AND evaluation.

Public (the evaluate stage uses these):
- :func:`classes_per_attribute` (taxonomy) -> list[int]
- :func:`label_matrix` (labels, taxonomy, image_ids, maybe_policy, dense=) -> (multi_hot (n, C) bool,
  annotated (n, N) bool), torch tensors, rows in the order of ``image_ids``
- :class:`ImageFolderTable`: Dataset of (image (3, H, W) uint8, image_id)
- :func:`image_loader`: a DataLoader over an ImageFolderTable for embedding extraction
- :func:`normalize`: a uint8 batch -> the network's float input, on whatever device it is
- :class:`FeatureTable`: cached trunk feature maps in place of images (the twin profile's shared
  trunk); :func:`network_input` turns either kind of batch into the model's input
- :func:`dense_annotation` (dataset key) -> bool

Training: :class:`TripletDataset` + :func:`collate_triplets` produce exactly the batch of
``model/base.py`` (images still uint8); :func:`triplet_loader` wraps them, with a
DistributedSampler under torchrun; :func:`batch_to_device` moves a batch and normalises it.

Images cross the worker -> main process -> device path as uint8 and are normalised on the device:
a quarter of the bytes of float32, and no per-image float arithmetic in the workers.
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
    """JPEG -> (H, W, 3) uint8 RGB, decoded by OpenCV (libjpeg-turbo) straight to RGB."""
    import cv2

    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10; older ones decode BGR
    img = cv2.imread(str(path), cv2.IMREAD_COLOR if rgb is None else rgb)
    if img is None:
        raise OSError(f"{path}: cannot read or decode the image (validation should have quarantined it)")
    return img if rgb is not None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, the aspect ratio not kept (``preprocess: squash``).

    Bilinear with antialiasing, torchvision's ``Resize(antialias=True)`` (what the PIL pipeline of
    the ASEN/M3-Net code computes), on the uint8 pixels: 3.4x faster than OpenCV's INTER_AREA at
    300 -> 224 px, and the same filter whether shrinking or enlarging.
    """
    if img.shape[0] == size and img.shape[1] == size:
        return img
    # to_chw's view keeps the pixels channels-last: torch's uint8 fast path
    return _resize_bilinear_aa(to_chw(img), size, size).permute(1, 2, 0).numpy()


def _resize_bilinear_aa(chw: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torchvision.transforms.v2.functional.resize(chw, [height, width], antialias=True) for a
    (3, H, W) uint8 tensor, computed by the same torch calls (tests/test_loaders.py checks the two
    agree pixel for pixel), without importing torchvision: its import (1.7 s) was most of the
    start-up of every stage that shows a picture.

    On the CPU, with AVX2/AVX512 (or arm64), torch resizes uint8 natively; elsewhere torchvision
    resizes float32 and rounds back, and so does this. torchvision re-strides a channels-last
    single image so that interpolate keeps it channels-last (pytorch issue 68430): the same here.
    """
    import platform

    c, h, w = chw.shape
    if (h, w) == (height, width) or chw.numel() == 0:
        return chw
    native = chw.device.type == "cpu" and (torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
                                           or platform.machine() in ("aarch64", "arm64"))
    x = chw.reshape(1, c, h, w)
    strides = x.stride()
    if x.is_contiguous(memory_format=torch.channels_last) and x.numel() != strides[0]:
        x = x.as_strided((1, c, h, w), [x.numel(), *strides[1:]])
    cast = chw.dtype != torch.uint8 or not native
    if cast:
        x = x.to(torch.float32)
    x = torch.nn.functional.interpolate(x, size=[height, width], mode="bilinear", align_corners=False, antialias=True)
    if cast and chw.dtype == torch.uint8:
        x = x.round_().to(torch.uint8)
    return x.reshape(c, height, width)


def resize_center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: the short side resized to ``size`` (the long side to
    int(size * long / short), torchvision's ``Resize(size)``), then the centre ``size`` x ``size``
    crop (``CenterCrop(size)``: offset round((long - size) / 2)). ASEN's and ASEN++'s pipeline
    (Maryeon/asen main.py, Maryeon/asenpp GlobalTransform), for training and evaluation alike.
    A square image gives exactly :func:`resize_square`'s result."""
    h, w = img.shape[:2]
    if h == w:
        return resize_square(img, size)
    long = int(size * max(h, w) / min(h, w))  # torchvision's Resize(size): the short side to size
    nh, nw = (size, long) if h < w else (long, size)
    out = _resize_bilinear_aa(to_chw(img), nh, nw)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))  # CenterCrop's offsets
    return out[:, top:top + size, left:left + size].permute(1, 2, 0).numpy()


def preprocess_image(img: np.ndarray, size: int, mode: str = "squash") -> np.ndarray:
    """``squash``: :func:`resize_square` (every image to size x size, aspect not kept);
    ``resize_crop``: :func:`resize_center_crop` (the ASEN / ASEN++ references)."""
    if mode == "squash":
        return resize_square(img, size)
    if mode == "resize_crop":
        return resize_center_crop(img, size)
    raise ValueError(f"preprocess must be 'squash' or 'resize_crop', got {mode!r}")


def to_chw(img: np.ndarray, *, flip: bool = False) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) uint8, optionally mirrored left-right.

    Workers hand over uint8 (a quarter of float32's bytes through shared memory and the PCIe
    copy); :func:`normalize` turns a batch into the network's input on its device.
    """
    if flip:
        import cv2

        img = cv2.flip(img, 1)  # 5 us at 224 px; numpy's img[:, ::-1] made contiguous takes 170
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)


_MEAN_STD: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std (3, 1, 1) on ``device``, copied there once: a pageable host-to-GPU copy
    on every batch would block the host until the GPU caught up, every step."""
    if device not in _MEAN_STD:
        _MEAN_STD[device] = (torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1),
                             torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1))
    return _MEAN_STD[device]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) on any device -> float32 ImageNet-normalised, same device and layout."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {images.dtype}")
    mean, std = _mean_std(images.device)
    return images.float().div_(255.0).sub_(mean).div_(std)


def network_input(x: torch.Tensor) -> torch.Tensor:
    """What a model's ``forward``/``embed`` takes: uint8 images are normalised (:func:`normalize`);
    float tensors are cached trunk feature maps (:class:`FeatureTable`) and pass as they are."""
    return normalize(x) if x.dtype == torch.uint8 else x.float()


def _column(table, name: str) -> list:
    col = table[name]
    return col.to_list() if hasattr(col, "to_list") else list(col)  # polars/pandas, or a plain sequence


class ImageFolderTable(Dataset):
    """Images of a table (``image_id``, ``path`` relative to ``raw_root``), resized and normalised.

    ``image_ids`` selects and orders the rows (default: the table's order). Item i is
    (image (3, S, S) uint8, image_id). ``preprocess`` (:func:`preprocess_image`): ``squash`` or
    ``resize_crop`` (short side to S, centre crop; the references' pipeline). ``cache`` keeps
    decoded, resized uint8 images in memory (small datasets; each DataLoader worker has its own
    copy). Mirroring is the triplets' (:meth:`load`'s ``flip``).
    """

    def __init__(self, images: pl.DataFrame, raw_root, image_size: int, *, image_ids=None,
                 cache: bool = False, preprocess: str = "squash"):
        self.raw_root = Path(raw_root)
        self.image_size = int(image_size)
        preprocess_image(np.zeros((1, 1, 3), np.uint8), 1, preprocess)  # a bad mode fails here, not in a worker
        self.preprocess = preprocess
        if image_ids is None:
            image_ids = images["image_id"]
        self.image_ids = np.asarray(image_ids, dtype=np.int64)
        lookup = dict(zip(_column(images, "image_id"), _column(images, "path")))
        missing = [i for i in self.image_ids.tolist() if i not in lookup]
        if missing:
            raise KeyError(f"{len(missing)} image ids are not in the images table, e.g. {missing[:5]}")
        self.paths = [lookup[i] for i in self.image_ids.tolist()]
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.image_ids)

    def pixels(self, i: int) -> np.ndarray:
        """Row i decoded and resized: (S, S, 3) uint8 RGB."""
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        img = preprocess_image(read_image(self.raw_root / self.paths[i]), self.image_size, self.preprocess)
        if self._cache is not None:
            self._cache[i] = img
        return img

    def load(self, i: int, *, flip: bool = False) -> torch.Tensor:
        """Row i as (3, S, S) uint8, mirrored if ``flip``."""
        return to_chw(self.pixels(i), flip=flip)

    def __getitem__(self, i: int):
        return self.load(int(i)), int(self.image_ids[i])


class FeatureTable(Dataset):
    """Cached trunk feature maps (``benchmark.features``) by image id, in place of the images: item i
    is (features (c, h, w) float32, image_id), like :class:`ImageFolderTable`'s (image, image_id).

    ``features`` (n, c, h, w) (float16 on disk) has rows in the order of ``feature_ids``;
    ``image_ids`` selects and orders the rows served. A mirrored item (a triplet's flip) mirrors
    the map along its width: the twin profile's stand-in for mirroring the picture.

    The served rows are read once into memory (in their stored dtype) when they take at most
    ``PRELOAD_BYTES``: an item is then a view converted to float32, where a memory-mapped row cost a
    numpy object and a page walk per item (12% of a DARN twin train stage, 121,000 items); a larger
    table (a full-size twin's) stays mapped. The values served are the same either way.
    """

    PRELOAD_BYTES = 2 << 30

    def __init__(self, features: np.ndarray, feature_ids, *, image_ids=None):
        feature_ids = np.asarray(feature_ids, dtype=np.int64)
        self.image_ids = feature_ids if image_ids is None else np.asarray(image_ids, dtype=np.int64)
        row_of = {int(i): r for r, i in enumerate(feature_ids.tolist())}
        missing = [i for i in self.image_ids.tolist() if i not in row_of]
        if missing:
            raise KeyError(f"{len(missing)} image ids have no cached features, e.g. {missing[:5]}")
        self.rows = np.asarray([row_of[i] for i in self.image_ids.tolist()], dtype=np.int64)
        self.features = features
        row_bytes = int(np.prod(features.shape[1:])) * features.dtype.itemsize
        self._served = (torch.from_numpy(np.ascontiguousarray(features[self.rows]))
                        if len(self.rows) * row_bytes <= self.PRELOAD_BYTES else None)

    def __len__(self) -> int:
        return len(self.image_ids)

    def load(self, i: int, *, flip: bool = False) -> torch.Tensor:
        """Row i as (c, h, w) float32, mirrored along w if ``flip``."""
        if self._served is not None:
            f = self._served[i].to(torch.float32, copy=True)
        else:
            f = torch.from_numpy(np.asarray(self.features[self.rows[i]], dtype=np.float32))
        return f.flip(-1) if flip else f

    def __getitem__(self, i: int):
        return self.load(int(i)), int(self.image_ids[i])


def image_loader(table: ImageFolderTable, *, batch_size: int, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches of (images (B, 3, S, S) uint8, image_ids (B,)) in table order, for embedding extraction."""
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
        images = tuple(self.table.load(r, flip=bool(tr.flip[t, k])) for k, r in enumerate(rows))
        return {
            "images": images,  # three (3, S, S) uint8: anchor, positive, negative
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
    from torch.utils.data import default_collate

    # one copy, straight into shared memory when in a worker (default_collate's allocation)
    images = default_collate([it["images"][slot] for slot in range(3) for it in items])  # (3B, 3, S, S) uint8
    rows = torch.stack([it["rows"] for it in items]).t().reshape(-1)  # (3B,)
    return {
        "images": images,
        "attribute": torch.tensor([it["attribute"] for it in items], dtype=torch.long),
        "class_id": torch.tensor([it["class_id"] for it in items], dtype=torch.long),
        "targets": targets[rows].float(),  # (3B, C)
        "target_mask": annotated[rows],  # (3B, N)
        "index": torch.as_tensor(image_ids)[rows],  # (3B,)
    }


def batch_to_device(batch: dict, device, *, channels_last: bool = False) -> dict:
    """A loader's batch on ``device`` (asynchronously from pinned memory), its uint8 images
    normalised there into the network's float input (cached feature maps pass as they are)."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    images = out["images"]
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)  # on uint8: a quarter of the bytes
    out["images"] = network_input(images)
    return out


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
