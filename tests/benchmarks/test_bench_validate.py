"""Validation with 1 and 2 worker processes, side by side in one run, on a DeepFashion twin at the
real image size (300 px; the stage reads, decodes and hashes every image, then searches near pairs).

    pytest tests/benchmarks/test_bench_validate.py --benchmark-enable -s
    FASHIONBENCH_VALIDATE_IMAGES=3000 ...   # more images (default 400: the smoke run `make test` does)
    FASHIONBENCH_VALIDATE_WORK=/tmp/fashionbench-scale/deepfashion ...   # a scale run's work folder instead

Besides wall time it reports CPU seconds (this process and its reaped children): the 2-worker run's
CPU over the 1-worker run's is the cost of splitting the work, which bounds the speed-up an idle
machine would give (2 / that ratio) whatever the load when it was measured.

The ratio is the speed-up of the stage as a whole; on a machine other people are loading it is
depressed by their work, so read it with the machine's load (printed).
"""

from __future__ import annotations

import copy
import os
import resource
import time

import pytest

from benchmark.params import load_params

N = int(os.environ.get("FASHIONBENCH_VALIDATE_IMAGES", "400"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from datasets.acquire import acquire
    from datasets.parse import build_tables, parse_raw
    from datasets.twins.build import build

    params = load_params()
    work = os.environ.get("FASHIONBENCH_VALIDATE_WORK")
    if work:
        from pathlib import Path

        from datasets.validate import load_tables

        work = Path(work)
        return load_tables(work / "data" / "deepfashion" / "tables"), work / "data" / "deepfashion" / "raw", params["validate"]
    tmp = tmp_path_factory.mktemp("validate")
    tp = copy.deepcopy(params["twins"])
    tp["deepfashion"]["images"] = N
    tp["image_size"] = 300
    build("deepfashion", tp, tmp / "twin", progress=False)
    cfg = {"source": "twin", "path": str(tmp / "twin"), "sha256": None}
    acquire("deepfashion", cfg, params["acquire"], tmp / "raw", tmp / "acquire.json")
    tables = build_tables(parse_raw("deepfashion", tmp / "raw", "twin"), tmp / "raw")
    return tables, tmp / "raw", params["validate"]


@pytest.mark.slow
@pytest.mark.benchmark(group="validate-workers")
def test_bench_validate_1_vs_2_workers(benchmark, prepared):
    from datasets.validate import check_images, validate_tables

    tables, raw, vp = prepared
    files = [raw / p for p in tables["images"]["path"].to_list()]
    seconds, image_seconds, image_cpu, reports, results = {}, {}, {}, {}, {}

    def cpu() -> float:
        s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    def run():
        for w in (1, 2):
            t = time.perf_counter()
            _, reports[w] = validate_tables("deepfashion", tables, raw, dict(vp, workers=w), progress=False)
            seconds[w] = time.perf_counter() - t
        for w in (1, 2):  # the part the workers share out: read, decode, check, hash
            t, c = time.perf_counter(), cpu()
            results[w] = check_images(files, int(vp["min_side"]), w, progress=False)
            image_seconds[w], image_cpu[w] = time.perf_counter() - t, cpu() - c

    load0 = os.getloadavg()
    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = seconds[1] / seconds[2]
    n = tables["images"].height
    img_ratio = image_seconds[1] / image_seconds[2]
    benchmark.extra_info.update(images=n, seconds_1_worker=seconds[1], seconds_2_workers=seconds[2],
                                speedup_vs_1_worker=ratio, image_seconds_1_worker=image_seconds[1],
                                image_seconds_2_workers=image_seconds[2], image_speedup_vs_1_worker=img_ratio,
                                image_cpu_seconds_1_worker=image_cpu[1], image_cpu_seconds_2_workers=image_cpu[2],
                                cpu_count=os.cpu_count(), loadavg_before=load0, loadavg_after=os.getloadavg())
    print(f"\nvalidate {n} images: stage 1 worker {seconds[1]:.1f} s, 2 workers {seconds[2]:.1f} s, "
          f"speed-up {ratio:.2f}x; images only (check_images) {image_seconds[1]:.1f} s vs {image_seconds[2]:.1f} s, "
          f"{img_ratio:.2f}x, CPU {image_cpu[1]:.1f} s vs {image_cpu[2]:.1f} s, so at most "
          f"{2 * image_cpu[1] / image_cpu[2]:.2f}x on two idle cores ({os.cpu_count()} cores, load average {load0[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after)")
    assert reports[1] == reports[2] and results[1] == results[2]
