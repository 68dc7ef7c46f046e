"""Reading params.yaml (``datasets.params.load_params``, validated against ``datasets.params_schema``),
the active training profile, and the schema's resolver of keyed values and its split of a model's
params into constructor and trainer keys."""

from __future__ import annotations

from typing import Any

from datasets.params import ParamsError, load_params
from datasets.params_schema import TRAINER_KEYS, resolve, resolve_model_params, split_model_params

__all__ = ["ParamsError", "TRAINER_KEYS", "load_params", "resolve", "resolve_model_params", "split_model_params",
           "training_profile"]


def training_profile(params: dict[str, Any]) -> dict[str, Any]:
    """The active training profile (train.profiles[train.profile]) merged with train's common keys."""
    train = params["train"]
    prof = dict(train["profiles"][train["profile"]])
    for k, v in train.items():
        if k != "profiles":
            prof.setdefault(k, v)
    return prof
