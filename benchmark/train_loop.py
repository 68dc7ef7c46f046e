"""The train stage's loop: one seed trained (or resumed, or skipped when complete), phase by phase
and epoch by epoch: the training steps and their log rows (a non-finite loss stops the run), a
checkpoint after every epoch, the val curve, early stopping and the ``best_val`` selection."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmark.checkpoint import CHECKPOINT_FORMAT, best_path, checkpoint_path, selection_path
from benchmark.params import split_model_params, training_profile
from benchmark.shared_trunk import model_backbone
from benchmark.train_config import (autocast, checkpoint_policy, lr_schedule, phase_epochs, precision,
                                    profile_epochs, resolve_model_params, triplets_per_epoch, val_scoring)
from benchmark.train_data import TrainData
from benchmark.train_dist import _device, _Dist, broadcast_flag, parallel, sync_buffers
from benchmark.train_fingerprint import run_fingerprint
from benchmark.train_records import _selection_record, _write_json, log_path, write_log
from benchmark.train_state import _atomic_save, _rng_state, _set_rng_state, load_resume_checkpoint
from benchmark.train_validation import levelled, validation_map


class NonFiniteLoss(FloatingPointError):
    pass


@dataclass
class _Seed:
    """One seed's run: what it was asked for, its model, and what it has recorded so far."""

    dataset: str
    model_name: str
    seed: int
    data: TrainData
    dist: _Dist
    log_rows_before: list[dict]
    prof: dict
    mp: dict  # models.<model>, resolved
    model_kw: dict  # the constructor's arguments
    opt: dict  # the trainer's keys (lr, its schedule, flip, phase_epochs)
    device: torch.device
    ckpt_file: Path
    fingerprint: str
    batch_size: int
    steps_per_epoch: int
    policy: str
    early: dict | None  # {patience, min_delta}: stop the last phase once its val curve levels off
    val_scoring: dict  # how the val curve is scored: the evaluate stage's relevance, gamma, max_classes, no_relevant
    precision: str  # fp32 | bf16 (autocast of the step and the val scoring)
    model: Any = None
    tds: Any = None
    phases: tuple[str, ...] = ()
    phase_of_epoch: list[str] = field(default_factory=list)
    start_epoch: int = 0
    step: int = 0
    rows: list[dict] = field(default_factory=list)
    # best_val bookkeeping (restored on resume): val score per epoch, the best so far
    sel: dict = field(default_factory=lambda: {"scores": {}, "best_epoch": None, "best_score": None})
    ckpt_meta: dict = field(default_factory=dict)
    # {trunk's module path: whether ImageNet weights were loaded} (model.backbone.imagenet_weights)
    imagenet: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def total_epochs(self) -> int:
        return len(self.phase_of_epoch)

    @property
    def lr(self) -> float:
        return float(self.opt.get("lr", 1e-4))

    @property
    def negatives(self) -> str:  # the negative's draw (ASEN: image_uniform; ASEN++: class_uniform)
        return str(self.opt.get("negatives", "image_uniform"))

    @property
    def flip(self) -> bool:  # training mirror augmentation (ASEN: yes; ASEN++'s GlobalTransform: no)
        return bool(self.opt.get("flip", True))

    @property
    def check_every(self) -> int:  # a host sync per step would stall a launch-bound GPU step
        return 1 if not self.cuda else 25

    @property
    def show(self) -> bool:
        return self.dist.main and sys.stderr.isatty()


def train_seed(dataset: str, model_name: str, params: dict, seed: int, data: TrainData, dist: _Dist,
               log_rows_before: list[dict]) -> list[dict]:
    """Train (or resume, or skip) one seed; returns its log rows."""
    run = _plan(dataset, model_name, params, seed, data, dist, log_rows_before)
    ckpt = _resume_checkpoint(run)
    if ckpt is not None and ckpt.get("complete") and selection_path(dataset, model_name, seed).exists():
        if dist.main:
            print(f"[train] {run.ckpt_file}: complete and up to date", file=sys.stderr)
        return ckpt["log"]
    _build(run, params, ckpt)
    for pi, phase in enumerate(run.phases):
        epochs = [e for e in range(run.total_epochs) if run.phase_of_epoch[e] == phase]
        if epochs[-1] < run.start_epoch:
            continue
        ckpt = _train_phase(run, phase, epochs, pi == len(run.phases) - 1, ckpt)
    if dist.main:
        if run.policy == "best_val" and (run.sel["best_epoch"] is None
                                          or not best_path(dataset, model_name, seed).exists()):
            raise RuntimeError(f"{run.ckpt_file}: checkpoint best_val selected no epoch; delete {run.ckpt_file.parent} "
                               "and retrain")
        _write_json({**_selection_record(run.policy, run.sel, run.total_epochs, run.phases[-1]), "recipe": recipe(run),
                     "imagenet_weights": run.imagenet},  # the report's banner reads it (through evaluate)
                    selection_path(dataset, model_name, seed))
    return run.rows


def _plan(dataset: str, model_name: str, params: dict, seed: int, data: TrainData, dist: _Dist,
          log_rows_before: list[dict]) -> _Seed:
    """The seed's settings, resolved and checked."""
    prof = training_profile(params)
    mp = resolve_model_params(params, model_name, dataset)
    # the one split: the model's constructor arguments apart from the trainer's keys (lr, its schedule, ...)
    model_kw, opt = split_model_params(mp)
    policy = checkpoint_policy(prof)
    device = _device(str(prof.get("device", "auto")), dist)
    ckpt_file = checkpoint_path(dataset, model_name, seed)
    fingerprint = run_fingerprint(dataset, model_name, params, seed)
    batch_size = int(prof["batch_size"])
    if batch_size % dist.world:
        raise ValueError(f"train batch_size {batch_size} is not divisible by {dist.world} processes")
    steps_per_epoch = triplets_per_epoch(prof, model_name) // batch_size
    if steps_per_epoch < 1:
        raise ValueError("train.triplets_per_epoch is smaller than batch_size")
    return _Seed(dataset=dataset, model_name=model_name, seed=seed, data=data, dist=dist,
                 log_rows_before=log_rows_before, prof=prof, mp=mp, model_kw=model_kw, opt=opt, device=device,
                 ckpt_file=ckpt_file, fingerprint=fingerprint, batch_size=batch_size,
                 steps_per_epoch=steps_per_epoch, policy=policy, early=prof.get("early_stop"),
                 val_scoring=val_scoring(params), precision=precision(prof))


def _resume_checkpoint(run: _Seed) -> dict | None:
    """The seed's newest readable checkpoint when it is of these params, data and code, else None."""
    ckpt = load_resume_checkpoint(run.ckpt_file, run.dist.main)
    if ckpt is not None and (ckpt.get("fingerprint") != run.fingerprint or ckpt.get("format") != CHECKPOINT_FORMAT):
        if run.dist.main:
            print(f"[train] {run.ckpt_file}: params, data or code changed; training from scratch", file=sys.stderr)
        ckpt = None
    return ckpt


def _build(run: _Seed, params: dict, ckpt: dict | None) -> None:
    """The seeded model, its phases and epochs, the state of ``ckpt`` (resuming), the triplet
    dataset and what every checkpoint of the seed records."""
    from benchmark.loaders import TripletDataset
    from model import build_model

    torch.manual_seed(run.seed)
    backbone = model_backbone(run.prof)  # features:<backbone> when the profile shares a frozen, cached trunk
    build = {"model_name": run.model_name, "classes_per_attribute": run.data.classes_per_attribute,
             "backbone": backbone, "pretrained": bool(run.prof["pretrained"]), "model_params": run.mp}
    run.model = build_model(run.model_name, classes_per_attribute=run.data.classes_per_attribute,
                            backbone=backbone, pretrained=bool(run.prof["pretrained"]), **run.model_kw)
    _check_imagenet(run)
    build["imagenet_weights"] = run.imagenet  # every checkpoint records how its run's trunks started
    run.phases = tuple(run.model.phases)
    per_phase = phase_epochs(run.phases, profile_epochs(run.prof, run.model_name), run.opt, params["train"]["profile"])
    run.phase_of_epoch = [p for p, e in zip(run.phases, per_phase) for _ in range(e)]
    if ckpt is not None:
        run.model.load_state_dict(ckpt["model"])
        run.start_epoch, run.rows = int(ckpt["epoch"]), list(ckpt["log"])
        run.sel = dict(ckpt.get("selection") or run.sel)
        run.sel["scores"] = {int(k): v for k, v in run.sel.get("scores", {}).items()}
        # resumed: the trunks started as the first epoch's run started them, whatever the cache holds now
        run.imagenet = build["imagenet_weights"] = dict(ckpt.get("build", {}).get("imagenet_weights", run.imagenet))
        if run.dist.main:
            print(f"[train] resuming {run.ckpt_file} after epoch {run.start_epoch}/{run.total_epochs}", file=sys.stderr)
    run.model.to(run.device)
    if run.cuda:
        run.model.to(memory_format=torch.channels_last)
    run.tds = TripletDataset(run.data.table, run.data.targets, run.data.annotated)
    run.step = len(run.rows)
    run.ckpt_meta = _checkpoint_meta(run, params, build)
    if run.policy == "best_val" and run.data.val is None:
        raise ValueError("train checkpoint best_val needs TrainData(..., validation=True)")
    if run.early and run.data.val is None:
        raise ValueError("train early_stop needs TrainData(..., validation=True)")


def _check_imagenet(run: _Seed) -> None:
    """Record which trunks loaded ImageNet weights; asked for (``pretrained: true``) and missing
    from the torchvision cache, the run goes on from random weights and says so on every seed."""
    from model.backbone import imagenet_weights

    run.imagenet = imagenet_weights(run.model)
    random = sorted(k for k, v in run.imagenet.items() if not v)
    if run.prof.get("pretrained") and random and run.dist.main:
        print(f"[train] WARNING {run.dataset}/{run.model_name} seed {run.seed}: pretrained: true, but "
              f"{', '.join(random)} start(s) from RANDOM weights: no ImageNet weights were loaded (none in the "
              "torchvision cache, $TORCH_HOME/hub/checkpoints, or none exist for the backbone). Training goes "
              "on; its numbers are not comparable with the paper's (the report says so).", file=sys.stderr)


def _checkpoint_meta(run: _Seed, params: dict, build: dict) -> dict:
    """What every checkpoint of the seed holds besides its weights and state."""
    cpa = run.data.classes_per_attribute
    return {
        "format": CHECKPOINT_FORMAT, "dataset": run.dataset, "model_name": run.model_name, "seed": int(run.seed),
        "fingerprint": run.fingerprint, "build": build, "epochs_total": run.total_epochs,
        "params": {"train": run.prof, "model": run.mp,
                   "maybe_policy": params.get("validate", {}).get("maybe_policy", "negative")},
        "taxonomy": {"classes_per_attribute": cpa, "num_attributes": len(cpa), "num_classes": int(sum(cpa))},
        "image_size": int(run.prof["image_size"]), "world_size": run.dist.world,
        "checkpoint_policy": run.policy, "recipe": recipe(run),
    }


def recipe(run: _Seed) -> dict:
    """The recipe this seed ran, resolved (per-model epochs and triplets, each phase's schedule,
    the negatives' draw, the precision, how the val curve is scored): every checkpoint, each seed's
    selection.json and the run's params_used.json record it."""
    return {"epochs": {p: run.phase_of_epoch.count(p) for p in run.phases},
            "triplets_per_epoch": run.steps_per_epoch * run.batch_size, "batch_size": run.batch_size,
            "lr": run.lr, "lr_schedule": {p: dict(zip(("step_size", "gamma"), lr_schedule(run.opt, p)))
                                          for p in run.phases},
            "negatives": run.negatives, "flip": run.flip, "precision": run.precision,
            "val_scoring": dict(run.val_scoring)}


def _train_phase(run: _Seed, phase: str, epochs: list[int], last: bool, ckpt: dict | None) -> dict | None:
    """The phase's epochs from ``run.start_epoch`` on; returns ``ckpt`` until its RNG state is restored."""
    from torch.optim import Adam
    from torch.optim.lr_scheduler import StepLR

    from model.base import compiled

    run.model.set_phase(phase)
    optimizer = Adam(run.model.param_groups(run.lr), lr=run.lr)
    step_size, gamma = lr_schedule(run.opt, phase)
    scheduler = StepLR(optimizer, step_size=step_size, gamma=gamma)
    if ckpt is not None and run.start_epoch > epochs[0]:  # resuming inside this phase
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt is not None and run.start_epoch > 0:
        _set_rng_state(ckpt["rng"])
        ckpt = None  # restored once
    fwd = compiled(parallel(run.model, run.dist, run.device), run.prof.get("compile"))
    for epoch in epochs:
        if epoch < run.start_epoch:
            continue
        _train_epoch(run, fwd, optimizer, epoch, phase)
        scheduler.step()
        sync_buffers(run.model, run.dist)
        if _end_epoch(run, optimizer, scheduler, epoch, phase, epochs, last):
            break
    return ckpt


def _train_epoch(run: _Seed, fwd, optimizer, epoch: int, phase: str) -> None:
    """The epoch's triplets (a function of seed and epoch), one step per batch, its log rows."""
    from tqdm import tqdm

    from benchmark.loaders import triplet_loader
    from benchmark.sampling import sample_triplets

    run.model.train()
    run.tds.set_triplets(sample_triplets(run.data.index, run.steps_per_epoch * run.batch_size, seed=run.seed,
                                         epoch=epoch, flip=run.flip, negatives=run.negatives))
    loader = triplet_loader(run.tds, batch_size=run.batch_size // run.dist.world,
                            workers=int(run.prof.get("workers", 0)), rank=run.dist.rank,
                            world_size=run.dist.world, pin_memory=run.cuda)
    desc = f"{run.dataset}/{run.model_name} s{run.seed} e{epoch + 1}/{run.total_epochs}"
    bar = tqdm(total=run.steps_per_epoch, desc=desc,
               disable=not run.show, file=sys.stderr, leave=False)
    pending: list[tuple[int, torch.Tensor, list[str], float, float]] = []
    t_last = time.perf_counter()
    for batch in loader:
        names, vals = _step(run, fwd, optimizer, batch)
        now = time.perf_counter()
        ips = 3 * run.batch_size / max(now - t_last, 1e-9)
        t_last = now
        pending.append((run.step, vals, names, optimizer.param_groups[0]["lr"], ips))
        if len(pending) >= run.check_every:
            _flush(run, pending, epoch, phase)
            pending = []
            if run.show:
                r = run.rows[-1]
                bar.set_postfix({k: f"{r[k]:.4g}" for k in names} | {"img/s": f"{ips:.0f}"})
        bar.update(1)
    _flush(run, pending, epoch, phase)
    bar.close()


def _step(run: _Seed, fwd, optimizer, batch) -> tuple[list[str], torch.Tensor]:
    """One optimiser step; the names of the loss terms and their values (on the device, unsynced)."""
    from benchmark.loaders import batch_to_device

    batch = batch_to_device(batch, run.device, channels_last=run.cuda)
    with autocast(run.device, run.precision):  # train.profiles.<p>.precision: fp32 (no autocast) | bf16
        out = fwd(batch)
    loss = out["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    run.step += 1
    names = ["loss"] + sorted(k for k in out if k.startswith("loss_"))
    return names, torch.stack([out[k].detach().float().reshape(()) for k in names])


def _flush(run: _Seed, pending: list, epoch: int, phase: str) -> None:
    """The pending steps as log rows (one host sync); a non-finite loss ends the run."""
    if not pending:
        return
    vals = torch.stack([p[1] for p in pending]).cpu()  # one host sync for the whole buffer
    for (step, _, names, lr, ips), v in zip(pending, vals.tolist()):
        row = {"step": step, "epoch": epoch + 1, "lr": lr, "seed": run.seed, "phase": phase}
        row.update(dict(zip(names, v)))
        run.rows.append(row)
        if not all(math.isfinite(x) for x in v):
            if run.dist.main:
                write_log(run.log_rows_before + run.rows, log_path(run.dataset, run.model_name))
            terms = ", ".join(f"{n}={x}" for n, x in zip(names, v))
            kept = (f"the last good checkpoint is kept: {run.ckpt_file}" if run.ckpt_file.exists()
                    else "no checkpoint was written")
            raise NonFiniteLoss(
                f"{run.dataset}/{run.model_name} seed {run.seed}: non-finite loss at step {step} (epoch {epoch + 1}, "
                f"phase {phase!r}): {terms}; {kept}"
            )


def _end_epoch(run: _Seed, optimizer, scheduler, epoch: int, phase: str, epochs: list[int], last: bool) -> bool:
    """The epoch's val score, early stop, best_val and checkpoint; True when the run stops here."""
    complete = epoch == run.total_epochs - 1
    score, stopped = _score_epoch(run, epoch, epochs, last, complete)
    if run.dist.world > 1 and run.early:  # rank 0 scored: every rank stops with it
        stopped = broadcast_flag(stopped, run.device)
    if stopped:
        complete = True
        run.sel["stopped"] = {"epoch": epoch + 1, "of": run.total_epochs, "patience": int(run.early["patience"]),
                              "min_delta": float(run.early["min_delta"])}
    if run.dist.main and run.policy == "best_val" and last:
        _keep_best(run, epoch, phase, score, complete)
    if run.dist.main:
        _atomic_save({**run.ckpt_meta, "model": run.model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "phase": phase,
                      "rng": _rng_state(), "log": run.rows, "complete": complete,
                      "selection": {**run.sel, "scores": {str(k): v for k, v in run.sel["scores"].items()}}},
                     run.ckpt_file, keep_previous=True)
        write_log(run.log_rows_before + run.rows, log_path(run.dataset, run.model_name))
    return stopped


def _score_epoch(run: _Seed, epoch: int, epochs: list[int], last: bool, complete: bool) -> tuple[float | None, bool]:
    """Rank 0: the convergence record, val MAP@all after every epoch whatever the policy, and
    whether the last phase's curve has levelled off. (None, False) on the other ranks."""
    if not run.dist.main:
        return None, False
    score = validation_map(run.model, run.data.val, run.device, **run.val_scoring, precision=run.precision)
    run.sel["scores"][epoch + 1] = score
    if run.show:
        print(f"[train] {run.dataset}/{run.model_name} seed {run.seed} epoch {epoch + 1}/{run.total_epochs}: "
              f"val MAP@all {score:.2f}", file=sys.stderr)
    stopped = False
    if run.early and last and not complete:  # the last phase's curve has levelled off
        stopped = levelled([run.sel["scores"].get(e + 1) for e in epochs if e <= epoch],
                           int(run.early["patience"]), float(run.early["min_delta"]))
    return score, stopped


def _keep_best(run: _Seed, epoch: int, phase: str, score: float, complete: bool) -> None:
    """ASEN's model_best: scored after every epoch; only the last phase's epochs compete."""
    sel = run.sel
    if math.isfinite(score) and (sel["best_score"] is None or score > sel["best_score"]):
        sel["best_epoch"], sel["best_score"] = epoch + 1, score
    elif sel["best_epoch"] is None and complete:  # no finite score at all: fall back to the last epoch
        sel["best_epoch"], sel["best_score"] = epoch + 1, None
    else:
        return
    _atomic_save({**run.ckpt_meta, "model": run.model.state_dict(), "epoch": epoch + 1, "phase": phase,
                  "complete": True, "selected": "best_val", "val_map_all": sel["best_score"]},
                 best_path(run.dataset, run.model_name, run.seed))
