"""Reading params.yaml (``datasets.params.load_params``) and the active training profile."""

from __future__ import annotations

from typing import Any

from datasets.params import ParamsError, load_params

__all__ = ["ParamsError", "load_params", "training_profile"]


def training_profile(params: dict[str, Any]) -> dict[str, Any]:
    """The active training profile (train.profiles[train.profile]) merged with train's common keys."""
    train = params["train"]
    prof = dict(train["profiles"][train["profile"]])
    for k, v in train.items():
        if k != "profiles":
            prof.setdefault(k, v)
    return prof
