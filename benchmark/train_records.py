"""The train stage's records besides the checkpoints: where they lie (done.json, the step log, the
val curve, the timing), the step log and val curve as CSV, and each seed's selection.json."""

from __future__ import annotations

import csv
from pathlib import Path

from benchmark.checkpoint import read_selection
from datasets import paths
from datasets.atomic import atomic_path
from datasets.schemas import write_json

_LOG_HEAD = ["step", "epoch", "lr", "loss"]
_LOG_TAIL = ["seed", "phase"]


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
    with atomic_path(val_curve_path(dataset, model)) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["seed", "epoch", "val_map_all"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "val_map_all": "" if r["val_map_all"] is None else f"{r['val_map_all']:.4f}"})



def _write_json(obj, path: Path) -> None:
    write_json(path, obj, sort_keys=True)


def write_log(rows: list[dict], path: Path) -> None:
    """The step log as CSV (atomically): step, epoch, lr, loss, loss_<term>..., seed, phase. No timings:
    a rerun that reproduces the weights reproduces this file byte for byte (timings: timing_path)."""
    terms = sorted({k for r in rows for k in r if k.startswith("loss_")})
    cols = _LOG_HEAD + terms + _LOG_TAIL
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})



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
            "reason": f"the highest val MAP@all (ranked and averaged as the test split is evaluated) over the "
                      f"epochs of phase {final_phase!r}"}

