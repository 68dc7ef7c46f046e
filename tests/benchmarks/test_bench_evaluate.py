"""The multi-granularity ranking at DeepFashion's real test size (ASEN's split: 5,525 query and
22,100 candidate images, 5 attributes of 156/218/180/216/230 classes, up to 16 predicted classes
per image), on the CPU: time and peak resident memory of `benchmark.evaluate.evaluate_split`
(queries in chunks; the class level one matrix product per shared class, never a
(queries x candidates x classes) tensor), in a fresh process so its peak RSS is its own.

    FASHIONBENCH_FULL_BENCH=1 pytest tests/benchmarks/test_bench_evaluate.py --benchmark-enable -s

Without the variable a tenth of that size runs (a smoke test). Embeddings are random (256-d, the
twin profile's width): the ranking's cost does not depend on what they hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

FULL = os.environ.get("FASHIONBENCH_FULL_BENCH") == "1"
Q, C = (5_525, 22_100) if FULL else (552, 2_210)

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from benchmark.evaluate import evaluate_split
from model.base import Embeddings
nq, nc, D, maxc = int(sys.argv[1]), int(sys.argv[2]), 256, 16
cpa = [156, 218, 180, 216, 230]
off = np.cumsum([0] + cpa)
n = nq + nc
rng = np.random.default_rng(0)
labels = np.zeros((n, sum(cpa)), bool)
p = 1.0 / np.arange(1, sum(cpa) + 1) ** 0.9
p = rng.permutation(p / p.sum())
for r in range(n):  # ~3.5 positives per image (DeepFashion's mean), Zipf-like class popularity
    labels[r, rng.choice(sum(cpa), min(15, rng.poisson(2.5) + 1), replace=False, p=p)] = True
att = torch.from_numpy(rng.standard_normal((n, len(cpa), D), dtype=np.float32))
# 16 predicted classes per image, spread over the attributes (the evaluate stage's max_classes)
rows, attrs, cls = [], [], []
for r in range(n):
    a = rng.integers(0, len(cpa), maxc)
    for ai in np.unique(a):
        k = int((a == ai).sum())
        for c in rng.choice(cpa[ai], k, replace=False):
            rows.append(r); attrs.append(ai); cls.append(c)
idx = torch.tensor(np.stack([rows, attrs, cls], 1), dtype=torch.long)
emb = Embeddings(attribute=att, probs=None, class_index=idx,
                 class_emb=torch.from_numpy(rng.standard_normal((len(idx), D), dtype=np.float32)))
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {}
for ranking in ("attribute", "multi-granularity"):
    t = time.perf_counter()
    pq = evaluate_split(emb, np.arange(nq), np.arange(nq, n), labels, cpa, relevance="all", ks=[100], ranking=ranking)
    out[ranking] = {"seconds": time.perf_counter() - t, "queries": int(len(pq["query_row"])),
                    "map_all": float(np.nanmean(pq["ap_all"]))}
out.update(query_images=nq, candidate_images=nc, class_embeddings=int(len(idx)), peak_rss_mb_after_setup=rss0,
           peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(out))
"""


@pytest.mark.benchmark(group="evaluate-real-size")
def test_bench_multi_granularity_ranking_at_deepfashion_test_size(benchmark):
    res = {}

    def run():
        env = dict(os.environ, OMP_NUM_THREADS="1")
        p = subprocess.run([sys.executable, "-c", CHILD, str(Q), str(C)], capture_output=True, text=True, check=True,
                           env=env)
        res.update(json.loads(p.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(res)
    print(f"\nranking {Q} x {C} images, {res['class_embeddings']} class embeddings: attribute "
          f"{res['attribute']['seconds']:.1f} s, multi-granularity {res['multi-granularity']['seconds']:.1f} s "
          f"({res['multi-granularity']['queries']} queries); peak RSS {res['peak_rss_mb']:.0f} MB "
          f"({res['peak_rss_mb_after_setup']:.0f} MB after building the embeddings)")
    assert res["multi-granularity"]["queries"] == res["attribute"]["queries"] > 0
