"""The scale run: twins at the real releases' sizes through the real stages, timed.

    python -m benchmark.scale [--out /tmp/fashionbench-scale] [--datasets deepfashion ...]
                              [--images deepfashion=20000 ...] [--report reports/scale.json]

Writes, per dataset, a twin in the real raw format (by default the real image count and image
size: DeepFashion 289,222 images at 300 px) into a work folder outside the repository (--out,
which becomes the working directory of every stage: its own params.yaml, data/, models/,
reports/), then runs there, each as its own process: the twin generator, acquire (from the
archive; DARN downloaded from the loopback server), parse, validate (with validate.workers
processes and, for the speed-up, once more with one), splits, co-occurrence, the training loader
(triplet batches of the twin profile, no model), train (the twin profile, one epoch of two
batches: a model to evaluate) and evaluate (val and test at the sizes the splits give). The
pipeline's stages run by dvc.yaml's own commands (``benchmark.dvcfile``: ``twins@<key>``,
``train@<key>-m3net``, ...); the loader and evaluate measurements are this module's
``_loader KEY --batches N`` and ``_evaluate KEY MODEL``, which call the pipeline's functions.

Each stage's wall time and peak resident memory go into --report (default reports/scale.json) as
``datasets.<key>.stages.<stage>.{seconds, peak_rss_gb}``. Peak RSS is that of the stage's whole
process tree: the larger of the largest single process's peak (VmHWM) and the sum of the tree's
current RSS, sampled every 100 ms (validate's workers count together), in GiB (2^30 bytes). ``machine`` gives cores, memory and the load average before and after.

Not part of `make test` at full size (hours on two cores); tests/test_scale.py runs a few hundred
images per dataset.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmark import dvcfile
from datasets import paths
from datasets.atomic import write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("/tmp/fashionbench-scale")

#: the real releases: images and stored image size (long side, px). DeepFashion's count is exact;
#: FashionAI's train1 + train2 hold about 180,000; DARN's URL list about 250,000 entries, of which
#: about 15% are dead (one group recovered 214,619 images).
REAL = {
    "deepfashion": {"images": 289_222, "image_size": 300},
    "fashionai": {"images": 180_000, "image_size": 512},
    "darn": {"images": 250_000, "image_size": 300},
}
#: DARN's dead links at the real share (about 15% of the URLs)
DARN_DEAD = {"darn_404": 0.12, "darn_drop": 0.03}

#: a full-size twin is drawn at this size and stored at the real one (drawing at 300-512 px costs
#: 4-12x more; the stages read the stored images, so what they measure is unchanged)
RENDER_SIZE = 96
#: the scale run's model: the twin profile end to end (its own trunk over pixels) at this image size.
#: The shared trunk would need its pretrain stage over the whole training split (~210,000 images at
#: full size, hours on a CPU) before anything could be evaluated; what evaluation costs at the real
#: test size is the network over every val and test image plus the rankings, which this measures.
TRAIN_IMAGE_SIZE = 64

#: class-specific embeddings per (image, attribute) in the scale run (evaluate.max_classes: 16 in
#: params.yaml). The scale run's model has trained for two batches, so every P_n is near 0.5 and at
#: the sweep's gamma 0.1 the cap binds everywhere: 16 per attribute would be 80 per DeepFashion image
#: (6.4 million class embeddings over its 80,000 val and test images, several times what a trained
#: model keeps). 3 per attribute gives up to 15 per image, the load the issue names ("up to 16
#: predicted classes per image").
MAX_CLASSES = 3

STAGES = ("twins", "acquire", "parse", "validate", "splits", "cooccurrence", "loader", "train", "evaluate")
#: the scale run's own measurements (this module's subcommands); every other stage is dvc.yaml's, run by its command
MEASURED_HERE = ("loader", "evaluate")
TRAIN_MODEL = "m3net"
#: triplet batches the loader measurement draws (--loader-batches)
LOADER_BATCHES = 20


# ----------------------------------------------------------------------------- measuring

def _hwm(pid: int) -> int:
    """Peak RSS of one process's current program (VmHWM, bytes); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree_memory(pid: int) -> tuple[int, int]:
    """(sum of the current RSS over the process tree, the largest VmHWM in it), bytes."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.Error:
        return 0, 0
    total, hwm = 0, 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
        hwm = max(hwm, _hwm(q.pid))
    return total, hwm


def run_measured(cmd: list[str], cwd: Path, log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` in ``cwd``; (seconds, peak_rss_gb, returncode). stdout and stderr go to ``log``.

    Peak: the larger of the tree's summed RSS and the largest per-process peak (VmHWM), sampled every
    100 ms. Not wait4's ru_maxrss: Linux carries the launching process's own peak into its child's
    across fork and exec, so a stage started from a large process (a test run) would read as large."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        peak = 0
        while True:
            total, hwm = _tree_memory(p.pid)  # before wait4: a reaped process has no /proc entry
            peak = max(peak, total, hwm)
            pid, status, _ = os.wait4(p.pid, os.WNOHANG)
            if pid != 0:
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": round(seconds, 3), "peak_rss_gb": round(peak / 2**30, 4), "returncode": p.returncode}


def machine() -> dict:
    import psutil

    return {"cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 2),
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "loadavg": list(os.getloadavg())}


# ----------------------------------------------------------------------------- the work folder

def work_params(key: str, images: int, image_size: int, base: dict, validate_workers: int,
                train_image_size: int = TRAIN_IMAGE_SIZE, render_size: int = RENDER_SIZE) -> dict:
    """The repository's params.yaml for the work folder: the twin's size (drawn at ``render_size``,
    on every core), acquire from the twin, the twin training profile end to end at
    ``train_image_size`` and shrunk to one epoch of two batches (a model to evaluate), and the gamma
    sweep reduced to its smallest value and evaluate.gamma: the embeddings are still extracted at
    the smallest (the class-specific embeddings are as many as in the real run), and each further
    value of the sweep is one more multi-granularity ranking of the test split like those timed."""
    p = copy.deepcopy(base)
    p["twins"][key]["images"] = int(images)
    # the real protocol's sizes: the release's own partition (DeepFashion 72:14:14, DARN's ASEN
    # files 8:1:1, the generator's defaults) and the real split ratios, not the default twins'
    # test-heavy ones (3:1:6 would give DeepFashion a test split of 172,000 images, 4.3x the real)
    p["twins"][key].pop("partition", None)
    p["splits"]["ratios"][key]["twin"] = list(p["splits"]["ratios"][key]["real"])
    p["twins"]["image_size"] = int(image_size)
    p["twins"]["render_size"] = min(int(render_size), int(image_size))
    p["twins"]["workers"] = 0
    ev = p["evaluate"]
    ev["gamma_sweep"] = sorted({min(float(g) for g in ev["gamma_sweep"]), float(ev["gamma"])})
    ev["max_classes"] = min(int(ev["max_classes"]), MAX_CLASSES)
    if key == "darn":
        p["twins"]["defects"].update(DARN_DEAD)  # dead links: validate.max_dead_link_fraction, not max_bad_fraction
    for k in p["acquire"]:
        if isinstance(p["acquire"][k], dict) and "source" in p["acquire"][k]:
            p["acquire"][k].update(source="twin", path=paths.twin_dir(k).as_posix(), sha256=None)
    p["validate"]["workers"] = int(validate_workers)
    p["train"]["profile"] = "twin"
    p["train"]["seeds"] = [0]
    p["train"]["device"] = "cpu"
    prof = p["train"]["profiles"]["twin"]
    prof.update(trunk="end_to_end", image_size=int(train_image_size))
    prof["epochs"] = 1
    prof["triplets_per_epoch"] = 2 * int(prof["batch_size"])
    return p


def dvc_stage(stage: str, key: str) -> str:
    """dvc.yaml's name of a scale stage on ``key``: ``parse@darn``, ``train@darn-m3net``."""
    return f"{stage}@{key}-{TRAIN_MODEL}" if stage == "train" else f"{stage}@{key}"


def stage_cmd(stage: str, key: str, pipeline: dict, loader_batches: int = LOADER_BATCHES) -> list[str]:
    """The process a scale stage runs: the pipeline's stages by dvc.yaml's command (``pipeline``:
    ``benchmark.dvcfile.expanded_stages``; ``python`` is this interpreter), the loader and evaluate
    measurements by this module's subcommands."""
    py = sys.executable
    if stage == "loader":
        return [py, "-m", "benchmark.scale", "_loader", key, "--batches", str(int(loader_batches))]
    if stage == "evaluate":
        return [py, "-m", "benchmark.scale", "_evaluate", key, TRAIN_MODEL]
    cmd = pipeline[dvc_stage(stage, key)]["cmd"]
    if len(cmd) != 1:
        raise ValueError(f"dvc.yaml's {dvc_stage(stage, key)} runs {len(cmd)} commands; the scale run times one")
    return dvcfile.argv(cmd[0], python=py)


def measured_path(key: str, stage: str) -> Path:
    """What the loader and evaluate measurements write (in the work folder): their numbers for the report."""
    return paths.reports_dir(key) / f"scale_{stage}.json"


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def counts(work: Path, key: str) -> dict:
    """What the stages' own reports say about the sizes, to reconcile with the twin's count."""
    import polars as pl

    out: dict = {}
    man = _read(paths.twin_manifest(work / paths.twin_dir(key)))
    if man:
        out["twin_images"] = man["counts"]["images"]
    v = _read(work / paths.validation_report(key))
    if v:
        out["validated"] = v["tables"]["images"]
        out["lines_quarantined_at_parse"] = v["tables"]["annotation_lines_quarantined_at_parse"]
    sp = work / paths.splits_path(key)
    if sp.is_file():
        s = pl.read_parquet(sp)
        out["splits"] = {f"{a}/{b}": n for a, b, n in
                         s.group_by("split", "role").len().sort("split", "role").iter_rows()}
        out["split_images"] = s.height
    return out


def run_dataset(key: str, images: int, image_size: int, out: Path, base: dict, validate_workers: int,
                compare_one_worker: bool, loader_batches: int = LOADER_BATCHES, stages=STAGES,
                train_image_size: int = TRAIN_IMAGE_SIZE,
                render_size: int = RENDER_SIZE, on_stage=None) -> dict:
    """Every stage of ``stages`` on a twin of ``images`` images in out/<key>/; the dataset's record.
    ``on_stage(record)`` is called after each stage with the record so far (``partial``: true)."""
    work = out / key
    work.mkdir(parents=True, exist_ok=True)
    params = work_params(key, images, image_size, base, validate_workers, train_image_size, render_size)
    write_text(work / "params.yaml", yaml.safe_dump(params, sort_keys=False))
    # the repository's dvc.yaml over the work folder's params: the commands DVC would run there
    pipeline = dvcfile.expanded_stages(ROOT, params=work / "params.yaml")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res: dict = {"images": int(images), "image_size": int(image_size), "real_images": REAL[key]["images"],
                 "render_size": params["twins"]["render_size"], "train_image_size": int(train_image_size),
                 "work": str(work), "stages": {}}
    for stage in stages:
        cmd = stage_cmd(stage, key, pipeline, loader_batches)
        r = run_measured(cmd, work, out / "logs" / f"{key}-{stage}.log", env)
        if r["returncode"] != 0:
            tail = (out / "logs" / f"{key}-{stage}.log").read_text()[-3000:]
            raise RuntimeError(f"scale {key}: stage {stage} failed (exit {r['returncode']}); "
                               f"log {out / 'logs' / f'{key}-{stage}.log'}:\n{tail}")
        del r["returncode"]
        if stage == "validate":
            r["workers"] = validate_workers or os.cpu_count()
            if compare_one_worker and r["workers"] > 1:
                one = dict(params, validate=dict(params["validate"], workers=1))
                write_text(work / "params.yaml", yaml.safe_dump(one, sort_keys=False))
                r1 = run_measured(cmd, work, out / "logs" / f"{key}-validate-1.log", env)
                write_text(work / "params.yaml", yaml.safe_dump(params, sort_keys=False))
                if r1["returncode"] != 0:
                    raise RuntimeError(f"scale {key}: validate with one worker failed; see {out / 'logs'}")
                r["seconds_1_worker"] = r1["seconds"]
                r["peak_rss_gb_1_worker"] = r1["peak_rss_gb"]
                r["speedup_vs_1_worker"] = round(r1["seconds"] / r["seconds"], 3)
            elif r["workers"] == 1:
                r["speedup_vs_1_worker"] = 1.0
            else:
                r["speedup_vs_1_worker"] = None  # not measured (--no-compare)
            rep = _read(work / paths.validation_report(key))
            r["duplicate_groups"] = {k: rep["duplicate_groups"][k] for k in ("exact", "near")}
        if stage in MEASURED_HERE:
            r.update(_read(work / measured_path(key, stage)))
        res["stages"][stage] = r
        if on_stage is not None:
            on_stage(dict(res, partial=True))
        print(f"scale {key}: {stage} {r['seconds']:.1f} s, peak {r['peak_rss_gb']:.2f} GiB", file=sys.stderr, flush=True)
    res["counts"] = counts(work, key)
    return res


# ----------------------------------------------------------------------------- stage bodies without a module

def _loader_main(key: str, n_batches: int = LOADER_BATCHES) -> int:
    """``n_batches`` triplet batches of the training loader (twin profile: its image size and
    workers), no model: the loader's throughput in images per second (3 images per triplet)."""
    import torch

    from benchmark.loaders import TripletDataset, triplet_loader
    from benchmark.params import load_params, training_profile
    from benchmark.sampling import sample_triplets
    from benchmark.train import TrainData

    torch.set_num_threads(1)
    params = load_params()
    prof = training_profile(params)
    t0 = time.perf_counter()
    data = TrainData(key, int(prof["image_size"]), params["validate"]["maybe_policy"], cache=False)
    t1 = time.perf_counter()
    bs = int(prof["batch_size"])
    tds = TripletDataset(data.table, data.targets, data.annotated)
    tds.set_triplets(sample_triplets(data.index, n_batches * bs, seed=0, epoch=0))
    loader = triplet_loader(tds, batch_size=bs, workers=int(prof.get("workers", 0)))
    n = 0
    t2 = time.perf_counter()
    for _ in loader:
        n += 1
    t3 = time.perf_counter()
    out = {"batches": n, "batch_size": bs, "image_size": int(prof["image_size"]), "workers": int(prof.get("workers", 0)),
           "train_images": int(len(data.table)), "setup_seconds": round(t1 - t0, 3),
           "images_per_s": round(3 * bs * n / (t3 - t2), 1) if n else None}
    measured_path(key, "loader").parent.mkdir(parents=True, exist_ok=True)
    write_text(measured_path(key, "loader"), json.dumps(out, indent=2) + "\n")
    return 0


def _evaluate_main(key: str, model: str) -> int:
    """The evaluate stage's two halves, timed apart: the embeddings (the network over every val and
    test image), then the scoring (rankings, metrics, bootstrap, the figures' data)."""
    from benchmark import embed, evaluate
    from benchmark.params import load_params

    params = load_params()
    t0 = time.perf_counter()
    files = embed.run(key, model, params, device="cpu")
    t1 = time.perf_counter()
    result = evaluate.run(key, model, params, device="cpu")
    t2 = time.perf_counter()
    import numpy as np

    with np.load(files[0]) as z:
        embedded = int(z["image_id"].shape[0])
    test = result["test"]
    out = {"embedding_seconds": round(t1 - t0, 3), "embedded_images": embedded,
           "ranking_and_metrics_seconds": round(t2 - t1, 3), "test_queries": test["queries"]}
    write_text(measured_path(key, "evaluate"), json.dumps(out, indent=2) + "\n")
    return 0


# ----------------------------------------------------------------------------- the docs' table

TABLE_START, TABLE_END = "<!-- scale-table:start -->", "<!-- scale-table:end -->"


def markdown_table(report: dict) -> str:
    """One row per (dataset, stage): seconds and peak RSS, the size run and the machine named."""
    m = report["machine"]
    by = f"by `{report['command']}` on {report.get('started', '?')}: " if "command" in report else "on "
    lines = [f"Measured {by}{m['cores']} cores, {m['memory_gb']} GiB, load average {m['loadavg'][0]:.1f} at the start "
             f"(a machine shared with other work: times are upper bounds).", "",
             "| dataset | images (real) | stage | seconds | peak RSS (GiB) | notes |", "|---|---|---|---:|---:|---|"]
    for r in report.get("reruns", []):
        lines.insert(1, f"Stages rerun by `{r['command']}` on {r['started']} (load average {r['machine']['loadavg'][0]:.1f}).")
    for e in report.get("earlier", []):  # the other datasets' records kept by --add
        for r in ([e] if "command" in e else []) + e.get("reruns", []):
            which = f" for {', '.join(e['datasets'])}" if e.get("datasets") else ""
            lines.insert(1, f"Records kept from `{r['command']}` on {r['started']}{which} "
                            f"(load average {r['machine']['loadavg'][0]:.1f}).")
    for key, d in report["datasets"].items():
        for stage, r in d["stages"].items():
            notes = []
            if stage == "validate":
                sp = r.get("speedup_vs_1_worker")
                notes.append(f"{r['workers']} workers, " + (f"{sp:.2f}x one worker" if sp is not None else "one worker not run")
                             + (f" ({r['seconds_1_worker']:.1f} s)" if "seconds_1_worker" in r else ""))
            if stage == "loader" and r.get("images_per_s"):
                notes.append(f"{r['images_per_s']:.0f} images/s, {r['batches']} batches of {r['batch_size']} triplets "
                             f"at {r['image_size']} px, {r['workers']} workers")
            if stage == "evaluate" and "embedding_seconds" in r:
                notes.append(f"embedding {r['embedding_seconds']:.1f} s ({r['embedded_images']} images), "
                             f"ranking and metrics {r['ranking_and_metrics_seconds']:.1f} s, "
                             f"{r['test_queries']['used']} test queries")
            if stage == "train":
                notes.append("twin profile" + (f" end to end at {d['train_image_size']} px" if "train_image_size" in d else "")
                             + ", one epoch of two batches (a model to evaluate)")
            if stage == "validate" and "duplicate_groups" in r:
                notes.append(f"duplicate groups found: {r['duplicate_groups']['exact']} exact, {r['duplicate_groups']['near']} near")
            if stage == "twins" and d.get("render_size") and d["render_size"] != d["image_size"]:
                notes.append(f"drawn at {d['render_size']} px, stored at {d['image_size']} px")
            lines.append(f"| {key} | {d['images']:,} ({d['real_images']:,}) at {d['image_size']} px | {stage} | "
                         f"{r['seconds']:.1f} | {r['peak_rss_gb']:.2f} | {'; '.join(notes)} |")
    return "\n".join(lines)


def write_docs_table(report: dict, docs: Path) -> None:
    """Replace the table between the markers in ``docs`` (the markers must be there)."""
    text = docs.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"{docs}: no {TABLE_START} ... {TABLE_END} markers to put the table between")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    write_text(docs, head + TABLE_START + "\n" + markdown_table(report) + "\n" + TABLE_END + tail)


# ----------------------------------------------------------------------------- main

def keep_others(report: dict, old: dict, keys: set[str]) -> dict:
    """``report`` with the records of ``old``'s datasets not in ``keys`` added, and where they came
    from (old's command, start, machine, reruns, and which datasets) under ``earlier``. An earlier
    entry whose datasets have all been replaced is dropped: the table names only runs it shows."""
    out = dict(report)
    kept = {k: v for k, v in old.get("datasets", {}).items() if k not in keys}
    out["datasets"] = {**kept, **report.get("datasets", {})}
    earlier = list(report.get("earlier", []))
    for e in old.get("earlier", []):
        if "datasets" in e:  # entries written before they named their datasets are kept as they are
            e = dict(e, datasets=[k for k in e["datasets"] if k in kept])
            if not e["datasets"]:
                continue
        earlier.append(e)
    own = sorted(set(kept) - {k for e in earlier for k in e.get("datasets", [])})
    if own:
        earlier.append(dict({k: old[k] for k in ("command", "started", "machine", "reruns") if k in old},
                            datasets=own))
    out["earlier"] = earlier
    return out


def _sizes(args) -> dict[str, int]:
    sizes = {k: REAL[k]["images"] for k in args.datasets}
    if args.fraction is not None:
        sizes = {k: max(100, int(round(v * args.fraction))) for k, v in sizes.items()}
    for spec in args.images or []:
        k, _, v = spec.partition("=")
        if k not in REAL or not v.isdigit():
            raise SystemExit(f"--images takes KEY=COUNT with KEY one of {sorted(REAL)}, got {spec!r}")
        sizes[k] = int(v)
    return sizes


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_loader"]:  # python -m benchmark.scale _loader KEY [--batches N], in the work folder
        lp = argparse.ArgumentParser(prog="python -m benchmark.scale _loader")
        lp.add_argument("key")
        lp.add_argument("--batches", type=int, default=LOADER_BATCHES)
        la = lp.parse_args(argv[1:])
        return _loader_main(la.key, la.batches)
    if argv[:1] == ["_evaluate"]:
        return _evaluate_main(argv[1], argv[2])
    if argv[:1] == ["merge"]:  # python -m benchmark.scale merge NEW INTO: NEW's datasets replace INTO's
        new, into = json.loads(Path(argv[1]).read_text()), Path(argv[2])
        old = json.loads(into.read_text()) if into.is_file() else {}
        write_text(into, json.dumps(keep_others(new, old, set(new.get("datasets", {}))), indent=2) + "\n")
        return 0
    if argv[:1] == ["table"]:  # python -m benchmark.scale table REPORT DOCS: the docs' table from a report
        write_docs_table(json.loads(Path(argv[1]).read_text()), Path(argv[2]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmark.scale", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"work folder outside the repository (default {DEFAULT_OUT})")
    ap.add_argument("--datasets", nargs="+", choices=sorted(REAL), default=list(REAL))
    ap.add_argument("--images", nargs="*", metavar="KEY=COUNT", help="image count of a twin (default: the real count)")
    ap.add_argument("--fraction", type=float, default=None, help="every twin at this fraction of the real count")
    ap.add_argument("--image-size", type=int, default=None, help="stored image size (default: the real one per dataset)")
    ap.add_argument("--render-size", type=int, default=RENDER_SIZE, help="the twins are drawn at this size, "
                    f"stored at --image-size (default {RENDER_SIZE})")
    ap.add_argument("--train-image-size", type=int, default=TRAIN_IMAGE_SIZE,
                    help=f"the model's input size, twin profile end to end (default {TRAIN_IMAGE_SIZE})")
    ap.add_argument("--validate-workers", type=int, default=0, help="validate.workers in the work folder (0: all cores)")
    ap.add_argument("--no-compare", action="store_true", help="skip validate's second run with one worker")
    ap.add_argument("--loader-batches", type=int, default=LOADER_BATCHES,
                    help=f"triplet batches the loader measurement draws (default {LOADER_BATCHES})")
    ap.add_argument("--report", type=Path, default=ROOT / "reports" / "scale.json")
    ap.add_argument("--docs", type=Path, default=None, help="also write the table into this file (docs/SCALE.md)")
    ap.add_argument("--add", action="store_true", help="keep the records of the other datasets in --report")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=None,
                    help="only these stages, on the work folder an earlier run left (its twin kept); their "
                         "records replace those in --report, the rest of it is kept")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    if out == ROOT or ROOT in out.parents:
        raise SystemExit(f"--out {out} is inside the repository; the scale run writes its data outside it")
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    sizes = _sizes(args)
    command = "python -m benchmark.scale " + " ".join(argv)
    report = {"command": command, "machine": machine(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "datasets": {}}
    if args.add and args.report.is_file():  # keep the other datasets' records of an earlier report
        report = keep_others(report, json.loads(args.report.read_text()), set(sizes))
    if args.stages:
        if "twins" not in args.stages and not all((out / k / paths.twin_dir(k)).is_dir() for k in sizes):
            raise SystemExit(f"--stages without twins needs the twins an earlier run left in {out}")
        old = json.loads(args.report.read_text()) if args.report.is_file() else {}
        report = dict(old, datasets=old.get("datasets", {}))
        report.setdefault("machine", machine())
        report.setdefault("reruns", []).append({"command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                "machine": machine()})

    def write(rep):
        args.report.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.report, json.dumps(rep, indent=2) + "\n")

    for key, n in sizes.items():
        size = args.image_size or REAL[key]["image_size"]
        # a full-size dataset takes an hour: the stages done so far are in the report if a later one fails
        partial = None if key in report["datasets"] else (lambda r, key=key: write(dict(report, datasets=dict(report["datasets"], **{key: r}))))
        rec = run_dataset(key, n, size, out, base, args.validate_workers, not args.no_compare, args.loader_batches,
                          stages=args.stages or STAGES, train_image_size=args.train_image_size,
                          render_size=args.render_size, on_stage=partial)
        if args.stages and key in report["datasets"]:
            prev = report["datasets"][key]
            if (prev["images"], prev["image_size"]) != (rec["images"], rec["image_size"]):
                raise SystemExit(f"--stages: {args.report} has {key} at {prev['images']} images, not {rec['images']}")
            prev["stages"].update(rec["stages"])
            prev["counts"] = rec["counts"]
        else:
            report["datasets"][key] = rec
        (report["reruns"][-1]["machine"] if args.stages else report["machine"])["loadavg_after"] = list(os.getloadavg())
        write(report)  # after each dataset: a later failure keeps it
    if args.docs is not None:
        write_docs_table(report, args.docs)
    print(f"scale: wrote {args.report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
