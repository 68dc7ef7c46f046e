"""A fresh checkout of this repository in a temporary folder, as a new user's clone is before its
first run: the files git tracks, without the committed results (reports/, dvc.lock). The tests
that run `dvc repro` on a tiny twin start from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_checkout(dest: Path) -> Path:
    """Copy the tracked files (results left out) into ``dest``; returns it."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith(("reports/", "dvc.lock")):
            continue  # a fresh checkout without results, as before a first run
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    return dest


def run_in(args, cwd, timeout: int = 600, **env):
    """A command in the copy, as a user runs it: the venv's bin first on PATH (dvc, and the stages'
    `python`), DVC's analytics off; ``env`` adds variables (PYTHONPATH)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1", **env)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def tiny_fashionai(params: dict) -> dict:
    """The twin profile's params shrunk to one quick FashionAI chain: 400 images at 32 px, one
    seed, one epoch of 48 triplets, a one-epoch trunk, 50 bootstrap draws."""
    params["twins"]["fashionai"]["images"] = 400
    params["train"]["profiles"]["twin"].update(epochs=1, triplets_per_epoch=48, image_size=32)
    params["train"]["profiles"]["twin"]["pretrain"]["epochs"] = 1
    params["train"]["seeds"] = [0]
    params["evaluate"]["bootstrap"] = 50
    return params
