"""The twin profile's training step on the CPU in fp32 against bf16 autocast (``train.profiles.<p>.precision``).

Each model of the suite is built with its twin heads on the shared trunk's cached maps (backbone
``features:plain8``: 128 x 8 x 8 maps, the twin profile's input) and stepped (forward under the
trainer's :func:`benchmark.train_config.autocast`, backward, Adam) on one batch of 32 triplets.
The two precisions are timed side by side in one process, alternating, and the median of each is
compared; ``ratio`` = bf16 time / fp32 time (above 1: bf16 is slower). Run:

    .venv/bin/python -m pytest -q -p no:randomly tests/benchmarks/test_bench_precision.py -s

Measured on this project's 2-core AMD EPYC CPU (no native bf16 matrix units), 1 thread: the
figures are in docs/PROTOCOL.md#precision.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from benchmark.params import load_params, resolve_model_params, split_model_params
from benchmark.perf import synthetic_batch
from benchmark.train_config import autocast

torch.set_num_threads(1)  # one thread: the shared 2-core box; both precisions alike
CPA = [8, 6, 5, 9, 7, 4, 6, 5]  # FashionAI's 8 attributes' shape (classes per attribute)
MODELS = ("m3net", "asen", "asen_v2", "asenpp", "modc")


def _step_fn(name: str, prec: str):
    from model import build_model

    params = load_params()
    params["train"]["profile"] = "twin"
    mp = resolve_model_params(params, name, "fashionai")
    mp = {k: v for k, v in mp.items()}
    model_kw, opt = split_model_params(mp)
    torch.manual_seed(0)
    model = build_model(name, classes_per_attribute=CPA, backbone="features:plain8", pretrained=False, **model_kw)
    if model.phases[-1] != model.phase:
        model.set_phase(model.phases[-1])  # ASEN++: the joint phase, both branches
    optimizer = torch.optim.Adam(model.param_groups(1e-3), lr=1e-3)
    batch = synthetic_batch(96, CPA, 8, "cpu", channels_last=False)
    batch["images"] = torch.randn(96, 128, 8, 8, generator=torch.Generator().manual_seed(1))
    device = torch.device("cpu")
    model.train()

    def step():
        with autocast(device, prec):
            out = model(batch)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()

    return step


@pytest.mark.slow
def test_bf16_against_fp32_on_the_cpu():
    repeats, warmup = 15, 3
    rows = {}
    for name in MODELS:
        fns = {p: _step_fn(name, p) for p in ("fp32", "bf16")}
        for p in fns:
            for _ in range(warmup):
                fns[p]()
        times = {p: [] for p in fns}
        for _ in range(repeats):  # alternating: both precisions see the same load on a shared box
            for p, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[p].append(time.perf_counter() - t0)
        med = {p: statistics.median(v) for p, v in times.items()}
        rows[name] = {"fp32_ms": 1e3 * med["fp32"], "bf16_ms": 1e3 * med["bf16"], "ratio": med["bf16"] / med["fp32"]}
    for name, r in rows.items():
        print(f"{name:8s} fp32 {r['fp32_ms']:7.1f} ms  bf16 {r['bf16_ms']:7.1f} ms  bf16/fp32 {r['ratio']:.2f}")
    assert all(r["fp32_ms"] > 0 and r["bf16_ms"] > 0 for r in rows.values())
