"""A trained model on images: loading a checkpoint, batched embedding, the embeddings file.

A shared library of the steps that run a trained model (``benchmark.embed`` writes the
embeddings, ``benchmark.attention`` draws attention maps, both run by the evaluate stage), of the
one that reads their output (``benchmark.evaluate.run``) and of the train stage's val curve.

The embeddings file (``data/<key>/embeddings/<model>/seed<k>.npz``), float32, images in the order
of ``image_id``:
- ``image_id`` (n,), ``attribute`` (n, N, D): the attribute-specific embeddings;
- class-level models also ``class_index`` (P, 3) int64 rows (row into image_id, attribute,
  class within the attribute) with ``class_emb`` (P, D), and ``probs`` (n, C) where the model
  predicts class probabilities (the multi-granularity ranking's P_n).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmark.loaders import network_input
from datasets.atomic import atomic_path
from datasets.taxonomy import class_offsets
from model.base import Embeddings, RetrievalModel


def load_trained_model(path: str | Path, device="cpu") -> RetrievalModel:
    """A checkpoint of the train stage (models/<key>/<model>/seed<k>/{checkpoint,best}.pt) as a model in
    eval mode."""
    from benchmark.checkpoint import load_trained_model as load

    model, _ = load(path, map_location="cpu")
    return model.to(device).eval()


def load_selected_model(key: str, model_name: str, seed: int, device="cpu") -> tuple[RetrievalModel, dict]:
    """(model, selection) of the checkpoint that the train stage selected for evaluation
    (``selection.json``: ``last`` or ``best_val``, and which epoch)."""
    from benchmark.checkpoint import read_selection, selected_checkpoint_path

    selection = read_selection(key, model_name, seed)
    return load_trained_model(selected_checkpoint_path(key, model_name, seed), device), selection


def resolve_device(device: str | None = None) -> torch.device:
    """``--device`` of a stage after training: as given, else cuda when available."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def model_stage_arguments(prog: str, doc: str, argv: list[str] | None, device_help: str) -> argparse.Namespace:
    """The command line of a stage after training: ``<dataset> <model> [--params P] [--device D]``."""
    from datasets import DATASETS

    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    ap.add_argument("dataset", help=f"a dataset key ({', '.join(DATASETS)})")
    ap.add_argument("model")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--device", default=None, help=f"{device_help} (default: cuda when available)")
    return ap.parse_args(argv)


class ImageSource:
    """Images by id through the loaders' decoding (the same resize and normalisation as training).

    With ``features`` ((n, c, h, w), ids) the model's input is the cached map of the shared trunk
    (profile ``trunk: shared``) instead of the pixels; :meth:`pixels` still decodes the pictures
    (figures and the pointing game draw on them).
    """

    def __init__(self, root: Path, images: pl.DataFrame, size: int, workers: int = 0, preprocess: str = "squash",
                 features: tuple[np.ndarray, np.ndarray] | None = None):
        from benchmark.loaders import FeatureTable, ImageFolderTable

        self.table = ImageFolderTable(images, root, size, preprocess=preprocess)
        self.size = int(size)
        self.workers = int(workers)
        self.row_of = {int(i): r for r, i in enumerate(self.table.image_ids.tolist())}
        self.features = None if features is None else FeatureTable(*features)

    @classmethod
    def for_profile(cls, key: str, images: pl.DataFrame, prof: dict, *, seed: int | None = None,
                    model_input: bool = True) -> "ImageSource":
        """The raw images of ``key`` as the active training profile decodes them (size, workers,
        preprocess), and the cached maps of trunk ``seed`` where the profile shares a trunk (unless
        ``model_input`` is False: a stage that only draws the pictures)."""
        from benchmark.shared_trunk import load_features, uses_shared_trunk
        from datasets import paths

        features = None
        if model_input and uses_shared_trunk(prof):
            if seed is None:
                raise ValueError("a shared trunk's maps are per training seed: ImageSource.for_profile needs seed=")
            features = load_features(key, seed)
        return cls(paths.raw_dir(key), images, prof["image_size"], prof.get("workers", 0),
                   preprocess=prof.get("preprocess", "squash"), features=features)

    def pixels(self, ids) -> np.ndarray:
        """(B, S, S, 3) uint8 RGB."""
        return np.stack([self.table.pixels(self.row_of[int(i)]) for i in ids])

    def _inputs(self, ids):
        from benchmark.loaders import FeatureTable, ImageFolderTable

        if self.features is not None:
            f = self.features
            return FeatureTable(f.features, f.image_ids, image_ids=ids)
        return ImageFolderTable(pl.DataFrame({"image_id": self.table.image_ids, "path": self.table.paths}),
                                self.table.raw_root, self.size, image_ids=ids, preprocess=self.table.preprocess)

    def tensor(self, ids, device="cpu") -> torch.Tensor:
        """The model's input for ``ids``: (B, 3, S, S) normalised, or (B, c, h, w) cached maps; on ``device``."""
        table = self._inputs(ids)
        return network_input(torch.stack([table.load(r) for r in range(len(table))]).to(device))

    def batches(self, ids, batch_size: int):
        """(inputs (B, ...) uint8 images or float maps, image_ids (B,)) in the order of ``ids``."""
        from benchmark.loaders import image_loader

        return image_loader(self._inputs(ids), batch_size=batch_size, workers=self.workers)


@torch.no_grad()
def extract_embeddings(model: RetrievalModel, source: ImageSource, ids: np.ndarray, *, gamma: float,
                       max_classes: int, batch_size: int, device, ranked: np.ndarray | None = None) -> Embeddings:
    """Embeddings of images ``ids`` in that order, on the CPU; class_index rows index ``ids``.
    ``ranked`` (n, N) bool, rows as ``ids``: the pairs whose class level will be ranked
    (:func:`ranked_pairs`; None: every pair)."""
    return embed_batches(model, source.batches(ids, batch_size), gamma=gamma, max_classes=max_classes,
                         device=device, ranked=ranked)


@torch.no_grad()
def embed_batches(model: RetrievalModel, batches, *, gamma: float, max_classes: int, device,
                  ranked: np.ndarray | None = None) -> Embeddings:
    """The embeddings of every image of ``batches`` ((inputs, ids) pairs, the loaders' layout: uint8
    images or cached maps), in order, as float32 on the CPU; class_index rows count across batches.
    The evaluate stage's extraction and the train stage's val curve both run through it."""
    att, probs, cidx, cemb = [], [], [], []
    start = 0
    for x, _ in batches:
        r = None if ranked is None else torch.from_numpy(np.asarray(ranked[start:start + len(x)], dtype=bool))
        e = model.embed(network_input(x.to(device, non_blocking=True)), gamma=gamma, max_classes=max_classes,
                        ranked=r).to("cpu")
        att.append(e.attribute.float())
        if e.probs is not None:
            probs.append(e.probs.float())
        if e.class_index is not None:
            ci = e.class_index.clone()
            ci[:, 0] += start
            cidx.append(ci)
            cemb.append(e.class_emb.float())
        start += len(x)
    return Embeddings(
        attribute=torch.cat(att),  # (n, N, D)
        probs=torch.cat(probs) if probs else None,  # (n, C)
        class_index=torch.cat(cidx) if cidx else None,  # (P, 3)
        class_emb=torch.cat(cemb) if cemb else None,  # (P, D)
    )


def ranked_pairs(labels: np.ndarray, classes_per_attribute: list[int]) -> np.ndarray:
    """(n, N) bool: image i is ranked in attribute n (as a query or a candidate) exactly when it has
    a positive label in n (``labels`` (n, C) the positive multi-hot; benchmark.evaluate)."""
    offsets = class_offsets(classes_per_attribute)
    return np.stack([labels[:, offsets[a]:offsets[a + 1]].any(1) for a in range(len(classes_per_attribute))], 1)


def embeddings_path(out_dir: Path, seed: int) -> Path:
    return Path(out_dir) / f"seed{int(seed)}.npz"


def save_embeddings(path: Path, emb: Embeddings, ids: np.ndarray, class_level: bool,
                    selection: dict | None = None) -> None:
    """Write one seed's embeddings (float32, so that evaluation from the file is exact), with the
    train stage's checkpoint policy and the epoch it selected."""
    selection = selection or {}
    arrays = {"image_id": np.asarray(ids, dtype=np.int64), "attribute": emb.attribute.numpy().astype(np.float32),
              "class_level": np.array(bool(class_level)),
              "checkpoint_policy": np.array(str(selection.get("policy", ""))),
              "checkpoint_epoch": np.array(int(selection["epoch"]) if selection.get("epoch") is not None else -1),
              # how long the run trained (early_stop ends it once its val curve levels off) and at most
              "checkpoint_epochs_run": np.array(int(selection.get("epochs_run") or -1)),
              "checkpoint_max_epochs": np.array(int(selection.get("max_epochs") or -1))}
    if "imagenet_weights" in selection:  # {trunk: whether ImageNet weights were loaded}, as JSON
        arrays["checkpoint_imagenet_weights"] = np.array(json.dumps(selection["imagenet_weights"], sort_keys=True))
    if emb.probs is not None:
        arrays["probs"] = emb.probs.numpy().astype(np.float32)
    if emb.class_index is not None:
        arrays["class_index"] = emb.class_index.numpy().astype(np.int64)
        arrays["class_emb"] = emb.class_emb.numpy().astype(np.float32)
    write_npz(path, arrays)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz (np.load reads it) whose bytes depend only on the arrays.

    ``np.savez`` stamps every member with the current time, so the same embeddings would give a
    new file, and DVC a new hash, on every run; here every member carries a fixed date.
    Written to a temporary name and renamed, so a killed run leaves no half file.
    """
    import zipfile

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)


def load_embeddings(path: Path) -> tuple[np.ndarray, Embeddings, bool]:
    """(image ids, Embeddings, whether the model has a class level) from :func:`save_embeddings`'s file."""
    with np.load(path, allow_pickle=False) as z:
        t = lambda k: torch.from_numpy(z[k]) if k in z else None  # noqa: E731
        emb = Embeddings(attribute=t("attribute"), probs=t("probs"), class_index=t("class_index"),
                         class_emb=t("class_emb"))
        return z["image_id"], emb, bool(z["class_level"])


def embeddings_checkpoint(path: Path) -> dict:
    """{policy, epoch, epochs_run, max_epochs[, imagenet_weights]} of the checkpoint an embeddings
    file came from (imagenet_weights: {trunk: loaded}, where the train stage recorded it)."""
    with np.load(path, allow_pickle=False) as z:
        num = lambda k: (int(z[k]) if int(z[k]) >= 0 else None) if k in z else None  # noqa: E731
        out = {"policy": str(z["checkpoint_policy"]) if "checkpoint_policy" in z else None,
               "epoch": num("checkpoint_epoch"), "epochs_run": num("checkpoint_epochs_run"),
               "max_epochs": num("checkpoint_max_epochs")}
        if "checkpoint_imagenet_weights" in z:
            out["imagenet_weights"] = json.loads(str(z["checkpoint_imagenet_weights"]))
        return out
