"""The val curve's cost per epoch on the CPU: the score before issue 25 (attribute ranking, no class
branch) against the score now (M3-Net and MODC ranked as the evaluate stage tests them: the class
branch on the ranked pairs, the multi-granularity ranking at evaluate.gamma).

A val split of the FashionAI twin's size (1,040 images, a quarter of them queries, FashionAI's 8
attributes, single-label) on the twin's heads and cached 128 x 8 x 8 maps, 1 thread. Run:

    .venv/bin/python -m pytest -q -p no:randomly tests/benchmarks/test_bench_val_scoring.py -s
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from benchmark.params import load_params, resolve_model_params, split_model_params

torch.set_num_threads(1)
CPA = [8, 6, 5, 9, 7, 4, 6, 5]


def _setup(name: str):
    from benchmark.loaders import FeatureTable
    from benchmark.train import ValSet
    from model import build_model

    params = load_params()
    params["train"]["profile"] = "twin"
    model_kw, _ = split_model_params(resolve_model_params(params, name, "fashionai"))
    torch.manual_seed(0)
    model = build_model(name, classes_per_attribute=CPA, backbone="features:plain8", pretrained=False, **model_kw)
    n = 1040
    rng = np.random.default_rng(0)
    labels = np.zeros((n, sum(CPA)), dtype=bool)
    off = np.cumsum([0] + CPA)
    attr = rng.integers(0, len(CPA), n)  # FashionAI: one attribute per image
    labels[np.arange(n), off[attr] + rng.integers(0, np.array(CPA)[attr])] = True
    maps = rng.standard_normal((n, 128, 8, 8)).astype(np.float32)
    val = ValSet(table=FeatureTable(maps, np.arange(n)), labels=torch.from_numpy(labels),
                 is_query=torch.from_numpy(np.arange(n) % 4 == 0), classes_per_attribute=CPA)
    return model, val


@torch.no_grad()
def _before(model, val):
    """The val score before: the attribute ranking, no pair's class level embedded."""
    from benchmark.loaders import image_loader, network_input
    from benchmark.retrieval import attribute_map_all

    model.eval()
    embs = []
    for images, _ in image_loader(val.table, batch_size=64):
        x = network_input(images)
        none = torch.zeros(len(x), len(val.classes_per_attribute), dtype=torch.bool)
        embs.append(model.embed(x, ranked=none).attribute.float())
    is_q = val.is_query.numpy()
    return attribute_map_all(torch.cat(embs), np.flatnonzero(is_q), np.flatnonzero(~is_q), val.labels.numpy(),
                             val.classes_per_attribute, "all")


def _after(model, val):
    from benchmark.train import validation_map

    return validation_map(model, val, torch.device("cpu"), gamma=0.8, max_classes=16)


@pytest.mark.slow
def test_val_scoring_cost_before_and_after():
    for name in ("m3net", "modc"):
        model, val = _setup(name)
        times = {"before": [], "after": []}
        for _ in range(5):
            for k, fn in (("before", _before), ("after", _after)):
                t0 = time.perf_counter()
                fn(model, val)
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name}: val scoring {med['before']:.3f} s before, {med['after']:.3f} s after "
              f"(x{med['after'] / med['before']:.2f})")
        assert med["before"] > 0 and med["after"] > 0
