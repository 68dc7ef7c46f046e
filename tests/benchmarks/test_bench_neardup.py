"""Near-duplicate search at the full DeepFashion's 289,222 hashes: time and peak resident memory,
hashes spread out and bunched (a tenth of them, or a 50,000-image bucket, sharing one band value,
as flat-background photos do), each case in a fresh process so its peak RSS is its own.

    FASHIONBENCH_FULL_BENCH=1 pytest tests/benchmarks/test_bench_neardup.py --benchmark-enable -s

Without the variable a 20,000-hash version runs (a smoke test). The previous search built an
m x m distance matrix per bucket: 26,000 x 26,000 x 8 bytes = 5.4 GB for the 9% bucket, so it is
not run here; `datasets.neardup` compares a bucket in blocks of rows (BLOCK distances at a time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

FULL = os.environ.get("FASHIONBENCH_FULL_BENCH") == "1"
N = 289_222 if FULL else 20_000
DIST = 6  # params.yaml validate.near_duplicate_hamming at the time of writing; the case is the bucket shape

CHILD = r"""
import json, resource, sys, time
import numpy as np
from datasets.neardup import near_pair_array
n, bunched, dist = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
h = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)
if bunched:  # these share band 0 (the low 10 bits): one bucket of `bunched` hashes
    h[:bunched] &= ~np.uint64((1 << 10) - 1)
# planted close pairs: 1 in 500 hashes has a copy within dist bits
src = rng.choice(n, n // 500, replace=False)
flips = [int(sum(1 << int(b) for b in rng.choice(64, rng.integers(0, dist + 1), replace=False))) for _ in src]
h = np.concatenate([h, h[src] ^ np.array(flips, dtype=np.uint64)])
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
p = near_pair_array(h, dist)
sec = time.perf_counter() - t
found = set(map(tuple, p.tolist()))
planted = {(int(s), n + k) for k, s in enumerate(src)}
print(json.dumps({"hashes": len(h), "bucket": bunched, "seconds": sec, "pairs": len(p),
                  "planted_found": len(planted & found), "planted": len(planted),
                  "peak_rss_mb_before": rss0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(n: int, bunched: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(bunched), str(DIST)], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.benchmark(group="neardup")
@pytest.mark.parametrize("shape", ["spread", "bunched_9pct", "bucket_50k"])
def test_bench_near_pairs_full_size(benchmark, shape):
    bunched = {"spread": 0, "bunched_9pct": int(0.09 * N), "bucket_50k": min(50_000, N // 2)}[shape]
    res = {}

    def run():
        res.update(_run(N, bunched))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(res)
    print(f"\nnear pairs, {shape}: {res['hashes']} hashes, one bucket of {bunched}: {res['seconds']:.1f} s, "
          f"peak RSS {res['peak_rss_mb']:.0f} MB (after imports {res['peak_rss_mb_before']:.0f} MB), "
          f"{res['pairs']} pairs, planted {res['planted_found']}/{res['planted']}")
    assert res["planted_found"] == res["planted"]
