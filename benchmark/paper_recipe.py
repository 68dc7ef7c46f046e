"""The paper profile's recipe, frozen: what ``train.profile: paper`` runs when params.yaml is as
shipped (``train.profiles.paper`` and every ``models.<m>`` value as the paper profile resolves
it). The report's banner calls a page comparable with the paper only when params.yaml still says
this; :func:`recipe_edits` lists every value that differs.

The one copy of the recipe: params.yaml's paper values must equal it (``tests/test_banner.py``
checks the shipped file). Changing the recipe on purpose means changing both, here and there.
Keys of how a run uses its host, not what it computes, and the unused shared-trunk ``pretrain``
(``NOT_RECIPE_KEYS``) are not part of it.
"""

from __future__ import annotations

from typing import Any

from datasets.params_schema import resolve

#: train.profiles.paper's keys outside the recipe: how the run uses the machine (``workers``,
#: ``threads``), never what it computes, and the shared trunk's ``pretrain``, which the recipe's
#: ``trunk: end_to_end`` never reads (a profile edited to ``trunk: shared`` differs in ``trunk``)
NOT_RECIPE_KEYS = frozenset({"workers", "threads", "pretrain"})

#: train.profiles.paper without NOT_RECIPE_KEYS
PROFILE: dict[str, Any] = {
    "backbone": "resnet50_layer3",
    "pretrained": True,
    "trunk": "end_to_end",
    "image_size": 224,
    "epochs": {"default": 50, "asen": 200, "asen_v2": 50},  # Maryeon/asen main.py: 200; its README's ASEN_v2: 50
    "precision": "fp32",                                     # both references train in fp32
    "triplets_per_epoch": {"default": 40000, "asen": 100000, "asen_v2": 100000, "asenpp": 100000},
    "batch_size": 16,
    "preprocess": "resize_crop",
    "checkpoint": "best_val",
    "early_stop": None,
}

_M3NET = {"lr_decay": 0.975, "margin": 0.4, "lambda_m": 1.0, "lambda_cc": 1.0, "lambda_ci": 1.0,
          "lambda_ac": 1.0, "lambda_ai": 1.0, "prototype_momentum": 0.9, "embed_dim": 1024, "inner_dim": 512,
          "lr": 1.0e-4, "w_p": {"deepfashion": 100, "fashionai": 1, "darn": 1}}

#: models.<m> as the paper profile resolves it (a value keyed by profile: its ``paper`` entry;
#: one keyed by backbone: the entry of PROFILE's backbone; one keyed by dataset: the whole mapping)
MODELS: dict[str, dict[str, Any]] = {
    "m3net": dict(_M3NET),
    "m3net_eq11": {**_M3NET, "lambda_ac": 0.0, "lambda_ai": 0.0},
    "m3net_a": dict(_M3NET),
    "m3net_c": dict(_M3NET),
    "asen": {"embed_dim": 1024, "lr": 1.0e-4, "lr_schedule": {"main": {"step_size": 1, "gamma": 0.985}},
             "negatives": "image_uniform", "margin": 0.2, "inner_dim": 512},
    "asen_v2": {"embed_dim": 1024, "lr": 1.0e-4, "lr_schedule": {"main": {"step_size": 3, "gamma": 0.9}},
                "negatives": "image_uniform", "margin": 0.2, "inner_dim": 512},
    "asenpp": {"embed_dim": 1024, "lr": 1.0e-4,
               "lr_schedule": {"global": {"step_size": 3, "gamma": 0.9}, "joint": {"step_size": 1, "gamma": 0.9}},
               "flip": False, "margin": 0.2, "inner_dim": 512, "local_inner_dim": 256,
               "local_backbone": "resnet34_layer3", "threshold": 0.1, "crop_fraction": 0.5, "beta": 0.6,
               "local_weight": 0.1, "align_weight": 0.1, "joint_global_lr_scale": 0.1, "phase_epochs": [50, 20],
               "negatives": "class_uniform"},
    "modc": {"embed_dim": 2048, "lr": 1.0e-4, "lr_decay": 0.975, "margin": 0.4, "prototype_momentum": 0.9,
             "inner_dim": 512, "lambda_proto": 1.0, "lambda_instance": 1.0},
}

class _Absent:
    """A key that one side of a comparison lacks."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()


def paper_view(params: dict) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(train.profiles.paper without NOT_RECIPE_KEYS, {model: its values as the paper profile resolves
    them}) of a params document; a model absent from ``models`` is absent here."""
    train = params.get("train") or {}
    profiles = train.get("profiles") or {}
    profile = {k: v for k, v in (profiles.get("paper") or {}).items() if k not in NOT_RECIPE_KEYS}
    backbone = profile.get("backbone")
    models = {}
    for m, mp in (params.get("models") or {}).items():
        models[m] = {k: resolve(v, profile="paper", profiles=tuple(profiles) or ("paper",), backbone=backbone,
                                where=f"models.{m}.{k}") for k, v in (mp or {}).items()}
    return profile, models


def _same(a, b) -> bool:
    """Equal as params values: 1e-4 == 0.0001, 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _diff(prefix: str, got: dict, recipe: dict) -> list[tuple[str, Any, Any]]:
    out = []
    for k in sorted(set(got) | set(recipe)):
        g, r = got.get(k, ABSENT), recipe.get(k, ABSENT)
        if g is ABSENT or r is ABSENT or not _same(g, r):
            out.append((f"{prefix}.{k}", g, r))
    return out


def recipe_edits(params: dict) -> list[tuple[str, Any, Any]]:
    """Every (key path, value in ``params``, the recipe's value) where the paper profile of
    ``params`` differs from the recipe; ABSENT stands for a key one side lacks (a key added to
    params.yaml has the recipe value ABSENT). Empty: ``train.profile: paper`` runs the recipe. Models of the recipe absent from
    ``params`` are not runs, and not edits."""
    profile, models = paper_view(params)
    edits = _diff("train.profiles.paper", profile, PROFILE)
    for m, recipe in MODELS.items():
        if m in models:
            edits += _diff(f"models.{m}", models[m], recipe)
    return edits
