"""Stage `train`: one model on one dataset, one checkpoint per seed, resumable.

    python -m benchmark.train <dataset> <model>
    torchrun --nproc_per_node=K -m benchmark.train <dataset> <model>     (DDP; gloo on CPU, nccl on CUDA)

With ``train.processes: K`` (K > 1) the first command launches the second itself, so `dvc repro`
trains on K GPUs without editing the stage's command.

Reads params ``train`` (the active profile) and ``models.<model>``; per-dataset values such as
``w_p: {deepfashion: 100, ...}`` are resolved to the dataset's number. Writes

    models/<dataset>/<model>/seed<k>/checkpoint.pt   (every epoch, atomically; ``complete`` at the end)
    models/<dataset>/<model>/seed<k>/checkpoint.prev.pt  (the epoch before: the fallback of a corrupt latest)
    models/<dataset>/<model>/seed<k>/best.pt         (``checkpoint: best_val`` only: the best validation epoch)
    models/<dataset>/<model>/seed<k>/selection.json  (which epoch the evaluate stage loads, and why)
    models/<dataset>/<model>/done.json               (when every seed is complete)
    reports/<dataset>/<model>/train_log.csv          (one row per step: step, epoch, lr, loss, loss_<term>...)

A run whose params, data and code are unchanged and whose checkpoints are complete is a no-op; a
killed run resumes from its last epoch and, on the CPU, ends with bitwise the weights of an
uninterrupted one (triplets are a function of (seed, epoch); RNG states are restored). A non-finite
loss stops the run with an error naming the step and the terms; the last good checkpoint stays.

Which checkpoint is evaluated (``train.profiles.<p>.checkpoint``): ``last`` (the final epoch) or
``best_val`` (ASEN's and ASEN++'s ``model_best``: after every epoch of the last phase the model is
scored on the val split, MAP@all of the attribute-level ranking, and the best epoch is kept; a
multi-phase model such as ASEN++ starts its last phase from the previous phase's last epoch, as
the authors' stage 2 resumes stage 1's ``checkpoint.pth.tar``).

Schedules follow the references: ``triplets_per_epoch`` may be keyed by model (ASEN's 100,000
against M3-Net's 40,000); ``models.<m>.lr_schedule`` gives a StepLR (step_size, gamma) per phase
(ASEN++: x0.9 every 3 epochs in stage 1, x0.9 per epoch in stage 2), otherwise x lr_decay per epoch.

Checkpoints hold tensors and plain types only (the numpy and Python RNG states are stored as a
tensor and lists) and are read with ``torch.load(weights_only=True)``: a crafted file cannot run
code. A latest checkpoint that cannot be read (truncated, empty, garbage, or pickling anything but
tensors and plain types) is reported by name and training resumes from the previous one.

For the stages after training: :func:`selected_checkpoint_path`, :func:`read_selection` and
:func:`load_trained_model`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.checkpoint import (  # noqa: F401  (the checkpoint format; re-exported for the tests)
    CHECKPOINT_FORMAT,
    CheckpointError,
    best_path,
    checkpoint_path,
    load_trained_model,
    previous_checkpoint_path,
    read_checkpoint,
    read_selection,
    selected_checkpoint_path,
    selection_path,
)
from benchmark.params import load_params, resolve, split_model_params, training_profile
from benchmark.params import resolve_model_params as resolve_params_of_model
from benchmark.shared_trunk import load_features, model_backbone, trunk_path, uses_shared_trunk
from datasets import paths
from datasets.schemas import write_json

_LOG_HEAD = ["step", "epoch", "lr", "loss"]
_LOG_TAIL = ["seed", "phase"]
_CACHE_BYTES = 1 << 30


# ------------------------------------------------------------------------------ where and what


def checkpoint_paths(dataset: str, model: str, params: dict | None = None) -> list[Path]:
    """One checkpoint per seed of ``train.seeds``, in that order (the evaluate stage's input)."""
    params = load_params() if params is None else params
    return [checkpoint_path(dataset, model, s) for s in params["train"]["seeds"]]


CHECKPOINT_POLICIES = ("last", "best_val")
PREPROCESSING = ("squash", "resize_crop")


def checkpoint_policy(prof: dict) -> str:
    """The profile's ``checkpoint`` policy: ``last`` (default) or ``best_val``."""
    policy = prof.get("checkpoint", "last")
    if policy not in CHECKPOINT_POLICIES:
        raise ValueError(f"train checkpoint must be one of {CHECKPOINT_POLICIES}, got {policy!r}")
    return policy


def triplets_per_epoch(prof: dict, model_name: str) -> int:
    """The profile's ``triplets_per_epoch``: a number, or a mapping {<model>: n, default: n}."""
    spec = prof["triplets_per_epoch"]
    if isinstance(spec, dict):
        if model_name not in spec and "default" not in spec:
            raise ValueError(f"train triplets_per_epoch {spec} names neither {model_name!r} nor a default")
        spec = spec.get(model_name, spec.get("default"))
    return int(spec)


def lr_schedule(model_params: dict, phase: str) -> tuple[int, float]:
    """(step_size, gamma) of the phase's StepLR: ``lr_schedule: {<phase>: {step_size, gamma}}`` when the
    model has one (ASEN++), else (1, lr_decay): x lr_decay after every epoch."""
    spec = model_params.get("lr_schedule")
    if spec is not None:
        if phase not in spec:
            raise ValueError(f"lr_schedule {spec} has no entry for phase {phase!r}")
        return int(spec[phase].get("step_size", 1)), float(spec[phase]["gamma"])
    return 1, float(model_params.get("lr_decay", 1.0))


def done_path(dataset: str, model: str) -> Path:
    return paths.model_dir(dataset, model) / "done.json"


def timing_path(dataset: str, model: str) -> Path:
    """Wall-clock figures of the last run (seconds, images/s): tracked by neither DVC nor git."""
    return paths.model_reports_dir(dataset, model) / "train_timing.json"


def log_path(dataset: str, model: str) -> Path:
    return paths.model_reports_dir(dataset, model) / "train_log.csv"


def val_curve_path(dataset: str, model: str) -> Path:
    """Val MAP@all after every epoch, per seed (a DVC plot): where the head's curve levels off."""
    return paths.model_reports_dir(dataset, model) / "val_curve.csv"


def write_val_curve(dataset: str, model: str, seeds: list[int]) -> None:
    """val_curve.csv (seed, epoch, val_map_all) from each seed's selection.json."""
    rows = []
    for s in seeds:
        sel = read_selection(dataset, model, s)
        rows += [{"seed": int(s), "epoch": int(e), "val_map_all": v} for e, v in
                 sorted(((int(e), v) for e, v in sel.get("val_scores", {}).items()))]
    path = val_curve_path(dataset, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["seed", "epoch", "val_map_all"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "val_map_all": "" if r["val_map_all"] is None else f"{r['val_map_all']:.4f}"})
    os.replace(tmp, path)


def resolve_model_params(params: dict, model: str, dataset: str) -> dict[str, Any]:
    """models.<model> with every mapping keyed by dataset (``w_p: {deepfashion: 100, ...}``), by
    training profile (``lr: {twin: 2.0e-4, paper: 1.0e-4}``) or by backbone (``local_backbone``)
    resolved to this run's value, by ``datasets.params_schema.resolve`` (the one resolver).

    One source for each value: the twin profile's smaller heads and larger learning rate are
    written beside the paper's in ``models.<model>``, so ``dvc exp run -S models.asen.lr.twin=3e-4``
    changes what the twin run uses, and nothing in ``train.profiles`` can override it silently.
    """
    return resolve_params_of_model(params, model, dataset)


def phase_epochs(phases: tuple[str, ...], epochs: int, model_params: dict, profile: str | None = None) -> list[int]:
    """Epochs of each phase. models.<model>.phase_epochs, when present, replaces the profile's
    epochs: a list in phase order, a {phase: n} mapping, or either of those keyed by the train
    profile name ({twin: [1, 1], paper: [50, 20]}). Otherwise the profile's epochs are split evenly
    (the remainder to the later phases). Every phase gets at least one epoch."""
    spec = model_params.get("phase_epochs")
    if isinstance(spec, dict) and profile is not None and profile in spec:
        spec = resolve(spec, profile=profile, profiles=tuple(spec))  # a mapping naming the profile is keyed by it
    if spec is None:
        base, rem = divmod(int(epochs), len(phases))
        out = [base + (1 if i >= len(phases) - rem else 0) for i in range(len(phases))]
    elif isinstance(spec, dict):
        missing = [p for p in phases if p not in spec]
        if missing:
            raise ValueError(f"phase_epochs {spec} names neither the profile {profile!r} nor the phases {phases}")
        out = [int(spec[p]) for p in phases]
    else:
        out = [int(x) for x in spec]
        if len(out) != len(phases):
            raise ValueError(f"phase_epochs {spec} does not match the phases {phases}")
    return [max(1, e) for e in out]


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
    if checkpoint_policy(used["train"]) == "best_val":  # the selection reads the val split's relevance
        used["val_relevance"] = params.get("evaluate", {}).get("relevance", "all")
    h.update(json.dumps(used, sort_keys=True, default=str).encode())
    vdir = paths.validated_dir(dataset)
    data_files = [vdir / "images.parquet", vdir / "labels.parquet", vdir / "taxonomy.parquet", paths.splits_path(dataset)]
    if uses_shared_trunk(used["train"]):  # the cached maps are a function of this trunk and the images
        data_files.append(trunk_path(dataset, seed))  # the seed's own trunk
    for p in data_files:
        _sha256_file(p, h)
    root = Path(__file__).resolve().parent.parent
    for p in code_files(model):
        h.update(p.relative_to(root).as_posix().encode())
        _sha256_file(p, h)
    return h.hexdigest()[:24]


def code_files(model: str) -> list[Path]:
    """The code the weights depend on, by the rule of ``benchmark.codehash`` (the one change
    detector): the train stage's import closure and the model's files, which the code stage records
    in ``data/code/stage/benchmark.train.json`` and ``data/code/model/<model>.json``. A model registered
    outside ``model/`` (the tests' tiny ones) adds no file."""
    from benchmark.codehash import code_closure, package_data, registered_in, stage_files

    root = Path(__file__).resolve().parent.parent
    files = set(stage_files(root, "benchmark.train"))
    if registered_in(root, model):
        files.update(code_closure(root, model))
    return sorted(files | set(package_data(root, sorted(files))))


# ------------------------------------------------------------------------------------ data


class TrainData:
    """The training split's images, label matrix and triplet index."""

    def __init__(self, dataset: str, image_size: int, maybe_policy: str, *, cache: bool,
                 preprocess: str = "squash", validation: bool = False, features=None):
        """``features``: (maps, ids) of the shared trunk (``benchmark.shared_trunk.load_features``):
        the training and val items are then those cached maps instead of decoded images."""
        from benchmark.loaders import (FeatureTable, ImageFolderTable, classes_per_attribute, dense_annotation,
                                       label_matrix)
        from benchmark.sampling import build_triplet_index
        from datasets.schemas import ImagesSchema, LabelsSchema, SplitsSchema, TaxonomySchema, read_table

        vdir = paths.validated_dir(dataset)
        images = read_table(vdir / "images.parquet", ImagesSchema)
        labels = read_table(vdir / "labels.parquet", LabelsSchema)
        self.taxonomy = read_table(vdir / "taxonomy.parquet", TaxonomySchema)
        splits = read_table(paths.splits_path(dataset), SplitsSchema)
        train_ids = np.intersect1d(
            splits.filter(splits["split"] == "train")["image_id"].to_numpy(), images["image_id"].to_numpy()
        )
        if len(train_ids) == 0:
            raise ValueError(f"{paths.splits_path(dataset)}: no training images")
        self.classes_per_attribute = classes_per_attribute(self.taxonomy)
        self.targets, self.annotated = label_matrix(labels, self.taxonomy, train_ids, maybe_policy,
                                                    dense=dense_annotation(dataset))
        # decoded images are kept in memory only when they fit easily (the twins: a few MB)
        cache = cache and len(train_ids) * image_size * image_size * 3 <= _CACHE_BYTES
        if features is not None:
            self.table = FeatureTable(*features, image_ids=train_ids)
        else:
            self.table = ImageFolderTable(images, paths.raw_dir(dataset), image_size, image_ids=train_ids, cache=cache,
                                          preprocess=preprocess)
        self.index = build_triplet_index(self.targets.numpy(), self.annotated.numpy(), self.classes_per_attribute)
        self.val = None
        if validation:  # best_val: the val split's query and candidate images, decoded once
            val = splits.filter((splits["split"] == "val") & splits["role"].is_in(["query", "candidate"]))
            val = val.filter(val["image_id"].is_in(images["image_id"].to_list())).sort("image_id")
            if val.height == 0:
                raise ValueError(f"{paths.splits_path(dataset)}: checkpoint best_val needs val queries and candidates")
            val_ids = val["image_id"].to_numpy()
            val_labels, _ = label_matrix(labels, self.taxonomy, val_ids, maybe_policy, dense=dense_annotation(dataset))
            if features is not None:
                val_table = FeatureTable(*features, image_ids=val_ids)
            else:
                val_table = ImageFolderTable(images, paths.raw_dir(dataset), image_size, image_ids=val_ids,
                                             cache=len(val_ids) * image_size * image_size * 3 <= _CACHE_BYTES,
                                             preprocess=preprocess)
            self.val = ValSet(
                table=val_table,
                labels=val_labels, is_query=torch.from_numpy((val["role"] == "query").to_numpy()),
                classes_per_attribute=self.classes_per_attribute)


class ValSet:
    """The val split's images and labels, for the ``best_val`` checkpoint selection."""

    def __init__(self, *, table, labels: torch.Tensor, is_query: torch.Tensor, classes_per_attribute: list[int]):
        self.table, self.labels, self.is_query = table, labels.bool(), is_query.bool()
        self.classes_per_attribute = list(classes_per_attribute)


@torch.no_grad()
def validation_map(model, val: ValSet, device: torch.device, *, relevance_mode: str = "all",
                   batch_size: int = 64) -> float:
    """MAP@all (%) of the attribute-level ranking on the val split: for each attribute n, every val
    query image positive in n against every val candidate positive in n, relevance ``relevance_mode``;
    queries with no relevant candidate are left out; the mean over all queries (query-weighted, the
    overall figure of the evaluate stage). NaN when no query has a relevant candidate."""
    from benchmark.loaders import image_loader, network_input
    from benchmark.metrics import retrieval_metrics
    from benchmark.retrieval import attribute_similarity, relevance

    was_training = model.training
    model.eval()
    embs = []
    for images, _ in image_loader(val.table, batch_size=batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            x = network_input(images.to(device))  # the attribute ranking: no pair's class level is ranked
            none = torch.zeros(len(x), len(val.classes_per_attribute), dtype=torch.bool, device=x.device)
            embs.append(model.embed(x, ranked=none).attribute.float().cpu())
    model.train(was_training)
    emb = torch.cat(embs)  # (n, N, D)
    aps = []
    start = 0
    for n, m_n in enumerate(val.classes_per_attribute):
        lab = val.labels[:, start:start + m_n]
        start += m_n
        pos = lab.any(1)
        q, c = torch.nonzero(pos & val.is_query).flatten(), torch.nonzero(pos & ~val.is_query).flatten()
        if len(q) == 0 or len(c) == 0:
            continue
        per_q = retrieval_metrics(attribute_similarity(emb[q, n], emb[c, n]), relevance(lab[q], lab[c], relevance_mode))
        aps.append(per_q["ap_all"].double())
    ap = torch.cat(aps) if aps else torch.zeros(0, dtype=torch.float64)
    ap = ap[~torch.isnan(ap)]
    return float(100.0 * ap.mean()) if len(ap) else float("nan")


def levelled(scores: list[float], patience: int, min_delta: float) -> bool:
    """Early stopping on the val curve (one phase's scores, in epoch order): True when the last
    ``patience`` epochs did not raise the best score of the epochs before them by more than
    ``min_delta`` (points of MAP@all). A non-finite score counts as no score."""
    vals = [v if v is not None and math.isfinite(v) else -math.inf for v in scores]
    if len(vals) <= patience:
        return False
    return max(vals[-patience:]) <= max(vals[:-patience]) + min_delta


def _selection_record(policy: str, sel: dict, total_epochs: int, final_phase: str) -> dict:
    """selection.json: deterministic (no timestamps), what the evaluate stage loads and why."""
    scores = {str(k): v for k, v in sorted(sel["scores"].items())}  # every epoch's val MAP@all: the curve
    stopped = sel.get("stopped")  # early_stop: the epoch after which the curve had levelled off
    run = {"epochs_run": stopped["epoch"] if stopped else total_epochs, "max_epochs": total_epochs,
           "early_stop": stopped}
    if policy == "last":
        last_epoch = run["epochs_run"]
        return {"policy": "last", "epoch": last_epoch, "phase": final_phase, "file": "checkpoint.pt",
                "val_map_all": sel["scores"].get(last_epoch), "val_scores": scores, **run,
                "reason": "the last epoch (train checkpoint: last)"}
    return {"policy": "best_val", "epoch": sel["best_epoch"], "phase": final_phase, "file": "best.pt",
            "val_map_all": sel["best_score"], "val_scores": scores, **run,
            "reason": f"the highest val MAP@all (attribute-level ranking) over the epochs of phase {final_phase!r}"}


# ------------------------------------------------------------------------------------ training


class _Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def _device(setting: str, dist: _Dist) -> torch.device:
    if setting not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device must be auto|cpu|cuda, got {setting!r}")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    if keep_previous and path.exists():
        prev = previous_checkpoint_path(path)
        prev.unlink(missing_ok=True)
        try:
            os.link(path, prev)  # both in the stage's own folder
        except OSError:
            import shutil

            shutil.copyfile(path, prev)
    os.replace(tmp, path)


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
            tmp = path.with_name(path.name + ".tmp")
            import shutil

            shutil.copyfile(prev, tmp)
            os.replace(tmp, path)
            print(f"[train] resuming from the previous checkpoint {prev}", file=sys.stderr)
        else:
            path.unlink(missing_ok=True)
            print(f"[train] no readable checkpoint for {path}: training from scratch", file=sys.stderr)
    return ckpt


def _write_json(obj, path: Path) -> None:
    write_json(path, obj, sort_keys=True)


def write_log(rows: list[dict], path: Path) -> None:
    """The step log as CSV (atomically): step, epoch, lr, loss, loss_<term>..., seed, phase. No timings:
    a rerun that reproduces the weights reproduces this file byte for byte (timings: timing_path)."""
    terms = sorted({k for r in rows for k in r if k.startswith("loss_")})
    cols = _LOG_HEAD + terms + _LOG_TAIL
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    os.replace(tmp, path)


class NonFiniteLoss(FloatingPointError):
    pass


def train_seed(dataset: str, model_name: str, params: dict, seed: int, data: TrainData, dist: _Dist,
               log_rows_before: list[dict]) -> list[dict]:
    """Train (or resume, or skip) one seed; returns its log rows."""
    from torch.optim import Adam
    from torch.optim.lr_scheduler import StepLR

    from benchmark.loaders import TripletDataset, batch_to_device, triplet_loader
    from benchmark.sampling import sample_triplets
    from model import build_model
    from model.base import compiled

    prof = training_profile(params)
    mp = resolve_model_params(params, model_name, dataset)
    # the one split: the model's constructor arguments apart from the trainer's keys (lr, its schedule, ...)
    model_kw, opt = split_model_params(mp)
    lr = float(opt.get("lr", 1e-4))
    policy = checkpoint_policy(prof)
    flip = bool(opt.get("flip", True))  # training mirror augmentation (ASEN: yes; ASEN++'s GlobalTransform: no)
    device = _device(str(prof.get("device", "auto")), dist)
    cuda = device.type == "cuda"
    ckpt_file = checkpoint_path(dataset, model_name, seed)
    fingerprint = run_fingerprint(dataset, model_name, params, seed)

    batch_size = int(prof["batch_size"])
    if batch_size % dist.world:
        raise ValueError(f"train batch_size {batch_size} is not divisible by {dist.world} processes")
    steps_per_epoch = triplets_per_epoch(prof, model_name) // batch_size
    if steps_per_epoch < 1:
        raise ValueError("train.triplets_per_epoch is smaller than batch_size")

    # --- resume or start
    ckpt = load_resume_checkpoint(ckpt_file, dist.main)
    if ckpt is not None:
        if ckpt.get("fingerprint") != fingerprint or ckpt.get("format") != CHECKPOINT_FORMAT:
            if dist.main:
                print(f"[train] {ckpt_file}: params, data or code changed; training from scratch", file=sys.stderr)
            ckpt = None
        elif ckpt.get("complete") and selection_path(dataset, model_name, seed).exists():
            if dist.main:
                print(f"[train] {ckpt_file}: complete and up to date", file=sys.stderr)
            return ckpt["log"]

    torch.manual_seed(seed)
    backbone = model_backbone(prof)  # features:<backbone> when the profile shares a frozen, cached trunk
    build = {"model_name": model_name, "classes_per_attribute": data.classes_per_attribute,
             "backbone": backbone, "pretrained": bool(prof["pretrained"]), "model_params": mp}
    model = build_model(model_name, classes_per_attribute=data.classes_per_attribute,
                        backbone=backbone, pretrained=bool(prof["pretrained"]), **model_kw)
    phases = tuple(model.phases)
    per_phase = phase_epochs(phases, int(prof["epochs"]), opt, params["train"]["profile"])
    phase_of_epoch = [p for p, e in zip(phases, per_phase) for _ in range(e)]
    total_epochs = len(phase_of_epoch)
    start_epoch, rows = 0, []
    # best_val bookkeeping (restored on resume): val score per epoch of the last phase, the best so far
    sel = {"scores": {}, "best_epoch": None, "best_score": None}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        start_epoch, rows = int(ckpt["epoch"]), list(ckpt["log"])
        sel = dict(ckpt.get("selection") or sel)
        sel["scores"] = {int(k): v for k, v in sel.get("scores", {}).items()}
        if dist.main:
            print(f"[train] resuming {ckpt_file} after epoch {start_epoch}/{total_epochs}", file=sys.stderr)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)

    tds = TripletDataset(data.table, data.targets, data.annotated)
    step = len(rows)
    ckpt_meta = {
        "format": CHECKPOINT_FORMAT, "dataset": dataset, "model_name": model_name, "seed": int(seed),
        "fingerprint": fingerprint, "build": build, "epochs_total": total_epochs,
        "params": {"train": prof, "model": mp,
                   "maybe_policy": params.get("validate", {}).get("maybe_policy", "negative")},
        "taxonomy": {"classes_per_attribute": data.classes_per_attribute,
                     "num_attributes": len(data.classes_per_attribute),
                     "num_classes": int(sum(data.classes_per_attribute))},
        "image_size": int(prof["image_size"]), "world_size": dist.world,
        "checkpoint_policy": policy,
    }
    if policy == "best_val" and data.val is None:
        raise ValueError("train checkpoint best_val needs TrainData(..., validation=True)")
    val_relevance = params.get("evaluate", {}).get("relevance", "all")
    early = prof.get("early_stop")  # {patience, min_delta}: stop the last phase once its val curve levels off
    if early and data.val is None:
        raise ValueError("train early_stop needs TrainData(..., validation=True)")
    check_every = 1 if not cuda else 25  # a host sync per step would stall a launch-bound GPU step
    show = dist.main and sys.stderr.isatty()

    for pi, phase in enumerate(phases):
        epochs = [e for e in range(total_epochs) if phase_of_epoch[e] == phase]
        if epochs[-1] < start_epoch:
            continue
        model.set_phase(phase)
        optimizer = Adam(model.param_groups(lr), lr=lr)
        step_size, gamma = lr_schedule(opt, phase)
        scheduler = StepLR(optimizer, step_size=step_size, gamma=gamma)
        if ckpt is not None and start_epoch > epochs[0]:  # resuming inside this phase
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt is not None and start_epoch > 0:
            _set_rng_state(ckpt["rng"])
            ckpt = None  # restored once
        net = model
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(model, device_ids=[device.index] if cuda else None, find_unused_parameters=True)
        fwd = compiled(net, prof.get("compile"))

        for epoch in epochs:
            if epoch < start_epoch:
                continue
            model.train()
            tds.set_triplets(sample_triplets(data.index, steps_per_epoch * batch_size, seed=seed, epoch=epoch,
                                             flip=flip))
            loader = triplet_loader(tds, batch_size=batch_size // dist.world, workers=int(prof.get("workers", 0)),
                                    rank=dist.rank, world_size=dist.world, pin_memory=cuda)
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"{dataset}/{model_name} s{seed} e{epoch + 1}/{total_epochs}",
                       disable=not show, file=sys.stderr, leave=False)
            pending: list[tuple[int, torch.Tensor, list[str], float, float]] = []
            t_last = time.perf_counter()
            for batch in loader:
                batch = batch_to_device(batch, device, channels_last=cuda)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                    out = fwd(batch)
                loss = out["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                names = ["loss"] + sorted(k for k in out if k.startswith("loss_"))
                vals = torch.stack([out[k].detach().float().reshape(()) for k in names])
                now = time.perf_counter()
                ips = 3 * batch_size / max(now - t_last, 1e-9)
                t_last = now
                pending.append((step, vals, names, optimizer.param_groups[0]["lr"], ips))
                if len(pending) >= check_every:
                    _flush(pending, rows, epoch, seed, phase, dataset, model_name, ckpt_file, dist, log_rows_before)
                    pending = []
                    if show:
                        r = rows[-1]
                        bar.set_postfix({k: f"{r[k]:.4g}" for k in names} | {"img/s": f"{ips:.0f}"})
                bar.update(1)
            _flush(pending, rows, epoch, seed, phase, dataset, model_name, ckpt_file, dist, log_rows_before)
            bar.close()
            scheduler.step()
            if dist.world > 1:  # BN statistics and EMA buffers: every rank ends the epoch with rank 0's
                import torch.distributed as tdist

                for b in model.buffers():
                    tdist.broadcast(b, 0)
            complete = epoch == total_epochs - 1
            stopped = False
            score = None
            if dist.main:  # the convergence record: val MAP@all after every epoch, whatever the policy
                score = validation_map(model, data.val, device, relevance_mode=val_relevance)
                sel["scores"][epoch + 1] = score
                if show:
                    print(f"[train] {dataset}/{model_name} seed {seed} epoch {epoch + 1}/{total_epochs}: "
                          f"val MAP@all {score:.2f}", file=sys.stderr)
                if early and pi == len(phases) - 1 and not complete:  # the last phase's curve has levelled off
                    stopped = levelled([sel["scores"].get(e + 1) for e in epochs if e <= epoch],
                                       int(early["patience"]), float(early["min_delta"]))
            if dist.world > 1 and early:  # rank 0 scored: every rank stops with it
                import torch.distributed as tdist

                flag = torch.tensor([int(stopped)], device=device)
                tdist.broadcast(flag, 0)
                stopped = bool(flag.item())
            if stopped:
                complete = True
                sel["stopped"] = {"epoch": epoch + 1, "of": total_epochs, "patience": int(early["patience"]),
                                  "min_delta": float(early["min_delta"])}
            if dist.main and policy == "best_val" and pi == len(phases) - 1:
                # ASEN's model_best: scored after every epoch; only the last phase's epochs compete
                if math.isfinite(score) and (sel["best_score"] is None or score > sel["best_score"]):
                    sel["best_epoch"], sel["best_score"] = epoch + 1, score
                    _atomic_save({**ckpt_meta, "model": model.state_dict(), "epoch": epoch + 1, "phase": phase,
                                  "complete": True, "selected": "best_val", "val_map_all": score},
                                 best_path(dataset, model_name, seed))
                elif sel["best_epoch"] is None and complete:  # no finite score at all: fall back to the last epoch
                    sel["best_epoch"], sel["best_score"] = epoch + 1, None
                    _atomic_save({**ckpt_meta, "model": model.state_dict(), "epoch": epoch + 1, "phase": phase,
                                  "complete": True, "selected": "best_val", "val_map_all": None},
                                 best_path(dataset, model_name, seed))
            if dist.main:
                _atomic_save({**ckpt_meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "phase": phase,
                              "rng": _rng_state(), "log": rows, "complete": complete,
                              "selection": {**sel, "scores": {str(k): v for k, v in sel["scores"].items()}}},
                             ckpt_file, keep_previous=True)
                write_log(log_rows_before + rows, log_path(dataset, model_name))
            if stopped:
                break
    if dist.main:
        if policy == "best_val" and (sel["best_epoch"] is None or not best_path(dataset, model_name, seed).exists()):
            raise RuntimeError(f"{ckpt_file}: checkpoint best_val selected no epoch; delete {ckpt_file.parent} and retrain")
        _write_json(_selection_record(policy, sel, total_epochs, phases[-1]), selection_path(dataset, model_name, seed))
    return rows


def _flush(pending, rows, epoch, seed, phase, dataset, model_name, ckpt_file, dist, log_rows_before) -> None:
    if not pending:
        return
    vals = torch.stack([p[1] for p in pending]).cpu()  # one host sync for the whole buffer
    for (step, _, names, lr, ips), v in zip(pending, vals.tolist()):
        row = {"step": step, "epoch": epoch + 1, "lr": lr, "seed": seed, "phase": phase}
        row.update(dict(zip(names, v)))
        rows.append(row)
        if not all(math.isfinite(x) for x in v):
            if dist.main:
                write_log(log_rows_before + rows, log_path(dataset, model_name))
            terms = ", ".join(f"{n}={x}" for n, x in zip(names, v))
            kept = f"the last good checkpoint is kept: {ckpt_file}" if ckpt_file.exists() else "no checkpoint was written"
            raise NonFiniteLoss(
                f"{dataset}/{model_name} seed {seed}: non-finite loss at step {step} (epoch {epoch + 1}, "
                f"phase {phase!r}): {terms}; {kept}"
            )


def run(dataset: str, model_name: str, params: dict) -> int:
    dist = _Dist()
    prof = training_profile(params)
    seeds = [int(s) for s in prof["seeds"]]
    done = done_path(dataset, model_name)
    prints = [run_fingerprint(dataset, model_name, params, s) for s in seeds]
    if prof.get("threads"):  # intra-op threads (CPU); 0/absent: torch's default
        torch.set_num_threads(int(prof["threads"]))
    if done.exists():
        try:
            d = json.loads(done.read_text())
        except (OSError, ValueError):
            d = {}  # an unreadable done.json: not done
        if isinstance(d, dict) and d.get("fingerprints") == prints and all(
                checkpoint_path(dataset, model_name, s).exists() and selection_path(dataset, model_name, s).exists()
                for s in seeds):
            try:
                # DVC deletes the (unpersisted) log before running the stage: write it back from the checkpoints
                rows = [r for s in seeds for r in read_checkpoint(checkpoint_path(dataset, model_name, s))["log"]]
            except CheckpointError as e:
                rows = None
                if dist.main:
                    print(f"[train] {e}: training again", file=sys.stderr)
            if rows is not None:
                if dist.main:
                    write_log(rows, log_path(dataset, model_name))
                    write_val_curve(dataset, model_name, seeds)
                    print(f"[train] {dataset}/{model_name}: up to date ({done})", file=sys.stderr)
                return 0
    if dist.world > 1:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            backend = "nccl" if _device(str(prof.get("device", "auto")), dist).type == "cuda" else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(dist.local_rank)
            tdist.init_process_group(backend=backend)
    if dist.main and done.exists():
        done.unlink()
    t0 = time.perf_counter()
    image_size = int(prof["image_size"])
    workers = int(prof.get("workers", 0))
    preprocess = prof.get("preprocess", "squash")
    if preprocess not in PREPROCESSING:
        raise ValueError(f"train preprocess must be one of {PREPROCESSING}, got {preprocess!r}")
    all_rows: list[dict] = []
    data = None
    for s in seeds:
        if data is None or uses_shared_trunk(prof):  # under a shared trunk, seed k trains on trunk k's maps
            data = TrainData(dataset, image_size, params.get("validate", {}).get("maybe_policy", "negative"),
                             cache=workers == 0, preprocess=preprocess, validation=True,
                             features=load_features(dataset, s, mmap=False) if uses_shared_trunk(prof) else None)
        all_rows += train_seed(dataset, model_name, params, s, data, dist, list(all_rows))
    if dist.main:
        write_log(all_rows, log_path(dataset, model_name))
        write_val_curve(dataset, model_name, seeds)
        # what this run used, resolved (profile- and dataset-keyed values): the record of a `dvc exp run -S ...`
        _write_json({"model_params": resolve_model_params(params, model_name, dataset), "train": training_profile(params)},
                    paths.model_dir(dataset, model_name) / "params_used.json")
        _write_json({"dataset": dataset, "model": model_name, "seeds": seeds, "fingerprints": prints,
                     "checkpoints": [str(checkpoint_path(dataset, model_name, s)) for s in seeds],
                     "steps": len(all_rows)}, done)  # no timing in a DVC output: the same weights, the same bytes
        seconds = time.perf_counter() - t0
        _write_json({"seconds": round(seconds, 2), "steps": len(all_rows),
                     "images_per_s": round(3 * int(prof["batch_size"]) * len(all_rows) / max(seconds, 1e-9), 1)},
                    timing_path(dataset, model_name))
        print(f"[train] {dataset}/{model_name}: {len(all_rows)} steps in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    return 0


def torchrun_command(dataset: str, model: str, params_path: str, processes: int) -> list[str]:
    """The torchrun line that runs this stage in ``processes`` processes on this machine (a free
    rendezvous port, so two stages can run side by side)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return launcher + [f"--nproc_per_node={int(processes)}", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0",
                       "-m", "benchmark.train", dataset, model, "--params", str(params_path)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.train", description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("model")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    processes = int(params["train"].get("processes", 1))
    if processes < 1:
        raise ValueError(f"{args.params}: train.processes must be >= 1, got {processes}")
    if processes > 1 and "WORLD_SIZE" not in os.environ:  # not yet under torchrun: launch it
        import subprocess

        return subprocess.call(torchrun_command(args.dataset, args.model, args.params, processes))
    return run(args.dataset, args.model, params)


if __name__ == "__main__":
    sys.exit(main())
