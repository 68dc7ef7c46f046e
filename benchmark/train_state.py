"""The train stage's checkpoint and RNG I/O: every RNG state as tensors and plain types, atomic
saves that keep the previous checkpoint, and the newest readable checkpoint to resume from."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from benchmark.checkpoint import CheckpointError, previous_checkpoint_path, read_checkpoint
from datasets.atomic import atomic_path


def _rng_state() -> dict:
    """Every RNG state as tensors and plain types (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
          "python": {"version": int(version), "state": [int(x) for x in internal], "gauss": py_gauss}}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _atomic_save(obj, path: Path, keep_previous: bool = False) -> None:
    """Write ``obj`` to ``path`` atomically; with ``keep_previous`` the file it replaces is kept as
    :func:`previous_checkpoint_path` (linked there first, so ``path`` exists at every moment)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
        if keep_previous and path.exists():
            prev = previous_checkpoint_path(path)
            prev.unlink(missing_ok=True)
            try:
                os.link(path, prev)  # both in the stage's own folder
            except OSError:
                import shutil

                shutil.copyfile(path, prev)


def load_resume_checkpoint(path: Path, main: bool = True) -> dict | None:
    """The newest readable checkpoint of a seed: ``path``, else (when ``path`` exists but cannot be
    read) its previous one, with a message naming the unreadable file. None when there is no
    checkpoint (a removed latest means "start over") or none is readable."""
    if not path.exists():
        return None
    try:
        return read_checkpoint(path)
    except CheckpointError as e:
        if main:
            print(f"[train] {e}; trying the previous checkpoint", file=sys.stderr)
    prev = previous_checkpoint_path(path)
    ckpt = None
    if prev.exists():
        try:
            ckpt = read_checkpoint(prev)
        except CheckpointError as e:
            if main:
                print(f"[train] {e}", file=sys.stderr)
    if main:
        # the unreadable latest must not become the next "previous": replace it by the previous
        # one (both in the stage's own folder), or remove it when there is none to resume from
        if ckpt is not None:
            import shutil

            with atomic_path(path) as tmp:
                shutil.copyfile(prev, tmp)
            print(f"[train] resuming from the previous checkpoint {prev}", file=sys.stderr)
        else:
            path.unlink(missing_ok=True)
            print(f"[train] no readable checkpoint for {path}: training from scratch", file=sys.stderr)
    return ckpt

