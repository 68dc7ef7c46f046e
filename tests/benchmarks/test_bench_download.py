"""DARN's download at several concurrencies, on a twin with the real share of dead links (12% 404,
3% dropped on every request), served by the loopback server on 127.0.0.1 through the acquire stage.

    pytest tests/benchmarks/test_bench_download.py --benchmark-enable -s
    FASHIONBENCH_DOWNLOAD_IMAGES=4000 ...            # more URLs (default 400: a smoke run)
    FASHIONBENCH_DOWNLOAD_CONCURRENCY=8,32,64 ...    # the concurrencies compared (default 8,32,64)

Each concurrency downloads into a fresh download cache (every URL fetched), then once more from it
(every live URL taken from the cache, the dead ones tried again). A dropped URL costs its retries'
backoff (acquire.download: 0.2 + 0.4 + 0.8 s with retries 3) in a sleeping thread: at concurrency
8 the 3% dropped hold the slots most of the run, which is what more threads buy back. URLs per
second are printed and kept in the benchmark's extra_info; nothing is asserted about time.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time

import pytest

from benchmark.params import load_params

N = int(os.environ.get("FASHIONBENCH_DOWNLOAD_IMAGES", "400"))
CONCURRENCY = [int(c) for c in os.environ.get("FASHIONBENCH_DOWNLOAD_CONCURRENCY", "8,32,64").split(",")]
DARN_DEAD = {"darn_404": 0.12, "darn_drop": 0.03}  # benchmark/scale.py's real share


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from datasets.twins.build import build

    tp = copy.deepcopy(load_params()["twins"])
    tp["darn"]["images"] = N
    tp["image_size"] = 64
    tp["defects"].update(DARN_DEAD)
    tmp = tmp_path_factory.mktemp("download")
    build("darn", tp, tmp / "twin", progress=False)
    return tmp


@pytest.mark.slow
@pytest.mark.benchmark(group="download-concurrency")
def test_bench_darn_download_by_concurrency(benchmark, twin):
    from datasets.acquire import acquire

    acq = load_params()["acquire"]
    cfg = {"source": "twin", "path": str(twin / "twin"), "sha256": None}
    out: dict = {}

    def run():
        for c in CONCURRENCY:
            a = copy.deepcopy(acq)
            a["download"]["concurrency"] = c
            work = twin / f"c{c}"
            shutil.rmtree(work, ignore_errors=True)
            for phase in ("fetch", "cache"):
                t = time.perf_counter()
                rep = acquire("darn", cfg, a, work / "raw", work / "acquire.json", work / "cache")
                wall = time.perf_counter() - t
                timing = json.loads((work / "acquire_timing.json").read_text())
                out[f"{phase}_{c}"] = dict(timing, stage_seconds=round(wall, 3))
                assert rep["download"]["dead"] == rep["dead_links"]["count"]

    load0 = os.getloadavg()
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(urls=out[f"fetch_{CONCURRENCY[0]}"]["urls"], runs=out, retries=acq["download"]["retries"],
                                backoff_s=acq["download"]["backoff_s"], cpu_count=os.cpu_count(),
                                loadavg_before=load0, loadavg_after=os.getloadavg())
    for c in CONCURRENCY:
        f, k = out[f"fetch_{c}"], out[f"cache_{c}"]
        print(f"\nconcurrency {c:3d}: {f['urls']} URLs ({f['dead']} dead) fetched in {f['seconds']:.1f} s = "
              f"{f['urls_per_s']:.0f} URLs/s; from the cache ({k['from_cache']} cached) {k['seconds']:.1f} s = "
              f"{k['urls_per_s']:.0f} URLs/s")
    print(f"({os.cpu_count()} cores, load average {load0[0]:.1f} before, {os.getloadavg()[0]:.1f} after)")
    # the same images whatever the concurrency
    ref = CONCURRENCY[0]
    for c in CONCURRENCY[1:]:
        assert out[f"fetch_{c}"]["dead"] == out[f"fetch_{ref}"]["dead"]
