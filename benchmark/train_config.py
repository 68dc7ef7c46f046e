"""The train stage's settings: what the active profile and ``models.<model>`` say, resolved for one
run (checkpoint policy, preprocessing, triplets per epoch, the learning-rate schedule, each phase's
epochs, the model's parameters) and where each seed's checkpoint lies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.checkpoint import checkpoint_path
from benchmark.params import load_params, resolve
from benchmark.params import resolve_model_params as resolve_params_of_model

CHECKPOINT_POLICIES = ("last", "best_val")
PREPROCESSING = ("squash", "resize_crop")
PRECISIONS = ("fp32", "bf16")


def checkpoint_paths(dataset: str, model: str, params: dict | None = None) -> list[Path]:
    """One checkpoint per seed of ``train.seeds``, in that order (the evaluate stage's input)."""
    params = load_params() if params is None else params
    return [checkpoint_path(dataset, model, s) for s in params["train"]["seeds"]]


def checkpoint_policy(prof: dict) -> str:
    """The profile's ``checkpoint`` policy: ``last`` (default) or ``best_val``."""
    policy = prof.get("checkpoint", "last")
    if policy not in CHECKPOINT_POLICIES:
        raise ValueError(f"train checkpoint must be one of {CHECKPOINT_POLICIES}, got {policy!r}")
    return policy


def preprocessing(prof: dict) -> str:
    """The profile's ``preprocess``: ``squash`` (default) or ``resize_crop``."""
    preprocess = prof.get("preprocess", "squash")
    if preprocess not in PREPROCESSING:
        raise ValueError(f"train preprocess must be one of {PREPROCESSING}, got {preprocess!r}")
    return preprocess


def _per_model(prof: dict, key: str, model_name: str) -> int:
    """The profile's ``key``: a number, or a mapping {<model>: n, default: n} (the references' recipes
    differ per model)."""
    spec = prof[key]
    if isinstance(spec, dict):
        if model_name not in spec and "default" not in spec:
            raise ValueError(f"train {key} {spec} names neither {model_name!r} nor a default")
        spec = spec.get(model_name, spec.get("default"))
    return int(spec)


def triplets_per_epoch(prof: dict, model_name: str) -> int:
    """The profile's ``triplets_per_epoch``: a number, or a mapping {<model>: n, default: n}."""
    return _per_model(prof, "triplets_per_epoch", model_name)


def profile_epochs(prof: dict, model_name: str) -> int:
    """The profile's ``epochs`` for ``model_name``: a number, or a mapping {<model>: n, default: n}
    (the paper profile: ASEN's ``main.py`` trains 200 epochs, ASEN_v2's README recipe 50, M3-Net and
    MODC the suite's 50). A model with ``phase_epochs`` (ASEN++) replaces it (:func:`phase_epochs`)."""
    return _per_model(prof, "epochs", model_name)


def precision(prof: dict) -> str:
    """The profile's ``precision``: ``fp32`` (default; both references train in fp32) or ``bf16``
    (the training step and the val scoring under bfloat16 autocast, on the CPU as on a GPU)."""
    value = prof.get("precision", "fp32")
    if value not in PRECISIONS:
        raise ValueError(f"train precision must be one of {PRECISIONS}, got {value!r}")
    return value


def autocast(device: "torch.device", prec: str):
    """The autocast context of ``precision`` on ``device``: bfloat16 under ``bf16``, off under ``fp32``."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16")


def lr_schedule(model_params: dict, phase: str) -> tuple[int, float]:
    """(step_size, gamma) of the phase's StepLR: ``lr_schedule: {<phase>: {step_size, gamma}}`` when the
    model has one (the ASEN family: ASEN ``main`` 1 / 0.985, ASEN_v2 3 / 0.9, ASEN++ per stage), else
    (1, lr_decay): x lr_decay after every epoch (M3-Net, MODC). A single-phase model's phase is ``main``."""
    spec = model_params.get("lr_schedule")
    if spec is not None:
        if phase not in spec:
            raise ValueError(f"lr_schedule {spec} has no entry for phase {phase!r}")
        return int(spec[phase].get("step_size", 1)), float(spec[phase]["gamma"])
    return 1, float(model_params.get("lr_decay", 1.0))


def val_scoring(params: dict) -> dict:
    """How the val curve is scored, from ``evaluate``: the relevance, gamma, class cap and
    no-relevant policy the evaluate stage tests with (the train stage lists them in dvc.yaml)."""
    ev = params.get("evaluate", {})
    return {"relevance_mode": ev.get("relevance", "all"), "gamma": float(ev.get("gamma", 0.8)),
            "max_classes": int(ev.get("max_classes", 16)), "no_relevant": ev.get("no_relevant", "leave_out")}


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
