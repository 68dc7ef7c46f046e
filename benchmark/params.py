"""Reading params.yaml: the one source of every size, seed and hyperparameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run from the repository root (where dvc.yaml is)")
    with open(path) as f:
        return yaml.safe_load(f)


def training_profile(params: dict[str, Any]) -> dict[str, Any]:
    """The active training profile (train.profiles[train.profile]) merged with train's common keys."""
    train = params["train"]
    prof = dict(train["profiles"][train["profile"]])
    for k, v in train.items():
        if k != "profiles":
            prof.setdefault(k, v)
    return prof
