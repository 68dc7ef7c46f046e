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
    models/<dataset>/<model>/card.json               (the model card: parameters, FLOPs per image, embedding
                                                      size, seconds per seed, reference; benchmark/train_card.py)
    reports/<dataset>/<model>/card.json              (the same bytes, committed)
    reports/<dataset>/<model>/train_log.csv          (one row per step: step, epoch, lr, loss, loss_<term>...)

A run whose params, data and code are unchanged and whose checkpoints are complete is a no-op; a
killed run resumes from its last epoch and, on the CPU, ends with bitwise the weights of an
uninterrupted one (triplets are a function of (seed, epoch); RNG states are restored). A non-finite
loss stops the run with an error naming the step and the terms; the last good checkpoint stays.

Which checkpoint is evaluated (``train.profiles.<p>.checkpoint``): ``last`` (the final epoch) or
``best_val`` (ASEN's and ASEN++'s ``model_best``: after every epoch of the last phase the model is
scored on the val split, MAP@all ranked as the evaluate stage tests the model (the
multi-granularity ranking at ``evaluate.gamma`` for M3-Net and MODC, ``evaluate.no_relevant``), and
the best epoch is kept; a
multi-phase model such as ASEN++ starts its last phase from the previous phase's last epoch, as
the authors' stage 2 resumes stage 1's ``checkpoint.pth.tar``).

Schedules follow the references: ``epochs`` and ``triplets_per_epoch`` may be keyed by model (the
paper profile: ASEN 200 epochs of 100,000 triplets, as its ``main.py``; ASEN_v2 50 of 100,000, its
README recipe; M3-Net and MODC 50 of 40,000, 50 being the suite's choice: the paper gives no epoch
count); ``models.<m>.lr_schedule`` gives a StepLR (step_size, gamma) per phase (ASEN: x0.985 per
epoch; ASEN_v2: x0.9 every 3 epochs; ASEN++: x0.9 every 3 epochs in stage 1, x0.9 per epoch in
stage 2), otherwise x lr_decay per epoch (M3-Net, MODC); ``models.<m>.negatives`` says how a
triplet's negative is drawn (ASEN++: its class uniformly, then an image of it). The step and the val
scoring run in ``train.profiles.<p>.precision`` (fp32, or bf16 autocast).

Checkpoints hold tensors and plain types only (the numpy and Python RNG states are stored as a
tensor and lists) and are read with ``torch.load(weights_only=True)``: a crafted file cannot run
code. A latest checkpoint that cannot be read (truncated, empty, garbage, or pickling anything but
tensors and plain types) is reported by name and training resumes from the previous one.

The stage is split by job (this module: the run over the seeds, and `main`): `train_config` (the
settings), `train_fingerprint` (what the weights depend on), `train_data` (the training and val
items), `train_validation` (val MAP@all, early stopping), `train_state` (checkpoint and RNG I/O),
`train_records` (the log, val curve and selection files), `train_dist` (processes, DDP) and
`train_loop` (one seed's epochs). Their public names are importable from here.

For the stages after training: :func:`selected_checkpoint_path`, :func:`read_selection` and
:func:`load_trained_model`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

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
from benchmark.params import load_params, training_profile
from benchmark.shared_trunk import load_features, uses_shared_trunk
from benchmark.train_card import restore_card, write_card
from benchmark.train_config import (  # noqa: F401  (re-exported)
    CHECKPOINT_POLICIES,
    PRECISIONS,
    PREPROCESSING,
    checkpoint_paths,
    checkpoint_policy,
    lr_schedule,
    phase_epochs,
    precision,
    preprocessing,
    profile_epochs,
    resolve_model_params,
    triplets_per_epoch,
    val_scoring,
)
from benchmark.train_data import TrainData, ValSet  # noqa: F401  (re-exported)
from benchmark.train_dist import _device, _Dist, close_processes, init_processes, torchrun_command  # noqa: F401
from benchmark.train_fingerprint import code_files, run_fingerprint  # noqa: F401  (re-exported)
from benchmark.train_loop import NonFiniteLoss, train_seed  # noqa: F401  (re-exported)
from benchmark.train_records import (  # noqa: F401  (re-exported)
    _write_json,
    done_path,
    log_path,
    timing_path,
    val_curve_path,
    write_log,
    write_val_curve,
)
from benchmark.train_state import _atomic_save, _rng_state, _set_rng_state, load_resume_checkpoint  # noqa: F401
from benchmark.train_validation import levelled, validation_map  # noqa: F401  (re-exported)
from datasets import paths


def run(dataset: str, model_name: str, params: dict) -> int:
    """Train every seed of the profile (or nothing, when every seed is complete and up to date)."""
    dist = _Dist()
    prof = training_profile(params)
    seeds = [int(s) for s in prof["seeds"]]
    prints = [run_fingerprint(dataset, model_name, params, s) for s in seeds]
    if prof.get("threads"):  # intra-op threads (CPU); 0/absent: torch's default
        torch.set_num_threads(int(prof["threads"]))
    if _up_to_date(dataset, model_name, seeds, prints, dist):
        return 0
    init_processes(dist, str(prof.get("device", "auto")))
    done = done_path(dataset, model_name)
    if dist.main and done.exists():
        done.unlink()
    t0 = time.perf_counter()
    image_size = int(prof["image_size"])
    workers = int(prof.get("workers", 0))
    preprocess = preprocessing(prof)
    all_rows: list[dict] = []
    data = None
    seconds: list[float] = []
    for s in seeds:
        t_seed = time.perf_counter()
        if data is None or uses_shared_trunk(prof):  # under a shared trunk, seed k trains on trunk k's maps
            data = TrainData(dataset, image_size, params.get("validate", {}).get("maybe_policy", "negative"),
                             cache=workers == 0, preprocess=preprocess, validation=True,
                             features=load_features(dataset, s, mmap=False) if uses_shared_trunk(prof) else None)
        all_rows += train_seed(dataset, model_name, params, s, data, dist, list(all_rows))
        seconds.append(round(time.perf_counter() - t_seed, 2))
    if dist.main:
        _write_run_records(dataset, model_name, params, seeds, prints, all_rows, t0)
        write_card(dataset, model_name, params, data.classes_per_attribute, seeds, seconds,
                   str(_device(str(prof.get("device", "auto")), dist)))
    close_processes(dist)
    return 0


def _up_to_date(dataset: str, model_name: str, seeds: list[int], prints: list[str], dist: _Dist) -> bool:
    """True when done.json names these fingerprints and every seed's checkpoint and selection is
    there; its step log and val curve are then written back from the checkpoints (DVC deletes the
    unpersisted log before running the stage)."""
    done = done_path(dataset, model_name)
    if not done.exists():
        return False
    try:
        d = json.loads(done.read_text())
    except (OSError, ValueError):
        d = {}  # an unreadable done.json: not done
    if not (isinstance(d, dict) and d.get("fingerprints") == prints and all(
            checkpoint_path(dataset, model_name, s).exists() and selection_path(dataset, model_name, s).exists()
            for s in seeds)):
        return False
    try:
        rows = [r for s in seeds for r in read_checkpoint(checkpoint_path(dataset, model_name, s))["log"]]
    except CheckpointError as e:
        if dist.main:
            print(f"[train] {e}: training again", file=sys.stderr)
        return False
    if dist.main:
        write_log(rows, log_path(dataset, model_name))
        write_val_curve(dataset, model_name, seeds)
        if not restore_card(dataset, model_name):
            return False  # a run from before the cards: train again, which writes it
        print(f"[train] {dataset}/{model_name}: up to date ({done})", file=sys.stderr)
    return True


def _write_run_records(dataset: str, model_name: str, params: dict, seeds: list[int], prints: list[str],
                       all_rows: list[dict], t0: float) -> None:
    """Rank 0, after every seed: the step log, val curve, params used, done.json and the timing."""
    prof = training_profile(params)
    write_log(all_rows, log_path(dataset, model_name))
    write_val_curve(dataset, model_name, seeds)
    # what this run used, resolved (profile- and dataset-keyed values): the record of a `dvc exp run -S ...`
    # and the recipe it ran, resolved per model (epochs per phase, triplets, schedules, negatives, precision)
    _write_json({"model_params": resolve_model_params(params, model_name, dataset), "train": prof,
                 "recipe": read_selection(dataset, model_name, seeds[0]).get("recipe")},
                paths.model_dir(dataset, model_name) / "params_used.json")
    _write_json({"dataset": dataset, "model": model_name, "seeds": seeds, "fingerprints": prints,
                 "checkpoints": [str(checkpoint_path(dataset, model_name, s)) for s in seeds],
                 "steps": len(all_rows)}, done_path(dataset, model_name))  # no timing in a DVC output
    seconds = time.perf_counter() - t0
    _write_json({"seconds": round(seconds, 2), "steps": len(all_rows),
                 "images_per_s": round(3 * int(prof["batch_size"]) * len(all_rows) / max(seconds, 1e-9), 1)},
                timing_path(dataset, model_name))
    print(f"[train] {dataset}/{model_name}: {len(all_rows)} steps in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


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
