"""Generated twins of DeepFashion, FashionAI and DARN in their exact raw release formats."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..paths import twin_dir, twin_sheet_path
from .common import KEYS


def load_params(path: str | Path = "params.yaml") -> dict:
    """The ``twins`` section of params.yaml (read by datasets.params, which names a missing file)."""
    from datasets.params import load_params as load_all

    return load_all(path)["twins"]


def sheet_path(key: str) -> Path:
    return twin_sheet_path(key)


def generate(key: str, params: dict, out_dir: Path | None = None, sheet: Path | None = None, progress=True) -> dict:
    """Write the twin `key` into out_dir (replacing it) and its contact sheet; returns build()'s dict."""
    from .build import build
    from .preview import contact_sheet

    if key not in KEYS:
        raise ValueError(f"unknown twin {key!r}; one of {KEYS}")
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
    result = build(key, params, out_dir, progress=progress)
    try:
        if sheet is not None:
            contact_sheet(key, result, Path(sheet))
    finally:
        result["images"].close()  # a large twin's spool file beside out_dir
    return result


__all__ = ["KEYS", "generate", "load_params", "sheet_path", "twin_dir"]
