"""Stage `parse`: data/<key>/raw -> data/<key>/tables/ (canonical tables, datasets/schemas.py).

    python -m datasets.parse <key>

Writes images, labels, taxonomy[, partition][, asen_roles], parse_quarantine (lines that could not
be parsed) and sources (the annotation file and line that named each image).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import polars as pl

from datasets import DATASETS
from datasets.errors import DatasetError, FormatError
from datasets.parsers import DEFAULT_MAX_PIXELS, ParseResult, image_stats
from datasets.pool import map_in_processes
from datasets import schemas
from datasets.paths import raw_dir, tables_dir
TABLES = schemas.PARSE_TABLES  # what this stage writes (datasets/schemas.py)


def parse_raw(key: str, raw: Path, source: str | None = None) -> ParseResult:
    """Run the parser for `key` on a raw folder (ASEN's files when `source` is 'asen' or the folder holds them)."""
    from datasets.parsers import asen, darn, deepfashion, fashionai

    raw = Path(raw)
    if key == "darn":
        res = darn.parse(raw)
    elif source == "asen" or (source is None and asen.is_asen_folder(raw)):
        res = asen.parse(raw, key)
    elif key == "deepfashion":
        res = deepfashion.parse(raw)
    elif key == "fashionai":
        res = fashionai.parse(raw)
    else:
        raise ValueError(f"unknown dataset {key!r}; expected one of {DATASETS}")
    if not res.paths:  # an empty annotation is an error, never an empty "usable" dataset
        raise FormatError(raw, None, "annotations naming at least one image", got="none")
    return res


def build_tables(res: ParseResult, raw: Path | None, stats: bool = True, progress: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 1) -> dict[str, pl.DataFrame]:
    """The canonical tables of a parse result. `stats=False` leaves width/height/bytes/sha256 null
    (annotation-only checks); otherwise each image under `raw` is read and decoded with OpenCV
    (unless its header claims more than `max_pixels`: width/height stay null, validate quarantines it),
    in `workers` processes (validate.workers; 0: one per core); the tables do not depend on it."""
    n = len(res.paths)
    w, h, b, s = [None] * n, [None] * n, [None] * n, [None] * n
    if stats and raw is not None:
        fn = functools.partial(image_stats, max_pixels=max_pixels)
        stats_ = map_in_processes(fn, [Path(raw) / p for p in res.paths], workers, "parse images",
                                  None if progress else False, "validate.workers")
        if stats_:
            w, h, b, s = (list(c) for c in zip(*stats_))
    out = {
        "images": pl.DataFrame(
            {"image_id": list(range(n)), "path": res.paths, "width": w, "height": h, "bytes": b, "sha256": s},
            schema={"image_id": pl.Int64, "path": pl.Utf8, "width": pl.Int32, "height": pl.Int32,
                    "bytes": pl.Int64, "sha256": pl.Utf8},
        ),
        "labels": pl.DataFrame(
            res.labels, schema={"image_id": pl.Int64, "attribute_id": pl.Int16, "class_id": pl.Int16, "state": pl.Utf8},
            orient="row",
        ),
        "taxonomy": res.taxonomy,
        "parse_quarantine": pl.DataFrame(
            {
                "kind": ["row"] * len(res.quarantine),
                "check": [q.check for q in res.quarantine],
                "file": [q.file for q in res.quarantine],
                "line": [q.line for q in res.quarantine],
                "image_id": [None] * len(res.quarantine),
                "reason": [q.reason for q in res.quarantine],
            },
            schema={"kind": pl.Utf8, "check": pl.Utf8, "file": pl.Utf8, "line": pl.Int64, "image_id": pl.Int64,
                    "reason": pl.Utf8},
        ),
        "sources": pl.DataFrame(
            {"image_id": list(range(n)), "file": [f for f, _ in res.sources], "line": [ln for _, ln in res.sources]},
            schema={"image_id": pl.Int64, "file": pl.Utf8, "line": pl.Int64},
        ),
    }
    if res.partition is not None:
        items = sorted(res.partition.items())
        out["partition"] = pl.DataFrame(
            {"image_id": [i for i, _ in items], "partition": [p for _, p in items]},
            schema={"image_id": pl.Int64, "partition": pl.Utf8},
        )
    if res.roles is not None:
        out["asen_roles"] = pl.DataFrame(
            res.roles, schema={"image_id": pl.Int64, "split": pl.Utf8, "role": pl.Utf8, "attribute_id": pl.Int16},
            orient="row",
        )
    return out


def write_tables(tables: dict[str, pl.DataFrame], out: Path) -> None:
    schemas.write_tables(tables, out, TABLES)


def main(argv: list[str] | None = None) -> int:
    from datasets.params import load_params

    ap = argparse.ArgumentParser(prog="python -m datasets.parse", description=__doc__)
    ap.add_argument("key", choices=DATASETS)
    args = ap.parse_args(argv)
    params = load_params()
    source = params["acquire"][args.key].get("source")
    try:
        try:
            max_pixels = int(params.get("validate", {}).get("max_pixels", DEFAULT_MAX_PIXELS))
        except (TypeError, ValueError):
            raise DatasetError(f"params validate.max_pixels must be an integer, got "
                               f"{params['validate']['max_pixels']!r}") from None
        workers = params.get("validate", {}).get("workers", 1)
        res = parse_raw(args.key, raw_dir(args.key), source)
        tables = build_tables(res, raw_dir(args.key), progress=True, max_pixels=max_pixels, workers=workers)
    except DatasetError as e:
        print(f"parse {args.key}: {e}", file=sys.stderr)
        return 1
    write_tables(tables, tables_dir(args.key))
    counts = {k: v.height for k, v in tables.items()}
    print(f"parse {args.key}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
