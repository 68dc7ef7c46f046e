"""The twin profile's shared trunk: its file formats and how a profile uses it (a shared library).

A profile with ``trunk: shared`` trains the backbone once per dataset and training seed (stage
``pretrain``: a multi-label classifier on the training split, standing in for the ImageNet weights
the twins cannot have), computes each trunk's feature map of every split image once (stage
``features``), and trains every model's head of seed k on the maps of trunk k, frozen: the
training time goes where the methods differ, and the trunk's own variance is part of every
seed-to-seed spread. A profile with ``trunk: end_to_end`` (the paper's) fine-tunes each model's own backbone
from pixels; its pretrain and features stages write only a note that says so.

Files:
- ``data/<key>/trunk/seed<k>.pt`` (``torch.load(weights_only=True)``): ``format``, ``backbone``,
  ``image_size``, ``seed``, ``state_dict`` of ``model.backbone.build_trunk(backbone)``;
- ``data/<key>/features/seed<k>/features.npy`` (n, c, h, w) float16 and ``image_id.npy`` (n,)
  int64, rows in ascending image id: every image of the splits;
- either folder holds ``unused.json`` instead under ``trunk: end_to_end``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datasets import paths
from datasets.atomic import atomic_path, write_text

TRUNK_FORMAT = "fashionbench-shared-trunk-2"
MODES = ("end_to_end", "shared")
UNUSED = "unused.json"


def trunk_mode(prof: dict) -> str:
    mode = prof.get("trunk", "end_to_end")
    if mode not in MODES:
        raise ValueError(f"train.profiles.<profile>.trunk must be one of {MODES}, got {mode!r}")
    return mode


def uses_shared_trunk(prof: dict) -> bool:
    return trunk_mode(prof) == "shared"


def model_backbone(prof: dict) -> str:
    """The ``backbone`` a model is built with: the profile's, or ``features:<it>`` (input = cached maps)."""
    from model.backbone import FEATURES_PREFIX

    return FEATURES_PREFIX + prof["backbone"] if uses_shared_trunk(prof) else prof["backbone"]


def trunk_path(key: str, seed: int) -> Path:
    """The trunk of training seed ``seed`` (every model's run of that seed reads it)."""
    return paths.trunk_dir(key) / f"seed{int(seed)}.pt"


def features_paths(key: str, seed: int) -> tuple[Path, Path]:
    d = paths.features_dir(key) / f"seed{int(seed)}"
    return d / "features.npy", d / "image_id.npy"


def trunk_seed(pretrain_seed: int, seed: int) -> int:
    """The torch seed of trunk ``seed``: a function of ``pretrain.seed`` and the training seed."""
    import numpy as np

    return int(np.random.SeedSequence([int(pretrain_seed), int(seed)]).generate_state(1)[0])


def write_unused(folder: Path, prof_name: str) -> None:
    """The note a stage of the shared trunk leaves under an end-to-end profile (DVC needs its output)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.is_file():
            f.unlink()
    write_text(folder / UNUSED, json.dumps(
        {"trunk": "end_to_end", "profile": prof_name,
         "why": "this profile fine-tunes every model's backbone from pixels; no shared trunk is used"},
        indent=2, sort_keys=True) + "\n")


def load_trunk(key: str, seed: int, map_location="cpu"):
    """The pretrain stage's trunk of training seed ``seed`` (eval mode, frozen) and its record."""
    from benchmark.checkpoint import CheckpointError, load_tensors
    from model.backbone import build_trunk

    path = trunk_path(key, seed)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no shared trunk for seed {seed}; run `dvc repro pretrain@{key}` "
                                "(profile trunk: shared; one trunk per seed of train.seeds)")
    rec = load_tensors(path, map_location)  # CheckpointError, one line, for a crafted or damaged file
    if not isinstance(rec, dict) or rec.get("format") != TRUNK_FORMAT:
        got = rec.get("format") if isinstance(rec, dict) else type(rec).__name__
        raise CheckpointError(f"{path}: not a shared trunk of this suite; refused (format {got!r}, expected {TRUNK_FORMAT!r})")
    try:
        trunk = build_trunk(rec["backbone"], pretrained=False)
        trunk.load_state_dict(rec["state_dict"])
    except (KeyError, RuntimeError, TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{path}: refused: its state_dict does not fit the {rec.get('backbone')!r} trunk "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk.eval(), rec


def load_features(key: str, seed: int, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, c, h, w) float16, image ids (n,)) of trunk ``seed``, from the features stage."""
    fpath, ipath = features_paths(key, seed)
    if not fpath.exists():
        raise FileNotFoundError(f"{fpath}: no cached features for seed {seed}; run `dvc repro features@{key}` "
                                "(profile trunk: shared)")
    feats = np.load(fpath, mmap_mode="r" if mmap else None, allow_pickle=False)
    ids = np.load(ipath, allow_pickle=False)
    if len(ids) != len(feats):
        raise ValueError(f"{fpath}: {len(feats)} rows but {ipath} has {len(ids)} ids")
    return feats, ids


def save_npy(path: Path, arr: np.ndarray) -> None:
    """np.save to a temporary name, then renamed (a killed run leaves no half file); bytes depend
    only on the array."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
