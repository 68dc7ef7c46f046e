"""Embedding, the evaluate stage's first step: a trained model run over the val and test images,
its embeddings one file per seed (the stage then runs ``benchmark.attention``, the attention maps
and pointing game of the first seed, and scores the files: ``benchmark.evaluate``).

Reads the validated images, the splits and, for every seed of ``train.seeds``, the checkpoint
the train stage selected (``selection.json``: the last epoch or the best validation epoch);
writes ``data/<key>/embeddings/<model>/seed<k>.npz`` (format: ``benchmark.inference``), the files
``fashionbench score`` also reads. Embedding and scoring were two DVC stages; one process does both
now, as each was mostly start-up (python, torch, DVC's lock), and embedding costs seconds.

The class level (M3-Net's class branch, most of its inference) is computed only for the pairs
the evaluation ranks: image i in attribute n where i has a positive label in n.

Images are embedded once, at the smallest gamma of ``evaluate.gamma`` and ``evaluate.gamma_sweep``:
the classes a larger gamma keeps are a subset of those (P > gamma, else the top-1 class; the
``max_classes`` cap keeps the most probable), so every gamma is a filter over one extraction.
"""

from __future__ import annotations

from benchmark.evalsets import load_eval_set
from benchmark.inference import (ImageSource, embeddings_path, extract_embeddings, load_selected_model, ranked_pairs,
                                 resolve_device, save_embeddings)
from benchmark.params import training_profile
from datasets import paths


def run(key: str, model_name: str, params: dict, device=None) -> list:
    ev = params["evaluate"]
    prof = training_profile(params)
    seeds = list(params["train"].get("seeds") or [0])
    device = resolve_device(device)
    es = load_eval_set(key, params.get("validate", {}).get("maybe_policy", "negative"))
    images, ids = es.images, es.ids
    ranked = ranked_pairs(es.labels, es.classes_per_attribute)  # the class level only where it is ranked
    gamma = min([float(g) for g in ev["gamma_sweep"]] + [float(ev["gamma"])])
    out = paths.embeddings_dir(key, model_name)
    written = []
    for seed in seeds:
        source = ImageSource.for_profile(key, images, prof, seed=seed)  # trunk k's maps under a shared trunk
        model, selection = load_selected_model(key, model_name, seed, device)  # train's policy: last | best_val
        emb = extract_embeddings(model, source, ids, gamma=gamma, max_classes=int(ev["max_classes"]),
                                 batch_size=int(ev.get("batch_size", 64)), device=device, ranked=ranked)
        class_level = bool(model.has_class_level) and emb.class_index is not None
        save_embeddings(embeddings_path(out, seed), emb, ids, class_level, selection)
        written.append(embeddings_path(out, seed))
    return written
