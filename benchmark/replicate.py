"""Replication: does a rerun with other seeds give the same verdicts? Not a stage: a command.

    python -m benchmark.replicate run [--seeds 3 4 5] [--work DIR]   # the default pipeline again, other seeds
    python -m benchmark.replicate compare A B                       # two runs' leaderboards side by side

``run`` copies the repository's tracked files and the data stages' outputs (twins to co-occurrence,
which no seed touches) into a work folder outside the repository (default
``/tmp/fashionbench-replicate``), commits those outputs to the work folder's own DVC cache (so that
DVC finds them up to date: a copied output missing from the cache counts as changed, and every
data stage ran again), sets ``train.seeds`` there to seeds disjoint from this run's (each with its
own trunk), runs ``dvc repro`` there, and then compares. ``compare`` reads
``reports/<key>/leaderboard.json`` under two repository roots and writes
``reports/replication.json`` and ``reports/replication.md`` here:

- per model (the attribute-blind control included): the MAP@all of each run, the shift b - a and
  the bound t * sqrt(sd_a^2 / n_a + sd_b^2 / n_b) (Welch: Student's quantile at the
  Welch-Satterthwaite df, as each sd comes from a few seeds) that a shift within the runs' own seed
  spread stays under at 95%;
- per pair of models: each run's verdict (a better, b better, or no significant difference after
  Holm's adjustment), whether it changed, and whether it reversed (significant both times, in
  opposite directions);
- per dataset: the smallest difference each run's tests could detect (the median of the pairs'
  ``detectable``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

from datasets import DATASETS, paths
from datasets.atomic import write_text
from benchmark.stats import student_t_ppf

CONTROL = "attribute_blind"
# the data stages (dvc.yaml) and their outputs, per dataset key: the same in a run with other seeds, copied
# and committed so that dvc skips them
DATA_STAGES = (("twins", paths.twin_dir), ("acquire", paths.raw_dir), ("parse", paths.tables_dir),
               ("validate", paths.validated_dir), ("splits", paths.splits_path),
               ("cooccurrence", paths.cooccurrence_dir))


def _entries(board: dict) -> dict[str, dict]:
    out = dict(board.get("models", {}))
    if board.get(CONTROL):
        out[CONTROL] = board[CONTROL]
    return out


def verdict(pair: dict) -> str:
    """'a', 'b' (the better one, significant after Holm) or '=' (no significant difference)."""
    if not pair.get("significant"):
        return "="
    return "a" if (pair.get("delta") or 0) > 0 else "b"


def shift_bound(sd_a: float, n_a: int, sd_b: float, n_b: int, level: float = 0.95) -> float:
    """The largest |mean_b - mean_a| two runs of the same design give at ``level``: Welch's interval,
    t_{(1+level)/2, df} sqrt(sd_a^2/n_a + sd_b^2/n_b), df by Welch-Satterthwaite. With 3 seeds a side
    the sds are estimated from 3 values each, so the quantile is Student's (2.8 at df 4), not 1.96."""
    va, vb = sd_a ** 2 / max(n_a, 1), sd_b ** 2 / max(n_b, 1)
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0
    den = (va ** 2 / (n_a - 1) if n_a > 1 else 0.0) + (vb ** 2 / (n_b - 1) if n_b > 1 else 0.0)
    df = (va + vb) ** 2 / den if den > 0 else float("inf")
    q = student_t_ppf(0.5 + level / 2, df) if math.isfinite(df) else 1.959963984540054
    return q * se


def compare_boards(a: dict, b: dict) -> dict:
    """One dataset's two leaderboards -> models' shifts and bounds, pairs' verdicts, and the summary."""
    ea, eb = _entries(a), _entries(b)
    models = {}
    for m in sorted(set(ea) & set(eb)):
        ma, mb = ea[m]["map_all"], eb[m]["map_all"]
        na, nb = len(ea[m].get("seeds", [])), len(eb[m].get("seeds", []))
        bound = (shift_bound(ma["sd"] or 0, na, mb["sd"] or 0, nb)
                 if ma.get("sd") is not None and mb.get("sd") is not None else None)
        shift = mb["mean"] - ma["mean"]
        # the first yardstick, 1.96 standard errors, kept beside Welch's for comparison
        z = (1.959963984540054 * math.sqrt((ma["sd"] or 0) ** 2 / max(na, 1) + (mb["sd"] or 0) ** 2 / max(nb, 1))
             if bound is not None else None)
        models[m] = {"a": ma["mean"], "b": mb["mean"], "shift": round(shift, 4),
                     "bound": None if bound is None else round(bound, 4),
                     "within": None if bound is None else bool(abs(shift) <= bound),
                     "bound_1_96": None if z is None else round(z, 4),
                     "within_1_96": None if z is None else bool(abs(shift) <= z)}
    pairs = {}
    for k in sorted(set(a.get("pairs", {})) & set(b.get("pairs", {}))):
        va, vb = verdict(a["pairs"][k]), verdict(b["pairs"][k])
        pairs[k] = {"a": va, "b": vb, "delta_a": a["pairs"][k].get("delta"), "delta_b": b["pairs"][k].get("delta"),
                    "changed": va != vb, "reversed": {va, vb} == {"a", "b"}}

    def detectable(board):
        d = sorted(p["detectable"] for p in board.get("pairs", {}).values() if p.get("detectable") is not None)
        return None if not d else round(d[len(d) // 2] if len(d) % 2 else (d[len(d) // 2 - 1] + d[len(d) // 2]) / 2, 4)

    within = [v["within"] for v in models.values() if v["within"] is not None]
    within_z = [v["within_1_96"] for v in models.values() if v["within_1_96"] is not None]
    return {"models": models, "pairs": pairs,
            "summary": {"models": len(models), "within_bound": sum(within), "within_bound_1_96": sum(within_z),
                        "within_share": round(sum(within) / len(within), 4) if within else None,
                        "pairs": len(pairs), "changed": sum(p["changed"] for p in pairs.values()),
                        "changed_share": round(sum(p["changed"] for p in pairs.values()) / len(pairs), 4) if pairs else None,
                        "reversed": sum(p["reversed"] for p in pairs.values()),
                        "significant_a": sum(p["a"] != "=" for p in pairs.values()),
                        "significant_b": sum(p["b"] != "=" for p in pairs.values()),
                        "detectable_a": detectable(a), "detectable_b": detectable(b)}}


def compare(root_a: Path, root_b: Path) -> dict:
    out = {"a": str(root_a), "b": str(root_b), "datasets": {}}
    for key in DATASETS:
        pa, pb = (Path(r) / paths.leaderboard_path(key) for r in (root_a, root_b))
        if not (pa.exists() and pb.exists()):
            raise SystemExit(f"replicate: {pa if not pa.exists() else pb} is missing: run the pipeline there first")
        ba, bb = json.loads(pa.read_text()), json.loads(pb.read_text())
        res = compare_boards(ba, bb)
        res["seeds"] = {"a": _seeds(ba), "b": _seeds(bb)}
        out["datasets"][key] = res
    return out


def _seeds(board: dict) -> list[int]:
    return sorted({s for e in _entries(board).values() for s in e.get("seeds", [])})


def markdown(result: dict) -> str:
    lines = ["# Replication: the default pipeline rerun with other seeds", "",
             f"Run a: `{result['a']}`; run b: `{result['b']}` (written by `python -m benchmark.replicate`). "
             "A model's shift is within its bound when |b - a| <= t sqrt(sd_a^2/n_a + sd_b^2/n_b), its own seed "
             "spread (Welch's 95% interval: Student's t at the Welch-Satterthwaite df, 2.8 for 3 seeds a side "
             "with equal sds); a verdict is 'a', 'b' (that model better, significant after Holm) or '=' (no significant "
             "difference).", ""]
    for key, r in result["datasets"].items():
        s = r["summary"]
        lines += [f"## {key} (seeds {r['seeds']['a']} and {r['seeds']['b']})", "",
                  f"Models within their bound: {s['within_bound']} of {s['models']} (Welch), "
                  f"{s.get('within_bound_1_96', '–')} of {s['models']} within 1.96 standard errors; verdicts changed: {s['changed']} "
                  f"of {s['pairs']}; reversed: {s['reversed']}; significant pairs: {s['significant_a']} (a), "
                  f"{s['significant_b']} (b); smallest detectable difference (median over pairs): "
                  f"{s['detectable_a']} (a), {s['detectable_b']} (b) points.", "",
                  "| model | MAP@all a | MAP@all b | shift | bound (Welch) | within | 1.96 se | within |",
                  "|---|---|---|---|---|---|---|---|"]
        for m, v in r["models"].items():
            bound = "–" if v["bound"] is None else f"{v['bound']:.2f}"
            within = "–" if v["within"] is None else ("yes" if v["within"] else "**no**")
            z = "–" if v.get("bound_1_96") is None else f"{v['bound_1_96']:.2f}"
            wz = "–" if v.get("within_1_96") is None else ("yes" if v["within_1_96"] else "**no**")
            lines.append(f"| {m} | {v['a']:.2f} | {v['b']:.2f} | {v['shift']:+.2f} | {bound} | {within} | {z} | {wz} |")
        changed = [(k, v) for k, v in r["pairs"].items() if v["changed"]]
        if changed:
            lines += ["", "| pair (a_vs_b) | verdict a | verdict b | difference a | difference b |", "|---|---|---|---|---|"]
            lines += [f"| {k} | {v['a']} | {v['b']} | {v['delta_a']} | {v['delta_b']} |" for k, v in changed]
        lines.append("")
    return "\n".join(lines)


def write(result: dict, root: Path = paths.ROOT) -> None:
    rep = Path(root) / "reports"
    write_text(rep / "replication.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    write_text(rep / "replication.md", markdown(result))


def run(seeds: list[int], work: Path, root: Path = paths.ROOT) -> Path:
    """The default pipeline in ``work`` with ``train.seeds`` = ``seeds``, its data stages' outputs copied."""
    prepare(seeds, work, root)
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=work, check=True)
    return work


def prepare(seeds: list[int], work: Path, root: Path = paths.ROOT) -> Path:
    """``work`` made ready for ``dvc repro``: the tracked files, ``train.seeds`` = ``seeds``, and the
    data stages' outputs copied and committed to its DVC cache (``dvc commit``: the same bytes, so
    the lock's entries stand), after its ``code`` stage has written the code records they depend on."""
    import yaml

    root = Path(root).resolve()
    params = yaml.safe_load((root / "params.yaml").read_text())
    if set(seeds) & set(params["train"]["seeds"]):
        raise SystemExit(f"replicate: seeds {seeds} overlap this run's train.seeds {params['train']['seeds']}")
    files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    if work.exists():
        shutil.rmtree(work)
    for f in files:
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, work / f)
    copied = []
    for stage, output in DATA_STAGES:  # the same in a run with other seeds: dvc finds them up to date
        for k in DATASETS:
            src = root / output(k)
            if src.exists():
                dst = work / output(k)
                dst.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
                copied.append(f"{stage}@{k}")
    params["train"]["seeds"] = [int(s) for s in seeds]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "repro", "-q", "code"], cwd=work, check=True)
    if copied:
        subprocess.run([dvc, "commit", "-q", "-f", *copied], cwd=work, check=True)
    return work


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.replicate", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="rerun the default pipeline with other seeds, then compare")
    r.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    r.add_argument("--work", type=Path, default=Path("/tmp/fashionbench-replicate"))
    c = sub.add_parser("compare", help="compare two runs' leaderboards")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.command == "run":
        work = run(args.seeds, args.work)
        result = compare(paths.ROOT, work)
    else:
        result = compare(args.a, args.b)
    write(result)
    for key, res in result["datasets"].items():
        s = res["summary"]
        print(f"{key}: {s['within_bound']}/{s['models']} models within their bound, {s['changed']}/{s['pairs']} "
              f"verdicts changed, {s['reversed']} reversed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
