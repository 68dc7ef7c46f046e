"""`fashionbench compare [REV_A] [REV_B]`: did a change help, beyond what a rerun would give?

    fashionbench compare                 # HEAD against the working tree
    fashionbench compare HEAD~1          # HEAD~1 against the working tree
    fashionbench compare v1.0 HEAD       # two commits

Not a stage: it reads only ``reports/<key>/<model>/per_query.parquet``, the evaluate stage's
per-seed, per-query test metrics that are committed with the reports (``git show REV:path`` at a
revision, the file itself in the working tree), so it works between any two commits without the
data and without rerunning anything. For every dataset and model present in both revisions, and
each of MAP@all, MAP@100 and Recall@100, it gives B - A in points with the leaderboard's interval
and test for two models (``benchmark.stats``: training runs, i.e. seeds, as the units of
replication, queries nested in them; Student's t with S - 1 degrees of freedom):

- the queries: those of both revisions (the split may have changed between them); the seeds: seed
  k of A against seed k of B when both ran the same seeds (on the twin profile they share trunk k),
  else the i-th smallest seed of each (``pairing: order``; independent runs, so the pairing only
  costs power), as many as the revision with fewer has;
- the table of per-query differences (seeds x queries) gives the difference, its interval
  (``nested_interval``), the p-value (``nested_difference_test``), its standard error, degrees of
  freedom, the share of its variance that is the seeds' (``seed_share``) and ``detectable``, the
  smallest difference the test could call significant before Holm's adjustment;
- Holm's adjustment over one family per metric: every dataset and model whose per-query file
  changed, compared with at least two paired seeds (a file identical at both revisions is
  ``unchanged``, a difference of exactly 0 with nothing to test; with one seed the training
  variance is unknown, so such a row is reported, untested and never gates); ``significant`` at
  ``leaderboard.alpha``: the difference exceeds what training variance (and the test queries)
  explain.

Exit status: 1 when some model got significantly worse on a gated metric (``--fail-on``, default
MAP@all) after Holm, 2 on an error (a revision or file that cannot be read), else 0. ``evaluate.no_relevant``,
``evaluate.ci_level`` and ``leaderboard.alpha`` are read from REV_B's params.yaml (options override).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from benchmark.leaderboard import METRICS, seed_table
from benchmark.query_report import ReportPerQuerySchema, report_path
from benchmark.stats import holm, nested_difference_test, nested_interval, nested_se, student_t_ppf
from datasets import paths

WORKTREE = "working tree"
# reports/<key>/<model>/per_query.parquet, relative to the repository root
_PATTERN = report_path("KEY", "MODEL").relative_to(paths.ROOT).parts


class CompareError(Exception):
    """A revision or file that cannot be read: exit status 2, the message names it."""


# ----------------------------------------------------------------------------- reading a revision

def _git(root: Path, *args: str) -> bytes:
    r = subprocess.run(["git", "-C", str(root), *args], capture_output=True)
    if r.returncode != 0:
        raise CompareError(f"git {' '.join(args)}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def repo_root(path: Path) -> Path:
    return Path(_git(Path(path), "rev-parse", "--show-toplevel").decode().strip())


def resolve(root: Path, rev: str | None) -> str | None:
    """The full commit id of ``rev`` (None: the working tree)."""
    if rev is None:
        return None
    r = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                       capture_output=True)
    if r.returncode != 0:
        raise CompareError(f"{rev}: not a commit of the repository at {root}")
    return r.stdout.decode().strip()


def _match(rel: str) -> tuple[str, str] | None:
    parts = Path(rel).parts
    if len(parts) != len(_PATTERN) or parts[0] != _PATTERN[0] or parts[-1] != _PATTERN[-1]:
        return None
    return parts[1], parts[2]


def list_reports(root: Path, commit: str | None) -> dict[tuple[str, str], str]:
    """(dataset, model) -> path of its per_query.parquet, relative to the root, at ``commit`` (None: the
    working tree)."""
    if commit is None:
        pattern = "/".join(["*"] * (len(_PATTERN) - 2) + [_PATTERN[-1]])  # */*/per_query.parquet
        rels = [p.relative_to(root).as_posix() for p in (root / _PATTERN[0]).glob(pattern)]
    else:
        out = _git(root, "ls-tree", "-r", "-z", "--name-only", commit, "--", _PATTERN[0])
        rels = [r for r in out.decode().split("\0") if r]
    return {m: rel for rel in sorted(rels) if (m := _match(rel)) is not None}


def read_report(root: Path, commit: str | None, rel: str) -> pl.DataFrame:
    """One per_query.parquet, validated; errors name ``<commit>:<path>`` (or the file)."""
    where = str(root / rel) if commit is None else f"{commit[:12]}:{rel}"
    data = (root / rel).read_bytes() if commit is None else _git(root, "show", f"{commit}:{rel}")
    try:
        df = pl.read_parquet(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - any reader failure is the file's
        raise CompareError(f"{where}: not a readable parquet file ({e})") from None
    missing = [c for c in ("seed", "image_id", "attribute_id", *METRICS) if c not in df.columns]
    if missing:
        raise CompareError(f"{where}: no column {', '.join(missing)} (columns: {', '.join(df.columns)})")
    try:
        return ReportPerQuerySchema.validate(df)
    except Exception as e:  # noqa: BLE001 - pandera's schema and data errors
        raise CompareError(f"{where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def read_params(root: Path, commit: str | None) -> dict:
    """params.yaml at the revision (raw: only three keys are read), {} where there is none."""
    try:
        text = (root / "params.yaml").read_text() if commit is None else _git(root, "show", f"{commit}:params.yaml").decode()
    except (OSError, CompareError):
        return {}
    return yaml.safe_load(text) or {}


# ----------------------------------------------------------------------------- the arithmetic

def _r(v):
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def paired_tables(sa: list[int], ta: np.ndarray, sb: list[int], tb: np.ndarray) -> tuple[str, list, list, np.ndarray, np.ndarray]:
    """(pairing, seeds of A, seeds of B, A's rows, B's rows): seed k with seed k where both revisions
    ran the same seeds, else the i-th smallest of each, as many as the smaller side has."""
    if sa == sb:
        return "seed", sa, sb, ta, tb
    n = min(len(sa), len(sb))
    return "order", sa[:n], sb[:n], ta[:n], tb[:n]


def compare_metric(pa: pl.DataFrame, pb: pl.DataFrame, metric: str, no_relevant: str = "leave_out",
                   level: float = 0.95, alpha: float = 0.05) -> dict:
    """One model and metric at two revisions: B - A in points, on the queries of both, with the
    leaderboard's nested interval and test (module docstring). No Holm here: :func:`compare` adjusts."""
    qa = pa.select(["image_id", "attribute_id"]).unique()
    qb = pb.select(["image_id", "attribute_id"]).unique()
    keys = qa.join(qb, on=["image_id", "attribute_id"], how="inner").sort(["attribute_id", "image_id"])
    sa, ta = seed_table(pa, metric, no_relevant, keys)
    sb, tb = seed_table(pb, metric, no_relevant, keys)
    pairing, sa, sb, ta, tb = paired_tables(sa, ta, sb, tb)
    diff = tb - ta
    kept = ~np.isnan(diff).any(axis=0)
    mean, se, df, share = nested_se(diff)
    low, high = nested_interval(diff, level)
    p = nested_difference_test(tb, ta)
    detectable = student_t_ppf(1 - alpha / 2, df) * se if np.isfinite(se) and np.isfinite(df) and se > 0 else float("nan")

    def side(t):
        per_seed = 100 * t[:, kept].mean(axis=1) if kept.any() else np.array([np.nan])
        return _r(per_seed.mean()), _r(per_seed.std(ddof=1)) if len(per_seed) > 1 else None

    (a_mean, a_sd), (b_mean, b_sd) = side(ta), side(tb)
    return {"a": a_mean, "b": b_mean, "delta": _r(100 * mean), "low": _r(100 * low), "high": _r(100 * high),
            "sd_a": a_sd, "sd_b": b_sd, "se": _r(100 * se), "df": _r(df), "seed_share": _r(share),
            "detectable": _r(100 * detectable), "p": _r(p), "queries": int(kept.sum()),
            "queries_a": qa.height, "queries_b": qb.height, "pairing": pairing, "seeds_a": sa, "seeds_b": sb,
            "tested": len(sa) >= 2 and bool(np.isfinite(p)), "_p": p}


def compare_sides(a: dict[tuple[str, str], pl.DataFrame], b: dict[tuple[str, str], pl.DataFrame], *,
                  no_relevant: str = "leave_out", level: float = 0.95, alpha: float = 0.05,
                  metrics=METRICS, fail_on=("map_all",)) -> dict:
    """Every (dataset, model) of both sides, each metric; Holm over the tested rows of each metric."""
    common = sorted(set(a) & set(b))
    rows, unchanged = {}, set()
    for k, m in common:
        rows[f"{k}/{m}"] = {metric: compare_metric(a[(k, m)], b[(k, m)], metric, no_relevant, level, alpha)
                            for metric in metrics}
        if a[(k, m)].sort(["seed", "attribute_id", "image_id"]).equals(b[(k, m)].sort(["seed", "attribute_id", "image_id"])):
            unchanged.add(f"{k}/{m}")  # the same file: a difference of exactly 0, nothing to test
            for e in rows[f"{k}/{m}"].values():
                e["tested"] = False
    for metric in metrics:
        tested = [name for name, r in rows.items() if r[metric]["tested"]]
        for name, pa in zip(tested, holm([rows[name][metric]["_p"] for name in tested])):  # unrounded
            rows[name][metric].update({"p_adjusted": _r(pa), "significant": bool(pa < alpha)})
        for name, r in rows.items():
            e = r[metric]
            e.setdefault("p_adjusted", None)
            e.setdefault("significant", False)
            e.pop("_p")
            e["verdict"] = ("unchanged" if name in unchanged else "untested (one seed)" if not e["tested"] else
                            ("worse" if e["delta"] < 0 else "better") if e["significant"] else "within training variance")
    regressions = [f"{name} {metric}" for name, r in rows.items() for metric in metrics
                   if metric in fail_on and r[metric]["verdict"] == "worse"]
    return {"alpha": alpha, "ci_level": level, "no_relevant": no_relevant, "metrics": list(metrics),
            "fail_on": list(fail_on), "models": rows,
            "only_a": [f"{k}/{m}" for k, m in sorted(set(a) - set(b))],
            "only_b": [f"{k}/{m}" for k, m in sorted(set(b) - set(a))],
            "regressions": regressions}


def compare(root: Path, rev_a: str | None = "HEAD", rev_b: str | None = None, *, no_relevant: str | None = None,
            level: float | None = None, alpha: float | None = None, metrics=METRICS, fail_on=("map_all",)) -> dict:
    """Read both revisions (None: the working tree) and compare them (:func:`compare_sides`)."""
    root = repo_root(root)
    ca, cb = resolve(root, rev_a), resolve(root, rev_b)
    sides = []
    for rev, commit in ((rev_a, ca), (rev_b, cb)):
        files = list_reports(root, commit)
        if not files:
            raise CompareError(f"{rev or WORKTREE}: no {'/'.join(_PATTERN).replace('KEY', '<key>').replace('MODEL', '<model>')} "
                               f"(the evaluate stage writes it; a commit from before it has none)")
        sides.append({m: read_report(root, commit, rel) for m, rel in files.items()})
    params = read_params(root, cb)
    ev, lb = params.get("evaluate") or {}, params.get("leaderboard") or {}
    result = compare_sides(sides[0], sides[1], no_relevant=no_relevant or ev.get("no_relevant", "leave_out"),
                           level=float(level or ev.get("ci_level", 0.95)), alpha=float(alpha or lb.get("alpha", 0.05)),
                           metrics=metrics, fail_on=fail_on)
    result["a"] = {"rev": rev_a, "commit": ca}
    result["b"] = {"rev": rev_b or WORKTREE, "commit": cb}
    return result


# ----------------------------------------------------------------------------- command line

LABELS = {"map_all": "MAP@all", "map_100": "MAP@100", "recall_100": "Recall@100"}


def _f(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def render(result: dict, show_unchanged: bool = False) -> str:
    a, b = result["a"], result["b"]
    name = lambda s: s["rev"] + (f" ({s['commit'][:7]})" if s["commit"] else "")  # noqa: E731
    n = len(result["models"])
    first = result["metrics"][0]
    unchanged = [nm for nm, r in result["models"].items() if r[first]["verdict"] == "unchanged"]
    out = [f"fashionbench compare: A = {name(a)}, B = {name(b)}; {n} dataset/model pairs in both, "
           f"{len(unchanged)} of them unchanged (the same file)" + ("" if show_unchanged or not unchanged else ": not shown"),
           f"B - A in points, {round(100 * result['ci_level'])}% interval and p of the nested t-test (training runs "
           f"as units, queries nested), Holm over the tested pairs of each metric, alpha {result['alpha']}", ""]
    shown = [nm for nm in result["models"] if show_unchanged or nm not in unchanged]
    for metric in result["metrics"] if shown else []:
        out.append(f"{LABELS.get(metric, metric)}:")
        out.append(f"  {'dataset/model':28} {'A':>7} {'B':>7} {'B-A':>7} {'interval':>17} {'p':>7} {'p Holm':>7} "
                   f"{'seeds':>6}  verdict")
        for nm in shown:
            e = result["models"][nm][metric]
            seeds = f"{len(e['seeds_a'])}{'=' if e['pairing'] == 'seed' else '~'}{len(e['seeds_b'])}"
            out.append(f"  {nm:28} {_f(e['a']):>7} {_f(e['b']):>7} {_f(e['delta'], '+.2f'):>7} "
                       f"{'[' + _f(e['low'], '+.2f') + ', ' + _f(e['high'], '+.2f') + ']':>17} {_f(e['p'], '.4f'):>7} "
                       f"{_f(e['p_adjusted'], '.4f'):>7} {seeds:>6}  {e['verdict']}")
        out.append("")
    out.append("seeds: A's and B's; '=' the same seeds paired (seed k with seed k), '~' other seeds paired by order")
    for side, key in (("A", "only_a"), ("B", "only_b")):
        if result[key]:
            out.append(f"only in {side}: {', '.join(result[key])}")
    if result["regressions"]:
        out.append(f"significantly worse after Holm: {', '.join(result['regressions'])}")
    else:
        out.append(f"no model significantly worse on {', '.join(LABELS.get(m, m) for m in result['fail_on'])}")
    return "\n".join(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n")[0]
    p.add_argument("rev_a", nargs="?", default="HEAD", help="the old revision (default HEAD)")
    p.add_argument("rev_b", nargs="?", default=None, help="the new revision (default: the working tree)")
    p.add_argument("--repo", default=".", help="the repository (default: the current folder)")
    p.add_argument("--alpha", type=float, default=None, help="family-wise level (default: REV_B's leaderboard.alpha)")
    p.add_argument("--no-relevant", choices=["leave_out", "zero"], default=None,
                   help="queries with no relevant candidate (default: REV_B's evaluate.no_relevant)")
    p.add_argument("--fail-on", default="map_all", metavar="METRICS",
                   help=f"comma-separated metrics whose significant drop exits 1 (of {', '.join(METRICS)}; default map_all)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the whole comparison as JSON")
    p.add_argument("--all", action="store_true", help="also list the models whose file did not change")


def run(args) -> int:
    fail_on = tuple(m.strip() for m in args.fail_on.split(",") if m.strip())
    bad = [m for m in fail_on if m not in METRICS]
    if bad:
        print(f"fashionbench compare: --fail-on {', '.join(bad)}: not one of {', '.join(METRICS)}", file=sys.stderr)
        return 2
    try:
        result = compare(Path(args.repo), args.rev_a, args.rev_b, no_relevant=args.no_relevant, alpha=args.alpha,
                         fail_on=fail_on)
    except CompareError as e:
        print(f"fashionbench compare: {e}", file=sys.stderr)
        return 2
    print(render(result, show_unchanged=args.all))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["regressions"] else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fashionbench compare")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
