"""A fresh checkout of this repository in a temporary folder, as a new user's clone is before its
first run: the files git tracks, without the committed results (reports/, dvc.lock). The tests
that run `dvc repro` on a tiny twin start from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_checkout(dest: Path) -> Path:
    """Copy the tracked files (results left out) into ``dest``; returns it."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith(("reports/", "dvc.lock")):
            continue  # a fresh checkout without results, as before a first run
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    return dest
