"""The train stage's run fingerprint: what a seed's weights depend on (the params used, the data
tables, the seed's shared trunk, the training and model code), so that a checkpoint of other
params, data or code is never resumed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from benchmark.params import training_profile
from benchmark.shared_trunk import trunk_path, uses_shared_trunk
from benchmark.train_config import val_scoring
from datasets import paths


def _sha256_file(path: Path, h) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def run_fingerprint(dataset: str, model: str, params: dict, seed: int) -> str:
    """What the weights depend on: params used, the data tables, the training and model code."""
    h = hashlib.sha256()
    used = {
        "dataset": dataset, "model": model, "seed": int(seed),
        # train.processes is how the stage is launched; the world size it gives is recorded below
        "train": {k: v for k, v in training_profile(params).items() if k != "processes"},
        "model_params": params["models"][model],
        "maybe_policy": params.get("validate", {}).get("maybe_policy", "negative"),
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }
    # the val curve (best_val's choice, early stopping's end) is scored as the evaluate stage tests
    used["val_scoring"] = val_scoring(params)
    h.update(json.dumps(used, sort_keys=True, default=str).encode())
    vdir = paths.validated_dir(dataset)
    data_files = [vdir / "images.parquet", vdir / "labels.parquet", vdir / "taxonomy.parquet",
                  paths.splits_path(dataset)]
    if uses_shared_trunk(used["train"]):  # the cached maps are a function of this trunk and the images
        data_files.append(trunk_path(dataset, seed))  # the seed's own trunk
    for p in data_files:
        _sha256_file(p, h)
    root = Path(__file__).resolve().parent.parent
    module = (params["models"][model] or {}).get("module")
    for p in code_files(model, module):
        h.update((p.relative_to(root) if p.is_relative_to(root) else p).as_posix().encode())
        _sha256_file(p, h)
    return h.hexdigest()[:24]


def code_files(model: str, module: str | None = None) -> list[Path]:
    """The code the weights depend on, by the rule of ``benchmark.codehash`` (the one change
    detector): the train stage's import closure and the model's files, which the code stage records
    in ``data/code/stage/benchmark.train.json`` and ``data/code/model/<model>.json``. A model registered
    outside ``model/`` adds the closure of ``module`` (params.yaml's ``models.<model>.module``,
    :func:`benchmark.codehash.external_closure`), or no file without one (the tests' tiny ones)."""
    from benchmark.codehash import code_closure, external_closure, package_data, registered_in, stage_files

    root = Path(__file__).resolve().parent.parent
    files = set(stage_files(root, "benchmark.train"))
    if module is not None:
        files.update(external_closure(root, module)[2])
    elif registered_in(root, model):
        files.update(code_closure(root, model))
    return sorted(files | set(package_data(root, sorted(files))))
