"""The model card (mmpretrain's model-zoo metafile, for this field): what one model of one
dataset costs and where it comes from, written by the train stage once per model.

``models/<key>/<model>/card.json`` (in the train stage's output, so the report stage, which
depends on ``models/<key>``, reads it; no timing there: a rerun that reproduces the weights
reproduces the folder byte for byte) and ``reports/<key>/<model>/card.json`` (a committed DVC
metric: the same fields and the timing):

- ``reference``: the paper and authors' code the model follows (the model class's ``reference``);
- ``parameters``: ``head`` (the model's own: under ``trunk: shared`` the trunk is not part of it)
  and ``trunk`` (the shared trunk's, a ``trunk: shared`` profile only; else 0: inside the model);
- ``flops``: per image at the profile's ``image_size``, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on ``embed`` of one image (every attribute's
  embedding, the class level of every attribute included where the model has one, at ``embed``'s
  default gamma and class cap, from weights seeded 0): ``head`` on the trunk's map and
  ``trunk`` for the shared trunk's forward (0 under ``end_to_end``, where ``head`` is the whole
  network); ``total`` their sum. Multiply-adds count 2 FLOPs;
- ``embedding_size``: D of the attribute-level embedding (and ``class_embedding_size``);
- ``seconds_per_seed``: the wall time of each seed's training in the run that trained it (a
  resumed seed: the resumed part), ``device``: in the committed card and train_timing.json only.
"""

from __future__ import annotations

import json

import torch

from benchmark.params import split_model_params, training_profile
from benchmark.shared_trunk import model_backbone, uses_shared_trunk


def _flops(module, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = module(x)
    return int(counter.get_total_flops()), out


def model_card(model_name: str, classes_per_attribute: list[int], params: dict, model_params: dict) -> dict:
    """The card's measured fields: a fresh (untrained) copy of the model, on the CPU, in eval mode."""
    from model import build_model
    from model.backbone import build_trunk

    prof = training_profile(params)
    size = int(prof["image_size"])
    backbone = model_backbone(prof)
    model_kw, _ = split_model_params(model_params)
    torch.manual_seed(0)  # the class level's work depends on which classes pass gamma: the same weights each time
    model = build_model(model_name, classes_per_attribute=classes_per_attribute, backbone=backbone,
                        pretrained=False, **model_kw).eval()
    x = torch.zeros(1, 3, size, size)
    trunk_params = trunk_flops = 0
    if uses_shared_trunk(prof):
        trunk = build_trunk(prof["backbone"], pretrained=False).eval()
        trunk_params = sum(p.numel() for p in trunk.parameters())
        trunk_flops, x = _flops(trunk, x)  # the head's input: the trunk's map of one image
    every = torch.ones(1, model.num_attributes, dtype=torch.bool)  # the class level of every attribute ranked
    head_flops, emb = _flops(lambda t: model.embed(t, ranked=every), x)
    card = {
        "model": model_name,
        "reference": getattr(type(model), "reference", None),
        "image_size": size,
        "trunk": "shared" if uses_shared_trunk(prof) else "end_to_end",
        "backbone": prof["backbone"],
        "parameters": {"head": sum(p.numel() for p in model.parameters()), "trunk": trunk_params},
        "flops": {"head": head_flops, "trunk": trunk_flops, "total": head_flops + trunk_flops},
        "embedding_size": int(emb.attribute.shape[-1]),
        "class_embedding_size": int(emb.class_emb.shape[-1]) if emb.class_emb is not None else None,
    }
    return card


def card_paths(dataset: str, model_name: str):
    """(the train output's card, the committed copy)."""
    from datasets import paths

    return paths.model_dir(dataset, model_name) / "card.json", paths.model_reports_dir(dataset, model_name) / "card.json"


def _dump(card: dict) -> str:
    return json.dumps(card, indent=2, sort_keys=True) + "\n"


def write_card(dataset: str, model_name: str, params: dict, classes_per_attribute: list[int],
               seeds: list[int], seconds: list[float], device: str) -> dict:
    """Measure the model's card and write it (rank 0, after a run): without the timing in the
    model folder (a rerun that reproduces the weights reproduces that folder byte for byte), with
    it in the committed copy; the timing is also kept in the untracked train_timing.json, where
    :func:`restore_card` finds it again."""
    from benchmark.params import resolve_model_params
    from benchmark.train_records import timing_path
    from datasets.atomic import write_text

    card = model_card(model_name, classes_per_attribute, params, resolve_model_params(params, model_name, dataset))
    card.update(dataset=dataset, seeds=list(seeds))
    timing = {"seconds_per_seed": list(seconds), "device": device}
    tp = timing_path(dataset, model_name)
    kept = json.loads(tp.read_text()) if tp.is_file() else {}
    write_text(tp, json.dumps({**kept, **timing}, indent=2, sort_keys=True) + "\n")
    inside, committed = card_paths(dataset, model_name)
    write_text(inside, _dump(card))
    write_text(committed, _dump({**card, **timing}))
    return {**card, **timing}


def restore_card(dataset: str, model_name: str) -> bool:
    """A run that is up to date: its card (kept in the persisted train output) written back to the
    committed place, which DVC removed before the stage ran, with the timing train_timing.json
    kept (null when that file is gone). False when the run has no card."""
    from benchmark.train_records import timing_path
    from datasets.atomic import write_text

    inside, committed = card_paths(dataset, model_name)
    if not inside.is_file():
        return False
    tp = timing_path(dataset, model_name)
    kept = json.loads(tp.read_text()) if tp.is_file() else {}
    timing = {"seconds_per_seed": kept.get("seconds_per_seed"), "device": kept.get("device")}
    write_text(committed, _dump({**json.loads(inside.read_text()), **timing}))
    return True
