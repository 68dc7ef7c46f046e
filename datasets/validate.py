"""Stage `validate`: data/<key>/{raw,tables} -> data/<key>/validated/ + reports/<key>/validation.json.

    python -m datasets.validate <key>

Checks: pandera schemas; every image's header claims at most validate.max_pixels pixels (checked
before decoding), it decodes with OpenCV, is a complete JPEG (end marker present, scan data not cut),
has 3 channels and a shortest side >= validate.min_side; exact (sha256) and near (64-bit DCT pHash,
Hamming distance <= validate.near_duplicate_hamming, confirmed by grey and colour thumbnails;
datasets/neardup.py) duplicate groups (reported and kept); labels inside the taxonomy;
FashionAI exactly one `y` per row and the `m` policy (validate.maybe_policy); lines the parser
quarantined. Quarantined images take their label, partition and role rows with them.
Rows in = rows kept + rows quarantined for every table. The stage fails only when too much was
quarantined, counted two ways: dead links (DARN's URLs that failed: a missing image whose
acquire_missing.json record has a download status) over the images named, against
validate.max_dead_link_fraction (the real DARN list has ~15% dead: a fact of the source, not a
damaged copy); every other quarantined image (corrupt, truncated, missing without a download
record, ...) and unparseable line over the images that arrived plus those lines, against
validate.max_bad_fraction.

Images are read, decoded and hashed in validate.workers processes (0: os.cpu_count()); the results
are the same, in the same order, whatever the number (check_images).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import polars as pl

from datasets import DATASETS
from datasets import pool
from datasets.errors import DatasetError, ValidationFailed
from datasets.parsers import DEFAULT_MAX_PIXELS, decode, regular_file_error, too_many_pixels
from datasets.neardup import near_pair_ids, phash
from datasets.paths import MISSING_FILE, raw_dir, tables_dir, validated_dir, validation_report
from datasets.schemas import PARSE_TABLES, DuplicatesSchema, QuarantineSchema, read_table, write_json, write_tables

MAX_LISTED = 500


THUMB_GREY, THUMB_COLOUR = 32, 8  # thumbnail sides: grey 32x32, colour 8x8 (BGR)


def thumbnails(img: np.ndarray, grey: np.ndarray) -> bytes:
    """The 32x32 grey and 8x8 colour thumbnails of a decoded image, uint8, packed in one bytes
    (1,216 bytes: comparable with ==, cheap to send back from a worker)."""
    import cv2

    g = cv2.resize(grey, (THUMB_GREY, THUMB_GREY), interpolation=cv2.INTER_AREA)
    c = cv2.resize(img, (THUMB_COLOUR, THUMB_COLOUR), interpolation=cv2.INTER_AREA)
    return g.tobytes() + c.tobytes()


def unpack_thumbnails(data: bytes | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(32x32 grey, 8x8x3 colour) float32 from thumbnails()."""
    if data is None:
        return None
    a = np.frombuffer(data, np.uint8)
    n = THUMB_GREY * THUMB_GREY
    return (a[:n].reshape(THUMB_GREY, THUMB_GREY).astype(np.float32),
            a[n:].reshape(THUMB_COLOUR, THUMB_COLOUR, 3).astype(np.float32))


def confirm_near_array(pairs: np.ndarray, thumbs: dict[int, bytes | None], max_mad: float,
                       block: int = 1 << 16) -> list[tuple[int, int]]:
    """Keep the pHash candidate pairs ((k, 2) ids) whose thumbnails (``thumbs``: check_image's, by
    id; None: none) also agree, each within max_mad levels (mean absolute difference): the 32x32
    grey ones (a hash alone pairs unrelated images with flat backgrounds) and the 8x8 colour ones
    (grey agrees on pictures of the same layout in other colours: seen among 10,000 DeepFashion twin
    images, grey 7.5 levels apart, colour 38; 8x8 because the chroma of a small JPEG copy is
    blurred, up to 9 levels at 32x32, 4 at 8x8). The thumbnails come from check_image, made while
    each image was decoded in a worker: confirming never decodes an image again (at 289,222 images
    with bunched hashes that second decode, in one process, was most of the stage).

    Vectorised, in blocks of ``block`` pairs (the tests compare it with a plain per-pair loop):
    bunched hashes give millions of candidate pairs at full size (a Python loop over them was most
    of the stage); here a pair costs a few vector operations on 1,216 bytes."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return []
    ids = np.unique(pairs)
    width = THUMB_GREY * THUMB_GREY + THUMB_COLOUR * THUMB_COLOUR * 3
    T = np.zeros((len(ids), width), np.uint8)
    ok = np.zeros(len(ids), bool)
    for r, i in enumerate(ids.tolist()):
        t = thumbs.get(i)
        if t is not None:
            T[r] = np.frombuffer(t, np.uint8)
            ok[r] = True
    ng = THUMB_GREY * THUMB_GREY
    out = []
    for s0 in range(0, len(pairs), block):
        p = pairs[s0:s0 + block]
        ra, rb = np.searchsorted(ids, p[:, 0]), np.searchsorted(ids, p[:, 1])
        d = np.abs(T[ra].astype(np.int16) - T[rb].astype(np.int16))
        # exact integer sums; divided in float32 as a float32 mean of the thumbnails is
        grey = d[:, :ng].sum(1, dtype=np.int64).astype(np.float32) / np.float32(ng)
        colour = d[:, ng:].sum(1, dtype=np.int64).astype(np.float32) / np.float32(width - ng)
        keep = ok[ra] & ok[rb] & (grey.astype(np.float64) <= max_mad) & (colour.astype(np.float64) <= max_mad)
        out += [(int(a), int(b)) for a, b in p[keep]]
    return out


def _groups(pairs, ids):
    parent = {i: i for i in ids}

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    out = defaultdict(list)
    for i in ids:
        out[find(i)].append(i)
    return [sorted(m) for m in out.values() if len(m) > 1]


def is_truncated(data: bytes) -> bool:
    """A JPEG without its end-of-image marker (padding after it is tolerated)."""
    if data[:2] != b"\xff\xd8":
        return False
    return not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def scan_cut(data: bytes, img: np.ndarray) -> bool:
    """A JPEG whose scan data was cut although an end marker follows: libjpeg then fills the
    missing blocks with exact mid-grey (all coefficients zero), so the last block (bottom right,
    decoded last) is 128 in every channel. Photographs and the twins' noisy drawings never are."""
    if data[:2] != b"\xff\xd8" or img.ndim != 3 or img.shape[0] < 8 or img.shape[1] < 8:
        return False
    return bool((img[-8:, -8:] == 128).all())


LEGACY_ENCODINGS = ("gbk", "big5", "shift_jis", "euc_kr", "cp1252", "cp1251", "cp866", "cp850", "latin-1")


def legacy_spelling(raw: Path, name: str) -> tuple[str, str] | None:
    """(code page, name found) when the image ``name`` (non-ASCII) is absent from ``raw`` but a zip
    without the UTF-8 flag spelled it in a legacy code page, which the extractor read as UTF-8
    (when those bytes happen to be valid UTF-8) or cp437: the file is there under that misread name."""
    if name.isascii():
        return None
    for enc in LEGACY_ENCODINGS:
        try:
            spelled = name.encode(enc)
        except UnicodeEncodeError:
            continue
        for reader in ("cp437", "utf-8"):  # datasets.archive.member_name reads unflagged names so
            try:
                misread = spelled.decode(reader)
            except UnicodeDecodeError:
                continue
            if misread != name and (Path(raw) / misread).is_file():
                return enc, misread
    return None


def check_image(path: Path, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS
                ) -> tuple[str | None, str, int | None, str | None, bytes | None]:
    """(failed check or None, reason, phash, sha256, thumbnails) of one image file; phash and
    thumbnails only for an image that passes. An image whose header claims more than
    ``max_pixels`` is not decoded (validate.max_pixels)."""
    import hashlib

    import cv2

    why = regular_file_error(path)
    if why == "the file does not exist":
        return "missing_file", "file not found", None, None, None
    if why is not None:
        return "missing_file", f"unreadable: {why}", None, None, None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing_file", "file not found", None, None, None
    except OSError as e:
        return "missing_file", f"unreadable: {e}", None, None, None
    sha = hashlib.sha256(data).hexdigest()
    big = too_many_pixels(data, max_pixels)
    if big is not None:
        return "too_many_pixels", f"not decoded: the header says {big}", None, sha, None
    img = decode(data) if data else None
    if is_truncated(data):
        return "truncated_jpeg", "JPEG ends before its end-of-image marker", None, sha, None
    if img is None:
        return "corrupt_jpeg", "OpenCV cannot decode it", None, sha, None
    if scan_cut(data, img):
        return "truncated_jpeg", "JPEG scan data cut short before its end marker (the decoder filled the rest grey)", None, sha, None
    if img.ndim != 3 or img.shape[2] != 3:
        ch = 1 if img.ndim == 2 else img.shape[2]
        return "not_3_channels", f"{ch} channel(s)", None, sha, None
    if min(img.shape[:2]) < min_side:
        return "too_small", f"{img.shape[1]}x{img.shape[0]} < {min_side} px", None, sha, None
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return None, "", phash(gray), sha, thumbnails(img, gray)


def resolve_workers(workers: int) -> int:
    try:
        return pool.resolve_workers(workers, "validate.workers")
    except DatasetError as e:
        raise ValidationFailed(str(e)) from None


def check_images(files: list[Path], min_side: int, workers: int = 1, progress: bool | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> list[tuple]:
    """check_image of every file, in the order given, in `workers` processes (datasets/pool.py:
    0 means os.cpu_count(), fewer when there are fewer than MIN_PER_WORKER images per process).
    Results are returned in input order, so they are the same list whatever the number of
    processes. The progress bar goes to stderr, off when stderr is not a terminal or progress=False."""
    fn = functools.partial(check_image, min_side=min_side, max_pixels=max_pixels)
    try:
        return pool.map_in_processes(fn, files, workers, "validate images", progress, "validate.workers")
    except DatasetError as e:
        raise ValidationFailed(str(e)) from e


def validate_tables(key: str, tables: dict[str, pl.DataFrame], raw: Path | None, params: dict,
                    labels_only: bool = False, progress: bool | None = None) -> tuple[dict[str, pl.DataFrame], dict]:
    """Validate parsed tables; returns (validated tables incl. quarantine and duplicates, report).
    `params` is params.yaml's validate section (near_duplicate_hamming, near_duplicate_max_mad and
    workers have no default here)."""
    import cv2

    cv2.setNumThreads(1)

    def required(name):
        if name not in params:
            raise ValidationFailed(f"validate.{name} is missing from params.yaml (its only source)")
        return params[name]

    try:
        min_side = int(params.get("min_side", 32))
        hamming = int(required("near_duplicate_hamming"))
        max_bad = float(params.get("max_bad_fraction", 0.05))
        max_dead = float(params.get("max_dead_link_fraction", 0.25))
        max_mad = float(required("near_duplicate_max_mad"))
        max_pixels = int(params.get("max_pixels", DEFAULT_MAX_PIXELS))
    except (TypeError, ValueError) as e:
        raise DatasetError(f"params validate: min_side, near_duplicate_hamming, max_bad_fraction, "
                           f"max_dead_link_fraction, near_duplicate_max_mad and max_pixels must be numbers ({e})") from None
    if not 0 <= hamming <= 63:
        raise ValidationFailed(f"validate.near_duplicate_hamming must be within 0..63 bits, got {hamming}")
    policy = params.get("maybe_policy", "negative")
    if policy not in ("negative", "positive", "drop"):
        raise ValidationFailed(f"validate.maybe_policy must be negative, positive or drop, got {policy!r}")
    workers = resolve_workers(required("workers")) if not labels_only else 1

    images = tables["images"]
    labels = tables["labels"]
    taxonomy = tables["taxonomy"]
    partition = tables.get("partition")
    roles = tables.get("asen_roles")
    sources = tables.get("sources")
    pq = tables.get("parse_quarantine")
    src = {}
    if sources is not None:
        src = {r[0]: (r[1], r[2]) for r in sources.select("image_id", "file", "line").iter_rows()}

    q: list[dict] = []  # quarantine rows
    findings: Counter = Counter()
    bad_images: dict[int, str] = {}

    def quarantine(kind, check, file, line, image_id, reason):
        q.append({"kind": kind, "check": check, "file": file, "line": line, "image_id": image_id, "reason": reason})
        findings[check] += 1
        if image_id is not None:
            bad_images.setdefault(image_id, check)

    if pq is not None:
        for r in pq.iter_rows(named=True):
            quarantine("row", r["check"], r["file"], r["line"], None, r["reason"])

    # --- images
    paths = dict(images.select("image_id", "path").iter_rows())
    hashes: dict[int, int] = {}
    shas: dict[int, str] = {}
    thumbs: dict[int, bytes] = {}
    dead = {}
    if raw is not None and (Path(raw) / MISSING_FILE).is_file():
        dead = json.loads((Path(raw) / MISSING_FILE).read_text())
    dead_counts: Counter = Counter()
    if not labels_only:
        items = list(paths.items())
        results = check_images([Path(raw) / p for _, p in items], min_side, workers, progress, max_pixels)
        for (image_id, path), (check, reason, h, sha, th) in zip(items, results):
            legacy = legacy_spelling(raw, path) if check == "missing_file" else None
            if legacy is not None:
                check = "name_encoding"
                reason = (f"the archive names this file in {legacy[0]} without the zip's UTF-8 flag (read as "
                          f"{legacy[1]!r}); repack it with UTF-8 names")
            elif check == "missing_file" and dead.get(path, {}).get("status") is not None:
                info = dead[path]
                status = info.get("status")
                check = "dead_link"
                reason = f"download failed: {'HTTP ' + str(status) if isinstance(status, int) else status} ({info.get('error', '')})"
                dead_counts[str(status)] += 1
            if check:
                quarantine("file", check, path, None, image_id, reason)
            else:
                hashes[image_id] = h
                shas[image_id] = sha
                thumbs[image_id] = th

    # --- labels
    known = set(paths)
    tax = set(taxonomy.select("attribute_id", "class_id").iter_rows())

    def where(i):
        return src.get(i, (paths.get(i, "?"), None))

    lab = labels.with_row_index("_row")
    bad_label_rows: set[int] = set()
    for row, img, a, c, state in lab.select("_row", "image_id", "attribute_id", "class_id", "state").iter_rows():
        if img not in known:
            bad_label_rows.add(row)
            quarantine("row", "unknown_image", "labels", None, None, f"label of image {img} which is not in images")
        elif (a, c) not in tax:
            bad_label_rows.add(row)
            f, ln = where(img)
            quarantine("row", "class_outside_taxonomy", f, ln, img, f"attribute {a} class {c} is not in the taxonomy")
        elif key == "deepfashion" and state not in ("positive", "unknown"):
            bad_label_rows.add(row)
            f, ln = where(img)
            quarantine("row", "bad_state", f, ln, img, f"DeepFashion labels are 1/-1/0, got state {state}")

    maybe_images: set[int] = set()
    if key == "fashionai":
        pos = Counter(img for img, s in labels.select("image_id", "state").iter_rows() if s == "positive")
        maybe_images = set(labels.filter(pl.col("state") == "maybe")["image_id"].to_list())
        for img in sorted(known):
            f, ln = where(img)
            if pos[img] == 0:
                quarantine("row", "fashionai_no_yes", f, ln, img, "no 'y' in the label")
            elif pos[img] > 1:
                quarantine("row", "fashionai_multiple_yes", f, ln, img, f"{pos[img]} 'y' in the label")
        # an 'm' on a row already set aside for its 'y' count is not counted twice
        maybe_images -= {i for i, c in bad_images.items() if c in ("fashionai_no_yes", "fashionai_multiple_yes")}
        for img in sorted(maybe_images):
            if policy == "drop":
                f, ln = where(img)
                quarantine("row", "fashionai_maybe", f, ln, img, "an 'm' in the label (maybe_policy: drop)")
            else:
                findings["fashionai_maybe"] += 1

    # --- cascade and keep
    bad_ids = set(bad_images)
    kept_images = images.filter(~pl.col("image_id").is_in(list(bad_ids)))
    keep_lab = lab.filter(~pl.col("_row").is_in(list(bad_label_rows)) & ~pl.col("image_id").is_in(list(bad_ids)))
    keep_lab = keep_lab.drop("_row")
    if key == "fashionai" and policy != "drop":
        keep_lab = keep_lab.with_columns(
            pl.when(pl.col("state") == "maybe").then(pl.lit(policy)).otherwise(pl.col("state")).alias("state"))
    out = {"images": kept_images, "labels": keep_lab, "taxonomy": taxonomy}
    if partition is not None:
        out["partition"] = partition.filter(pl.col("image_id").is_in(kept_images["image_id"].to_list()))
    if roles is not None:
        out["asen_roles"] = roles.filter(pl.col("image_id").is_in(kept_images["image_id"].to_list()))

    # --- duplicates among kept images
    kept_ids = set(kept_images["image_id"].to_list())
    part_of = dict(partition.iter_rows()) if partition is not None else {}
    dup_rows = []
    by_sha = defaultdict(list)
    for i in sorted(kept_ids & set(shas)):
        by_sha[shas[i]].append(i)
    exact = [m for m in by_sha.values() if len(m) > 1]
    reps = {m[0]: hashes[m[0]] for m in by_sha.values()}
    cand = near_pair_ids(reps, hamming)
    near = _groups(confirm_near_array(cand, thumbs, max_mad), list(reps)) if len(cand) else []
    del thumbs
    groups_report = []
    for kind, groups in (("exact", exact), ("near", near)):
        for members in sorted(groups):
            gid = len(groups_report)
            spans = len({part_of[i] for i in members if i in part_of}) > 1
            groups_report.append({"group_id": gid, "kind": kind, "paths": [paths[i] for i in members],
                                  "spans_partitions": spans})
            for i in members:
                dup_rows.append({"group_id": gid, "kind": kind, "image_id": i, "spans_partitions": spans})
    duplicates = pl.DataFrame(dup_rows, schema={"group_id": pl.Int64, "kind": pl.Utf8, "image_id": pl.Int64,
                                                "spans_partitions": pl.Boolean})
    quarantine_df = pl.DataFrame(q, schema={"kind": pl.Utf8, "check": pl.Utf8, "file": pl.Utf8, "line": pl.Int64,
                                            "image_id": pl.Int64, "reason": pl.Utf8})
    out["quarantine"] = QuarantineSchema.validate(quarantine_df)
    out["duplicates"] = DuplicatesSchema.validate(duplicates)

    counts = {}
    for name in ("images", "labels", "partition", "asen_roles"):
        src_t = {"images": images, "labels": labels, "partition": partition, "asen_roles": roles}[name]
        if src_t is None:
            continue
        rows_in, kept = src_t.height, out[name].height
        counts[name] = {"rows_in": rows_in, "kept": kept, "quarantined": rows_in - kept}
        assert counts[name]["rows_in"] == counts[name]["kept"] + counts[name]["quarantined"]
        assert kept <= rows_in, f"{name}: more rows kept than read"
    parse_lines = pq.height if pq is not None else 0
    counts["annotation_lines_quarantined_at_parse"] = parse_lines
    # dead links apart: a URL list's dead share is the source's, not damage to a copy
    dead_images = sum(1 for i in bad_ids & known if bad_images[i] == "dead_link")
    other_images = len(bad_ids & known) - dead_images
    units = images.height - dead_images + parse_lines  # what arrived (and the lines read)
    bad_units = other_images + parse_lines
    frac = bad_units / units if units else 0.0
    dead_frac = dead_images / images.height if images.height else 0.0
    assert dead_images + other_images == counts["images"]["quarantined"]
    listed = defaultdict(list)
    for r in q:
        if len(listed[r["check"]]) < MAX_LISTED:
            listed[r["check"]].append(r["file"] if r["line"] is None else f"{r['file']}:{r['line']}")
    if key == "fashionai" and policy != "drop":
        listed["fashionai_maybe"] = [f"{f}:{ln}" if ln else f for f, ln in (where(i) for i in sorted(maybe_images))][:MAX_LISTED]
    report = {
        "dataset": key,
        "labels_only": labels_only,
        "params": {"min_side": min_side, "max_pixels": max_pixels, "near_duplicate_hamming": hamming, "near_duplicate_max_mad": max_mad, "maybe_policy": policy,
                   "max_bad_fraction": max_bad, "max_dead_link_fraction": max_dead},
        "checks": dict(sorted(findings.items())),
        "quarantined": dict(sorted(Counter(r["check"] for r in q).items())),
        "tables": counts,
        "images_quarantined": {"dead_link": dead_images, "other": other_images},  # sums to tables.images.quarantined
        "dead_links": dict(sorted(dead_counts.items())),
        "duplicate_groups": {"exact": len(exact), "near": len(near), "near_candidates": len(cand),
                             "spans_partitions": sum(g["spans_partitions"] for g in groups_report),
                             "groups": groups_report[:MAX_LISTED]},
        "findings": {k: v for k, v in sorted(listed.items())},
        "bad_fraction": round(frac, 6),
        "dead_link_fraction": round(dead_frac, 6),
        "failed": [name for name, ok in (("max_bad_fraction", frac <= max_bad),
                                         ("max_dead_link_fraction", dead_frac <= max_dead)) if not ok],
    }
    report["passed"] = not report["failed"]
    return out, report


def failure_lines(report: dict) -> list[str]:
    """Why a validation report did not pass, one line per threshold exceeded, naming its param."""
    p, out = report["params"], []
    if "max_bad_fraction" in report["failed"]:
        out.append(f"{report['bad_fraction']:.1%} of the images that arrived (and annotation lines) quarantined, "
                   f"more than validate.max_bad_fraction = {p['max_bad_fraction']:.1%}")
    if "max_dead_link_fraction" in report["failed"]:
        out.append(f"{report['dead_link_fraction']:.1%} of the images are dead links (download failed: "
                   f"{report['images_quarantined']['dead_link']} of {report['tables']['images']['rows_in']}), "
                   f"more than validate.max_dead_link_fraction = {p['max_dead_link_fraction']:.1%}")
    return out


def load_tables(folder: Path) -> dict[str, pl.DataFrame]:
    out = {}
    for name, schema in PARSE_TABLES.items():
        p = Path(folder) / f"{name}.parquet"
        if p.exists():
            out[name] = read_table(p, schema)
        elif name in ("images", "labels", "taxonomy"):
            raise DatasetError(f"{p} is missing: run the parse stage first")
    return out


def write_validated(out: dict[str, pl.DataFrame], folder: Path) -> None:
    write_tables(out, folder, dict(PARSE_TABLES, quarantine=QuarantineSchema, duplicates=DuplicatesSchema))


def main(argv: list[str] | None = None) -> int:
    from datasets.params import load_params

    ap = argparse.ArgumentParser(prog="python -m datasets.validate", description=__doc__)
    ap.add_argument("key", choices=DATASETS)
    args = ap.parse_args(argv)
    params = load_params()["validate"]
    try:
        tables = load_tables(tables_dir(args.key))
        out, report = validate_tables(args.key, tables, raw_dir(args.key), params)
    except DatasetError as e:
        print(f"validate {args.key}: {e}", file=sys.stderr)
        return 1
    write_validated(out, validated_dir(args.key))
    write_json(validation_report(args.key), report)
    print(f"validate {args.key}: checks {report['checks']}; images "
          f"{report['tables']['images']['kept']}/{report['tables']['images']['rows_in']} kept; "
          f"duplicate groups {report['duplicate_groups']['exact']} exact, {report['duplicate_groups']['near']} near")
    if not report["passed"]:
        for line in failure_lines(report):
            print(f"validate {args.key}: FAILED: {line}; see {validation_report(args.key)} and "
                  f"{validated_dir(args.key) / 'quarantine.parquet'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
