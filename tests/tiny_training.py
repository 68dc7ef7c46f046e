"""The tiny registered models and the tiny synthetic dataset that the training tests share.

Imported (as ``tests.tiny_training``) by tests/test_train.py, tests/test_loaders.py,
tests/test_hostile.py, tests/conftest.py's ``tiny_workdir`` and tests/test_ddp.py (whose torchrun
workers import it to register the tiny models); a module of its own, so no test file imports
another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from datasets.params_schema import NONNEG, SIZE, Keyed, Nullable, register_model_params
from model.base import Embeddings, RetrievalModel
from model.losses import cosine_triplet, weighted_bce
from model.registry import register_model

torch.set_num_threads(1)

KEY = "fashionai"  # a sparse-annotation dataset key: images are annotated only where they have rows
CPA = [3, 2]  # classes per attribute of the synthetic taxonomy

# --------------------------------------------------------------------------------- tiny models

CRASH_AT: list = [None]  # simulate a kill: raise at this forward call (counted across instances)
CALLS = [0]
LAST_MODEL: list = [None]


class SimulatedKill(RuntimeError):
    pass


class TinyModel(RetrievalModel):
    """conv -> BN -> pool -> dropout -> per-attribute embeddings + class logits."""

    def __init__(self, *, classes_per_attribute, embed_dim=8, w_p=1.0, margin=0.2, nan_at_step=None, **kwargs):
        super().__init__(classes_per_attribute=classes_per_attribute)
        assert isinstance(w_p, (int, float)), "the trainer must resolve w_p per dataset"
        self.embed_dim, self.w_p, self.margin, self.nan_at_step = embed_dim, float(w_p), margin, nan_at_step
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1),
        )
        self.attr = nn.Linear(8, self.num_attributes * embed_dim)
        self.cls = nn.Linear(8, self.num_classes)
        attr_of_class = torch.repeat_interleave(torch.arange(self.num_attributes), torch.tensor(self.classes_per_attribute))
        self.register_buffer("attr_of_class", attr_of_class, persistent=False)
        self.steps = 0

    def _features(self, images):
        feat = self.trunk(images)  # (B, 8)
        return feat, self.attr(feat).view(len(images), self.num_attributes, self.embed_dim), self.cls(feat)

    def embed(self, images, *, gamma=0.8, max_classes=16, ranked=None):
        _, emb, logits = self._features(images)
        return Embeddings(attribute=F.normalize(emb, dim=-1), probs=torch.sigmoid(logits))

    def forward(self, batch):
        LAST_MODEL[0] = self
        CALLS[0] += 1
        if CRASH_AT[0] is not None and CALLS[0] == CRASH_AT[0]:
            raise SimulatedKill(f"killed at call {CALLS[0]}")
        self.steps += 1
        _, emb, logits = self._features(batch["images"])
        b = batch["attribute"].numel()
        rows = torch.arange(3 * b)
        sel = emb[rows, batch["attribute"].repeat(3)]  # (3B, D)
        a, p, n = sel.split(b)
        trip = cosine_triplet(a, p, n, self.margin).mean()
        mask = batch["target_mask"][:, self.attr_of_class]  # (3B, C)
        bce = weighted_bce(logits, batch["targets"], self.w_p, mask)
        loss = trip + bce
        if self.nan_at_step is not None and self.steps == self.nan_at_step:
            loss = loss * float("nan")
        return {"loss": loss, "loss_triplet": trip.detach(), "loss_bce": bce.detach()}


class TinyTwoPhase(TinyModel):
    """Two phases like ASEN++: 'global' trains the trunk and embeddings only, 'joint' everything."""

    phases = ("global", "joint")

    def set_phase(self, phase):
        super().set_phase(phase)
        for p in self.cls.parameters():
            p.requires_grad_(phase == "joint")

    def param_groups(self, lr):
        groups = [{"params": list(self.trunk.parameters()) + list(self.attr.parameters()), "lr": lr}]
        if self.phase == "joint":
            groups.append({"params": list(self.cls.parameters()), "lr": lr * 0.5})
        return groups


# registered once, when this module is first imported (always as ``tests.tiny_training``), with
# their params.yaml keys (the schema refuses any other under models.tiny_test)
register_model("tiny_test")(TinyModel)
register_model("tiny_test2")(TinyTwoPhase)
_TINY_KEYS = {"embed_dim": Keyed(SIZE), "w_p": Keyed(NONNEG), "margin": Keyed(NONNEG), "nan_at_step": Nullable(SIZE)}
register_model_params("tiny_test", _TINY_KEYS)
register_model_params("tiny_test2", _TINY_KEYS)


# ------------------------------------------------------------------------------ synthetic data


def make_dataset(root: Path, key: str = KEY, n: int = 60, seed: int = 0, size=(24, 20)) -> dict:
    """JPEGs + validated tables + splits under root/data/<key>/. Colour encodes the classes:
    red = attribute 0's class, green = attribute 1's class (absent in every 5th image)."""
    import cv2

    from datasets import paths
    from datasets.schemas import ImagesSchema, LabelsSchema, SplitsSchema, TaxonomySchema, write_table

    rng = np.random.default_rng(seed)
    raw = root / paths.raw_dir(key)
    (raw / "img").mkdir(parents=True, exist_ok=True)
    c0 = rng.integers(0, CPA[0], n)
    c1 = rng.integers(0, CPA[1], n)
    has1 = np.arange(n) % 5 != 0
    img_rows, lab_rows = [], []
    for i in range(n):
        rgb = np.empty((size[0], size[1], 3), np.uint8)
        rgb[..., 0] = 30 + 90 * c0[i]
        rgb[..., 1] = 40 + 150 * c1[i] if has1[i] else 128
        rgb[..., 2] = 100
        rgb = np.clip(rgb.astype(int) + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
        rel = f"img/{i:04d}.jpg"
        cv2.imwrite(str(raw / rel), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        img_rows.append({"image_id": i, "path": rel, "width": size[1], "height": size[0], "bytes": 1, "sha256": f"{i:064x}"})
        lab_rows.append({"image_id": i, "attribute_id": 0, "class_id": int(c0[i]), "state": "positive"})
        if has1[i]:
            lab_rows.append({"image_id": i, "attribute_id": 1, "class_id": int(c1[i]), "state": "positive"})
        if i % 7 == 3:
            lab_rows.append({"image_id": i, "attribute_id": 0, "class_id": int((c0[i] + 1) % CPA[0]), "state": "maybe"})
    tax = [{"attribute_id": a, "attribute": f"attr{a}", "class_id": c, "class_name": f"a{a}c{c}",
            "global_class_id": sum(CPA[:a]) + c} for a in range(len(CPA)) for c in range(CPA[a])]
    split = np.where(np.arange(n) % 10 < 7, "train", np.where(np.arange(n) % 10 < 8, "val", "test"))
    role = np.where(split == "train", "train", np.where(np.arange(n) % 2 == 0, "query", "candidate"))
    vdir = root / paths.validated_dir(key)
    write_table(pl.DataFrame(img_rows), vdir / "images.parquet", ImagesSchema)
    write_table(pl.DataFrame(lab_rows), vdir / "labels.parquet", LabelsSchema)
    write_table(pl.DataFrame(tax), vdir / "taxonomy.parquet", TaxonomySchema)
    write_table(pl.DataFrame({"image_id": np.arange(n), "split": split, "role": role}),
                root / paths.splits_path(key), SplitsSchema)
    return {"c0": c0, "c1": c1, "has1": has1, "split": split}


def make_params(root: Path, *, model="tiny_test", epochs=2, triplets=32, batch=8, seeds=(0,), lr=0.01, **model_kw) -> dict:
    params = {
        "validate": {"maybe_policy": "negative"},
        "train": {
            "profile": "tiny", "seeds": list(seeds), "device": "cpu", "compile": False,
            "profiles": {"tiny": {"backbone": "plain8", "pretrained": False, "image_size": 16, "epochs": epochs,
                                  "triplets_per_epoch": triplets, "batch_size": batch, "workers": 0}},
        },
        "models": {model: {"embed_dim": 8, "lr": lr, "lr_decay": 0.9, "margin": 0.2,
                           "w_p": {"deepfashion": 100, KEY: 2}, **model_kw}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def train_tiny(model: str = "tiny_test") -> int:
    """The train stage's main on the tiny dataset in the current folder."""
    from benchmark.train import main

    return main([KEY, model])
