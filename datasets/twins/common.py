"""Shared machinery of the twin writers: seeds, JPEG encoding, defect planning, deterministic zips."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np

from datasets.atomic import atomic_path, write_bytes

cv2.setNumThreads(1)

KEYS = ("deepfashion", "fashionai", "darn")
JPEG_QUALITY = 90
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

EXPECT = {
    "corrupt_jpeg": {"quarantine": "file", "reason": "image cannot be decoded"},
    "truncated_jpeg": {"quarantine": "file", "reason": "image truncated: the file ends before the JPEG end-of-image marker"},
    "missing_file": {"quarantine": "file", "reason": "image named in the annotations is absent"},
    "exact_duplicate": {"quarantine": None, "reason": "exact duplicate (same sha256) of duplicate_of"},
    "resized_duplicate": {"quarantine": None, "reason": "near duplicate (perceptual hash within the threshold) of duplicate_of"},
    "fashionai_maybe": {"quarantine": None, "reason": "row carries an 'm' (maybe) next to exactly one 'y'"},
    "fashionai_no_yes": {"quarantine": "row", "reason": "label string has no 'y'"},
    "deepfashion_bad_columns": {"quarantine": "row", "reason": "row has a wrong number of columns"},
    "darn_404": {"quarantine": "file", "reason": "download answered HTTP 404; image missing"},
    "darn_drop": {"quarantine": "file", "reason": "download connection dropped mid-file; image missing"},
}


def key_rng(seed: int, key: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), KEYS.index(key), *extra])


def image_rng(seed: int, key: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), KEYS.index(key), 7, int(index)])


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()


def corrupt(data: bytes, rng: np.random.Generator) -> bytes:
    """Garble the headers and the start of the scan so no decoder accepts the file."""
    b = bytearray(data)
    n = min(len(b) - 2, 400)
    b[2:2 + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return bytes(b)


def truncate(data: bytes) -> bytes:
    return data[: max(64, int(len(data) * 0.4))]


def _hashes(img):
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    d = cv2.resize(g, (9, 8), interpolation=cv2.INTER_AREA).astype(int)
    a = cv2.resize(g, (8, 8), interpolation=cv2.INTER_AREA)
    return np.concatenate([(d[:, 1:] > d[:, :-1]).ravel(), (a > a.mean()).ravel()])


def resized(img: np.ndarray, rng: np.random.Generator) -> bytes:
    """The same picture at another size, re-encoded; the first candidate size whose 64-bit dHash and
    aHash both stay within 2 bits of the original (so a near-duplicate check at 4 must find it)."""
    s = img.shape[0]
    ref = _hashes(img)
    scales = [1.25, 0.8, 1.5, 0.9, 1.1]
    first = int(rng.integers(len(scales)))
    best = None
    for f in scales[first:] + scales[:first]:
        t = int(round(s * f))
        out = cv2.resize(img, (t, t), interpolation=cv2.INTER_AREA if t < s else cv2.INTER_LINEAR)
        data = encode_jpeg(out, 85)
        h = _hashes(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        dd, da = int((h[:64] != ref[:64]).sum()), int((h[64:] != ref[64:]).sum())
        if best is None or max(dd, da) < best[0]:
            best = (max(dd, da), data)
        if dd <= 2 and da <= 2:
            return data
    return best[1]


def n_defects(rate, n: int) -> int:
    """An int in params is a count, a float a rate of the images (at least one when positive)."""
    if rate is None or rate == 0:
        return 0
    if isinstance(rate, bool):
        return int(rate)
    if isinstance(rate, int) or (isinstance(rate, float) and rate >= 1):
        return int(rate)
    return max(1, int(round(float(rate) * n)))


def plan_image_defects(n: int, params: dict, rng: np.random.Generator, partitions=None):
    """Choose which record indices carry which image defect.

    Returns dict kind -> list of indices, plus 'sources': {dup index: source index}. Duplicates
    replace a record (which copies its source's labels); about half of the exact duplicates take a
    source from another partition when partitions are given."""
    d = params.get("defects", {}) or {}
    order = [int(i) for i in rng.permutation(n)]
    take = lambda k: [order.pop() for _ in range(min(k, max(0, len(order) - 1)))]  # noqa: E731
    plan = {"exact_duplicate": take(n_defects(d.get("exact_duplicate"), n)),
            "resized_duplicate": take(n_defects(d.get("resized_duplicate"), n))}
    sources = {}
    for j, dup in enumerate(plan["exact_duplicate"] + plan["resized_duplicate"]):
        want_other = partitions is not None and j % 2 == 0
        pick = None
        for cand in order:
            if dup < cand:
                continue
            if partitions is None or (partitions[cand] != partitions[dup]) == want_other:
                pick = cand
                break
        if pick is None:
            pick = next((c for c in order if c < dup), None)
        if pick is None:  # duplicate of a later record: swap roles so the source comes first
            pick = order[0]
        order.remove(pick)
        sources[dup] = pick
    for kind in ("corrupt_jpeg", "truncated_jpeg", "missing_file"):
        plan[kind] = take(n_defects(d.get(kind), n))
    plan["sources"] = sources
    return plan, order  # order: the untouched indices left


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    """Deterministic zip: sorted members, fixed timestamps and attributes; JPEGs stored, text deflated."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".jpg") else zipfile.ZIP_DEFLATED
            zf.writestr(info, members[name])


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=False, ensure_ascii=False) + "\n")


def hex_name(*parts) -> str:
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def zipf(rng: np.random.Generator, names, a: float = 1.1):
    """Pick one of names with long-tailed (Zipf-like) probabilities, in list order."""
    w = 1.0 / np.arange(1, len(names) + 1) ** a
    return names[int(rng.choice(len(names), p=w / w.sum()))]
