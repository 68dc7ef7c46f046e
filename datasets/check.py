"""`fashionbench check <dataset> <path> [--labels-only] [--json FILE]`: validate a user's own
download without DVC. Exit 0 usable; 1 a copy of that dataset that is damaged (truncated or
unsafe archive, a file cut short, a path leaving the release) or has too much quarantined
(validate.max_bad_fraction; dead links: validate.max_dead_link_fraction); 2 the input is not that dataset at all, or the arguments cannot be
used (a --params file that is not YAML, a --json path that is a folder...). Every failure is one
message naming the user's file (and line), never a traceback.

<path> may be the release folder, an archive of it, a single annotation file (FashionAI
label.csv) or a folder of ASEN's split files. `--labels-only` checks annotations without images.

The user's files are only read: a folder is read in place, and when it holds the release's inner
archives (DeepFashion Img/img.zip, FashionAI's zip) its other files are copied (never linked)
into a temporary folder where the archives are extracted. That folder is removed on exit, on
SIGTERM/SIGHUP, and (for a check that was killed outright) by the next check. `--json FILE` is
refused (exit 2) when FILE is an input (the path, the --params file, or a link to either) or lies
inside the input folder (for a label.csv: its release folder); the report replaces FILE by rename.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

from datasets import DATASETS
from datasets.errors import DatasetError, NotThisDatasetError, ValidationFailed

NUMERIC = {"max_bad_fraction": float, "max_dead_link_fraction": float, "min_side": int, "near_duplicate_hamming": int, "near_duplicate_max_mad": float,
           "max_pixels": int}
TMP_PREFIX = "fashionbench-check-"


class UsageError(Exception):
    """An argument of `fashionbench check` that cannot be used (exit 2)."""


SUITE_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"  # the suite's own: defaults of --params


def _defaults() -> dict:
    """The suite's own validate params: one source for the thresholds, also when --params lacks them."""
    import yaml

    if not SUITE_PARAMS.is_file():
        raise UsageError(f"{SUITE_PARAMS} not found: the suite's params.yaml holds the validate defaults "
                         "(install the suite from its repository: pip install -e .)")
    return dict(yaml.safe_load(SUITE_PARAMS.read_text())["validate"])


def add_arguments(parser) -> None:
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("path", type=Path, help="release folder, archive, label file or ASEN split folder")
    parser.add_argument("--labels-only", action="store_true", help="check the annotation files, not the images")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the validation report here")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="params.yaml whose validate section to use (the suite's params.yaml fills what it lacks)")


def _params(path: Path) -> tuple[dict, dict]:
    """(validate params, acquire params) from a params.yaml; UsageError naming the file when it is
    not YAML or a value is not a number."""
    out = _defaults()
    acq: dict = {}
    if path.exists():
        import yaml

        from datasets.parsers import regular_file_error

        why = regular_file_error(path)
        if why is not None:
            raise UsageError(f"--params {path}: {why}")
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
            where = getattr(e, "problem_mark", None)
            at = f":{where.line + 1}" if where is not None else ""
            raise UsageError(f"--params {path}{at}: not a YAML params file ({getattr(e, 'problem', None) or e})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("validate", {}) or {}, dict) \
                or not isinstance(doc.get("acquire", {}) or {}, dict):
            raise UsageError(f"--params {path}: expected a mapping with 'validate' (and 'acquire') sections")
        out.update(doc.get("validate", {}) or {})
        acq = doc.get("acquire", {}) or {}
    for k, typ in NUMERIC.items():
        if k in out:
            try:
                v = out[k]
                if isinstance(v, bool) or v is None:
                    raise ValueError
                out[k] = typ(v)
            except (TypeError, ValueError):
                raise UsageError(f"--params {path}: validate.{k} must be a number, got {out[k]!r}") from None
    return out, acq


OWNER_FILE = ".fashionbench-check.json"  # who made a temporary folder: pid, host, boot


def _machine() -> dict:
    import socket

    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return {"host": socket.gethostname(), "boot": boot, "uid": os.getuid() if hasattr(os, "getuid") else None}


def make_tmp(base: Path | None = None, pid: int | None = None) -> Path:
    """A temporary folder for one check, with a note of its owner (for clean_stale_tmp)."""
    pid = os.getpid() if pid is None else pid
    d = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{pid}-", dir=base))
    (d / OWNER_FILE).write_text(json.dumps({"pid": pid, **_machine()}))
    return d


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_stale_tmp(base: Path | None = None) -> list[Path]:
    """Remove the temporary folders of checks that were killed: made by this user on this machine
    (same host and boot) by a process that is gone. Anything else is left alone."""
    base = Path(base or tempfile.gettempdir())
    me = _machine()
    removed = []
    for d in base.glob(TMP_PREFIX + "*"):
        try:
            if d.is_symlink() or not d.is_dir():
                continue
            owner = json.loads((d / OWNER_FILE).read_text())
            pid = int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if any(owner.get(k) != me[k] for k in ("host", "boot", "uid")) or pid == os.getpid() or _pid_alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def load(key: str, path: Path, labels_only: bool, tmp: Path, acq: dict | None = None, max_pixels: int | None = None):
    """(tables, raw folder or None, source kind) of a user's input. The input is only read."""
    from datasets.acquire import _expand_nested, _hoist, _markers, caps, inner_archives
    from datasets.archive import extract, is_archive
    from datasets.errors import FormatError
    from datasets.parse import build_tables, parse_raw
    from datasets.parsers import asen, fashionai, regular_file_error

    cap = caps(acq or {})
    if not path.exists():
        raise NotThisDatasetError(f"{path} does not exist")
    if not path.is_dir() and regular_file_error(path) is not None:
        raise FormatError(path, None, "a folder, an archive or a label file", got=regular_file_error(path))
    if path.is_file() and is_archive(path):
        extract(path, tmp, cap["max_member_bytes"], cap["max_total_bytes"], cap["max_ratio"])
        _hoist(tmp, _markers(key))
        _expand_nested(key, tmp, cap, None, {"inputs": []})
        path = tmp
    elif path.is_dir() and not labels_only and inner_archives(key, path):
        from datasets.acquire import _copy_tree

        inner = set(inner_archives(key, path))
        _copy_tree(path, tmp, skip=lambda p: p in inner)  # copies, never links: the user's files stay as they are
        _expand_nested(key, tmp, cap, None, {"inputs": []}, source=path)  # the archives are read in place
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
    from datasets.parsers import DEFAULT_MAX_PIXELS

    tables = build_tables(res, root, stats=not labels_only, progress=True, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
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
    lines.append(f"quarantined share {report['bad_fraction']:.2%} (max {report['params']['max_bad_fraction']:.2%}), "
                 f"dead links {report['dead_link_fraction']:.2%} (max {report['params']['max_dead_link_fraction']:.2%}): "
                 + ("usable" if report["passed"] else "TOO MANY BAD ROWS"))
    if not report["passed"]:
        from datasets.validate import failure_lines

        lines.extend(failure_lines(report))
    return "\n".join(lines)


def _user_paths(msg: str, tmp: str, path: Path) -> str:
    """A message about the temporary copy, spelled with the user's path."""
    shown = f"{path}!" if path.is_file() else str(path)
    return msg.replace(os.path.realpath(tmp), shown).replace(tmp, shown)


def _input_roots(path: Path) -> list[Path]:
    """The folders a check reads from: the input folder, or for a label.csv its release folder
    (where its images are)."""
    if path.is_dir():
        return [path.resolve()]
    if path.name == "label.csv" or path.suffix.lower() in (".csv", ".txt"):
        parent = path.resolve().parent
        return [parent.parent if parent.name == "Annotations" else parent]
    return []


def output_refusal(out: Path, path: Path, params: Path | None = None) -> str | None:
    """Why ``out`` may not be written by a check of ``path``, or None: an output that is an input
    (the same file, by any spelling or link: the path, its resolved form, or the same inode) or that
    lies inside the input folder is refused, so that a user's input is never written."""
    out_r = out.resolve()
    inputs = [p for p in (path, params) if p is not None and (p.exists() or p.is_symlink())]
    for p in inputs:
        if out_r == p.resolve() or (out.exists() and p.exists() and os.path.samefile(out, p)):
            return f"is the input {p} itself; give a file outside the input"
    for root in _input_roots(path):
        if out_r == root or root in out_r.parents:
            return f"lies inside the input folder {root}; a check never writes into its input"
    return None


def run(args) -> int:
    from datasets.validate import validate_tables

    key = args.dataset
    path = Path(args.path)
    try:
        params, acq = _params(args.params)
        if args.json is not None and (args.json.is_dir() or (args.json.exists() and not args.json.is_file())):
            raise UsageError(f"--json {args.json}: is a folder (or not a regular file); give a file name")
        why = output_refusal(args.json, path, args.params) if args.json is not None else None
        if why is not None:
            raise UsageError(f"--json {args.json}: {why}")
    except UsageError as e:
        print(f"fashionbench check: {e}", file=sys.stderr)
        return 2
    clean_stale_tmp()
    old = {s: signal.signal(s, _raise_exit) for s in (signal.SIGTERM, signal.SIGHUP)} \
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else {}
    tmp = str(make_tmp())
    try:
        tables, raw, kind = load(key, path, args.labels_only, Path(tmp), acq, params.get("max_pixels"))
        out, report = validate_tables(key, tables, raw, params, labels_only=args.labels_only)
        report["input"] = str(args.path)
        report["input_kind"] = kind
        text = _user_paths(summary(key, tables, report, kind), tmp, path)
    except NotThisDatasetError as e:
        print(f"fashionbench check: {path} is not {key}: {_user_paths(str(e), tmp, path)}", file=sys.stderr)
        return 2
    except ValidationFailed as e:
        print(f"fashionbench check: {_user_paths(str(e), tmp, path)}", file=sys.stderr)
        return 1
    except DatasetError as e:
        print(f"fashionbench check: {path}: damaged or unsafe {key} input: {_user_paths(str(e), tmp, path)}",
              file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for s, h in old.items():
            signal.signal(s, h)
    print(text)
    if args.json:
        body = _user_paths(json.dumps(report, indent=2) + "\n", tmp, path)
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            from datasets.atomic import write_text

            write_text(args.json, body)  # a new file renamed into place: never written through a link
        except OSError as e:
            print(f"fashionbench check: --json {args.json}: cannot write it ({e.strerror or e})", file=sys.stderr)
            return 2
    return 0 if report["passed"] else 1
