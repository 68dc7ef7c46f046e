"""`fashionbench check <dataset> <path> [--labels-only] [--json FILE]`: validate a user's own
download without DVC. Exit 0 usable, 1 too much quarantined (validate.max_bad_fraction), 2 the
input is not that dataset at all.

<path> may be the release folder, an archive of it, a single annotation file (FashionAI
label.csv) or a folder of ASEN's split files. `--labels-only` checks annotations without images.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from datasets import DATASETS
from datasets.errors import DatasetError, FormatError, NotThisDatasetError, ValidationFailed

SUITE_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"  # the suite's own: defaults of --params


def _defaults() -> dict:
    """The suite's own validate params: one source for the thresholds, also when --params lacks them."""
    import yaml

    if not SUITE_PARAMS.is_file():
        raise DatasetError(f"{SUITE_PARAMS} not found: the suite's params.yaml holds the validate defaults "
                           "(install the suite from its repository: pip install -e .)")
    return dict(yaml.safe_load(SUITE_PARAMS.read_text())["validate"])


def add_arguments(parser) -> None:
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("path", type=Path, help="release folder, archive, label file or ASEN split folder")
    parser.add_argument("--labels-only", action="store_true", help="check the annotation files, not the images")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the validation report here")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params.yaml whose validate section to use (the suite's params.yaml fills what it lacks)")


def _params(path: Path) -> dict:
    out = _defaults()
    if path.is_file():
        import yaml

        out.update((yaml.safe_load(path.read_text()) or {}).get("validate", {}) or {})
    return out


def load(key: str, path: Path, labels_only: bool, tmp: Path):
    """(tables, raw folder or None, source kind) of a user's input."""
    from datasets.archive import extract, is_archive
    from datasets.parse import build_tables, parse_raw
    from datasets.parsers import asen, fashionai

    if not path.exists():
        raise NotThisDatasetError(f"{path} does not exist")
    if path.is_file() and is_archive(path):
        extract(path, tmp, 1 << 40)
        from datasets.acquire import _expand_nested, _hoist, _markers

        _hoist(tmp, _markers(key))
        _expand_nested(key, tmp, 1 << 40, None, {"inputs": []})
        path = tmp
    if path.is_dir() and not labels_only and (any(path.glob("Img/*.zip")) if key == "deepfashion" else
                                               key == "fashionai" and any(path.glob("*.zip"))):
        from datasets.acquire import _expand_nested, _link_tree

        _link_tree(path, tmp)  # hard links where possible; the release's inner archives are then extracted
        _expand_nested(key, tmp, 1 << 40, None, {"inputs": []})
        path = tmp
    if path.is_file():
        if key != "fashionai":
            raise NotThisDatasetError(f"{path}: a single file is only accepted for FashionAI (label.csv)")
        res, root = fashionai.parse_file(path)
        kind = "label.csv"
    elif asen.is_asen_folder(path):
        res, root, kind = parse_raw(key, path, "asen"), path, "asen"
    else:
        res, root, kind = parse_raw(key, path, None), path, "release"
    tables = build_tables(res, root, stats=not labels_only, progress=True)
    return tables, (None if labels_only else root), kind


def summary(key: str, tables: dict, report: dict, kind: str) -> str:
    import polars as pl

    lines = []
    img = report["tables"]["images"]
    lab = report["tables"]["labels"]
    lines.append(f"{key} ({kind}): {img['rows_in']} images/rows, {img['kept']} kept, {img['quarantined']} quarantined; "
                 f"{lab['rows_in']} label rows")
    pq = tables.get("parse_quarantine")
    if pq is not None and pq.height:
        lines.append(f"unparseable lines: {pq.height}")
    labels = tables["labels"]
    if key == "fashionai":
        m_rows = labels.filter(pl.col("state") == "maybe")["image_id"].n_unique()
        lines.append(f"rows with an 'm': {m_rows}")
    if report["checks"]:
        lines.append("checks: " + ", ".join(f"{k} {v}" for k, v in report["checks"].items()))
    tax = tables["taxonomy"]
    pos = labels.filter(pl.col("state") == "positive").group_by("attribute_id", "class_id").len()
    counts = {(a, c): n for a, c, n in pos.iter_rows()}
    roles = tables.get("asen_roles")
    rc = Counter()
    if roles is not None:
        for a, r in roles.select("attribute_id", "role").iter_rows():
            rc[(a, r)] += 1
    lines.append("per attribute: classes (positive rows per class)" + (" | queries / candidates" if roles is not None else ""))
    for a, group in tax.group_by("attribute_id", maintain_order=True):
        a = a[0] if isinstance(a, tuple) else a
        name = group["attribute"][0]
        per = [counts.get((a, c), 0) for c in group["class_id"].to_list()]
        shown = " ".join(str(x) for x in per) if len(per) <= 12 else f"{len(per)} classes, min {min(per)}, max {max(per)}"
        extra = f" | {rc[(a, 'query')]} / {rc[(a, 'candidate')]}" if roles is not None else ""
        lines.append(f"  {name}: {sum(per)} ({shown}){extra}")
    if roles is not None:
        lines.append(f"total: {sum(v for (a, r), v in rc.items() if r == 'query')} queries, "
                     f"{sum(v for (a, r), v in rc.items() if r == 'candidate')} candidates, "
                     f"{sum(v for (a, r), v in rc.items() if r == 'train')} train rows")
    dg = report["duplicate_groups"]
    if not report["labels_only"]:
        lines.append(f"duplicate groups: {dg['exact']} exact, {dg['near']} near ({dg['spans_partitions']} span partitions)")
    lines.append(f"quarantined share {report['bad_fraction']:.2%} (max {report['params']['max_bad_fraction']:.2%}): "
                 + ("usable" if report["passed"] else "TOO MANY BAD ROWS"))
    return "\n".join(lines)


def run(args) -> int:
    from datasets.validate import validate_tables

    key = args.dataset
    try:
        params = _params(args.params)
        with tempfile.TemporaryDirectory(prefix="fashionbench-check-") as tmp:
            tables, raw, kind = load(key, Path(args.path), args.labels_only, Path(tmp))
            out, report = validate_tables(key, tables, raw, params, labels_only=args.labels_only)
            report["input"] = str(args.path)
            report["input_kind"] = kind
            text = summary(key, tables, report, kind)
    except (NotThisDatasetError, FormatError) as e:
        print(f"fashionbench check: {args.path} is not {key}: {e}", file=sys.stderr)
        return 2
    except ValidationFailed as e:
        print(f"fashionbench check: {e}", file=sys.stderr)
        return 1
    except DatasetError as e:
        print(f"fashionbench check: {e}", file=sys.stderr)
        return 2
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1
