"""Stage `acquire`: the source named in params (acquire.<key>) -> data/<key>/raw + reports/<key>/acquire.json.

    python -m datasets.acquire <key>

Sources (`acquire.<key>.source`):
- `twin`: the generated folder (`path`). DeepFashion's `Img/img.zip` and FashionAI's zip are
  extracted safely; DARN's twin is served on 127.0.0.1 and every URL of `urls.txt` is downloaded
  through the real downloader, so planted 404s and dropped connections become dead links.
- `local`: a folder or a zip/tar archive (or a list of them) the user downloaded (`path`);
  archives are extracted safely and their sha256 recorded (and checked against `sha256`).
- `url`: `url` (one or a list) downloaded with resume and checksum (`sha256`), then as `local`.
  DARN: `path` (or `url`) gives the ASEN split files and `urls.txt`; the image URLs (relative
  ones joined to `base_url`) are fetched with bounded concurrency; dead ones are reported.
- `asen`: ASEN's published split files (`path`, `meta` optional: default meta.json beside or above
  them) and the images from a local folder (`images`, optional).

The user's inputs are only read: folders are copied (never hard-linked, so extracting or
replacing a file in raw/ cannot reach the user's copy), archives are read in place. An input that
is raw/ (emptied first), the download cache or the report, holds one or lies inside one is refused. Extraction
is capped (`acquire.max_member_bytes`, `acquire.max_total_bytes`, `acquire.max_compression_ratio`).

acquire.json counts what arrived, without parsing the annotation tables (the parse stage reads
them; which named image is absent is validate's ``missing_file`` check):

- ``files``: the regular files that arrived in raw/; ``images_obtained``: those with an image suffix
  (.jpg, .jpeg, .png), whatever their content (decoding them is validate's);
- ``inputs``: each archive read, with its bytes, sha256 (and the one expected) and ``members``,
  the files extracted from it;
- ``images_requested``: for the sources that fetch images one by one (DARN's URLs, the images
  folder of ``source: asen``) the images asked for, else null; ``missing``: those that did not
  arrive; ``dead_links`` (and ``urls``): the URLs that failed, by status;
- ``download`` (DARN's URL list): ``urls``, ``fetched`` (downloaded by this run), ``from_cache``
  (already complete in the download cache, not requested), ``dead`` and ``length_unverified``:
  answers without a Content-Length (close-delimited), kept but complete or cut nothing could tell
  (their paths in ``length_unverified``); ``downloads`` (``source: url``): per URL its ``bytes``,
  ``length_verified`` and ``sha256_checked``, and ``length_unverified`` the URLs with neither.

Errors name the user's file (and line), not its copy in raw/: a split file that leaves the release
folder is ``<the user's folder>/filenames_train.txt:3``. An annotation file may come from one
place only: an inner archive whose member would replace a file of the user's folder with other
bytes, or (DeepFashion) that carries annotation files beside the folder's own, is an error naming
both.

The images asked for and not obtained are also listed, with the reason, in
raw/acquire_missing.json, from which the validate stage tells a dead link from a missing file.

DARN's download cache, ``data/<key>/download_cache/<list>/`` (``datasets.paths.download_cache_dir``;
``<list>``: 16 hex digits of the sha256 of the URL list and of what stands behind it, the twin's
manifest or ``base_url``): the images are downloaded there and hard-linked (else copied) into raw/,
which the stage rebuilds on every run. The cache is the suite's own folder, outside every DVC
output (DVC deletes a stage's outputs before it runs), ignored by git with the rest of data/, so a
download killed part-way resumes: a file complete in the cache (files appear there only through
the downloader's atomic rename of the finished ``.part``) is not requested again, a leftover
``.part`` is resumed with a Range request (for the twin only within one run: its server listens on a
new port each run and a ``.part`` is resumed only from the URL it was started from), and a dead
URL is tried again on every run. A new list (or a regenerated twin) gets a new folder and the old
one is removed. Delete the folder to download everything again.

The download's seconds and URLs per second are run-dependent, so they go to the untracked
``reports/<key>/acquire_timing.json`` (with the counts of ``download`` and the concurrency), not
into acquire.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import shutil
import sys
import time
import urllib.parse
from pathlib import Path

from datasets import DATASETS
from datasets.archive import copy_file, extract, is_archive, sha256_file
from datasets.errors import ChecksumError, ConflictError, DatasetError, NotThisDatasetError
from datasets.paths import MISSING_FILE, download_cache_dir, raw_dir, reports_dir, twin_manifest
from datasets.schemas import write_json

ASEN_FILE_PREFIXES = ("filenames_", "label_", "query_", "candidate_")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what the parsers accept as image files


# the release's annotation files (each named list_*): one may come from one place only (the user's folder or an inner
# archive), since the parser picks one layout (Anno/, Anno_coarse/, Anno_fine/) and would read the
# inner archive's copy without a word
ANNOTATION_FILES = {"deepfashion": ("list_attr_cloth.txt", "list_attr_img.txt", "list_eval_partition.txt")}


def _copy_tree(src: Path, dst: Path, skip=lambda p: False, origins: dict | None = None) -> int:
    """Copy the regular files under src into dst (FIFOs and devices are left out: reading one
    would block). The source is only read. ``origins`` (copy -> the user's file) is filled in, for
    messages that name the user's file rather than the copy."""
    n = 0
    files = sorted(src.rglob("*"))
    skipped = [p for p in files if p.is_dir() and skip(p)]  # an inner archive's name that is a folder
    for p in files:
        if p.is_file() and not skip(p) and not any(q in p.parents for q in skipped):
            copy_file(p, dst / p.relative_to(src))
            if origins is not None:
                origins[str(dst / p.relative_to(src))] = str(p)
            n += 1
    return n


def user_paths(text: str, origins: dict) -> str:
    """``text`` with the suite's copies spelled as the user's files they were copied from."""
    for copy in sorted(origins, key=len, reverse=True):
        text = text.replace(copy, origins[copy])
    return text


def _renamed(e: DatasetError, origins: dict) -> DatasetError:
    """The error ``e`` naming the user's files instead of the suite's copies in raw/."""
    if not origins:
        return e
    if getattr(e, "path", None) in origins:
        e.path = origins[e.path]
    e.args = (user_paths(str(e), origins),) + tuple(e.args[1:])
    return e


def caps(acq: dict) -> dict:
    """The extraction caps of params `acquire` (defaults in datasets.archive)."""
    from datasets.archive import DEFAULT_MAX_RATIO, DEFAULT_MAX_TOTAL_BYTES

    try:
        return {"max_member_bytes": int(acq.get("max_member_bytes", 200 << 20)),
                "max_total_bytes": int(acq.get("max_total_bytes", DEFAULT_MAX_TOTAL_BYTES)),
                "max_ratio": float(acq.get("max_compression_ratio", DEFAULT_MAX_RATIO))}
    except (TypeError, ValueError) as e:
        raise DatasetError(f"params acquire: max_member_bytes, max_total_bytes and max_compression_ratio must be "
                           f"numbers ({e})") from None


def _extract(archive: Path, dest: Path, cap) -> list[str]:
    """The member files written (datasets.archive.extract)."""
    cap = cap if isinstance(cap, dict) else {"max_member_bytes": int(cap)}
    return extract(archive, dest, cap["max_member_bytes"], cap.get("max_total_bytes"), cap.get("max_ratio"))


def _record_archive(path: Path, expected, report: dict) -> dict:
    """Record an input archive (bytes, sha256, the one expected) in the report; its entry."""
    digest = sha256_file(path)
    want = expected.get(path.name) if isinstance(expected, dict) else expected
    entry = {"path": str(path), "bytes": path.stat().st_size, "sha256": digest, "expected_sha256": want}
    report["inputs"].append(entry)
    if want and want.lower() != digest:
        raise ChecksumError(path, want, digest)
    return entry


def _acquire_archive(path: Path, dest: Path, expected, cap, report: dict) -> list[str]:
    """Check an archive against its expected sha256, extract it into dest and count its members;
    the members written."""
    entry = _record_archive(path, expected, report)
    members = _extract(path, dest, cap)
    entry["members"] = len(members)
    return members


def _hoist(raw: Path, marker) -> None:
    """When an archive wrapped the release in one top folder, move its contents up into raw/."""
    if marker(raw):
        return
    subs = [p for p in raw.iterdir() if p.is_dir()]
    for s in subs:
        if marker(s):
            for child in list(s.iterdir()):
                target = raw / child.name
                if not target.exists():
                    shutil.move(str(child), str(target))
            if not any(s.iterdir()):
                s.rmdir()
            return


def inner_archives(key: str, folder: Path) -> list[Path]:
    """The release's inner archives in a folder (DeepFashion Img/*.zip, FashionAI's zips and tars).
    DeepFashion's are listed whatever they are (an ``Img/img.zip`` that is a folder is named as an
    error when it is read, not taken for images)."""
    folder = Path(folder)
    if key == "deepfashion":
        return sorted((folder / "Img").glob("*.zip")) if (folder / "Img").is_dir() else []
    if key == "fashionai":
        return [p for p in sorted(folder.glob("*.zip")) + sorted(folder.glob("*.tar*")) if p.is_file()]
    return []


def _expand_nested(key: str, raw: Path, max_bytes, expected_sha, report: dict, source: Path | None = None) -> None:
    """Extract the release's inner archives (DeepFashion Img/img.zip, FashionAI's zips) into raw.
    They are read from ``source`` (a user's folder, only read) or from raw itself, where the
    extracted archive is then removed (it is the suite's own copy)."""
    src = Path(source) if source is not None else raw
    names = ANNOTATION_FILES.get(key, ())
    for z in inner_archives(key, src):
        before = {p.relative_to(raw).as_posix() for p in raw.rglob("list_*") if p.name in names and p.is_file()} \
            if names else set()
        members = _acquire_archive(z, raw, expected_sha if isinstance(expected_sha, dict) else None, max_bytes, report)
        # a copy at the same path with other bytes is refused by the extractor; one at another path
        # (Anno/ in the archive, Anno_coarse/ in the folder) would be read instead of the user's
        extra = [m for m in members if posixpath.basename(m) in names and posixpath.normpath(m) not in before]
        if before and extra:
            shown = ", ".join(str(raw / b) for b in sorted(before))
            raise ConflictError(f"{z}!/{extra[0]}: an annotation file inside the release's inner archive, beside the "
                                f"folder's own ({shown}); annotations may come from one place only (remove one)")
        if source is None:
            z.unlink()
    if key == "deepfashion" and (raw / "Img").is_dir() and not any((raw / "Img").iterdir()):
        (raw / "Img").rmdir()


def _markers(key: str):
    if key == "deepfashion":
        return lambda d: any((d / n / "list_attr_img.txt").is_file() for n in ("Anno", "Anno_coarse", "Anno_fine"))
    if key == "fashionai":
        return lambda d: any(d.glob("*/Annotations/label.csv")) or (d / "Annotations" / "label.csv").is_file() or any(d.glob("*.zip"))
    return lambda d: any((d / f"filenames_{s}.txt").is_file() for s in ("train", "valid", "test"))


def _from_local(key: str, inputs: list[Path], raw: Path, cfg: dict, max_bytes: int, report: dict,
                origins: dict | None = None) -> None:
    for src in inputs:
        if not src.exists():
            raise DatasetError(f"acquire.{key}.path: {src} does not exist")
        if src.is_file() and is_archive(src):
            _acquire_archive(src, raw, cfg.get("sha256"), max_bytes, report)
        elif src.is_dir():
            inner = set(inner_archives(key, src))  # read in place, not copied first
            _copy_tree(src, raw, skip=lambda p: p in inner, origins=origins)
            _expand_nested(key, raw, max_bytes, cfg.get("sha256"), report, source=src)
        else:
            raise NotThisDatasetError(f"{src}: neither a folder nor a zip/tar archive")
    _hoist(raw, _markers(key))
    _expand_nested(key, raw, max_bytes, cfg.get("sha256"), report)


def _copy_asen_files(src: Path, raw: Path, meta: Path | None, origins: dict | None = None) -> None:
    """Copy ASEN's split files (and urls.txt, meta.json) into raw/. A meta.json that is a folder,
    FIFO or device is an error naming it (not skipped for the packaged meta)."""
    from datasets.parsers.asen import find_meta, is_asen_folder

    if not is_asen_folder(src):
        raise NotThisDatasetError(f"{src}: no ASEN split files (filenames_train/valid/test.txt)")
    origins = {} if origins is None else origins
    for p in sorted(src.iterdir()):
        if p.is_file() and (p.name.startswith(ASEN_FILE_PREFIXES) or p.name in ("urls.txt",)):
            copy_file(p, raw / p.name)
            origins[str(raw / p.name)] = str(p)
    meta = meta or find_meta(src)
    if meta is not None:
        copy_file(meta, raw / "meta.json")  # FormatError naming it when it is not a regular file
        origins[str(raw / "meta.json")] = str(meta)


def _copy_asen_images(raw: Path, images: Path) -> list[str]:
    """Copy the images that ASEN's filenames_*.txt (already in raw/) name from the ``images``
    folder into raw/; the names asked for, in order, each once."""
    from datasets.parsers import confined
    from datasets.parsers.asen import parse_filenames

    images_root = images.resolve()
    requested: dict[str, None] = {}
    for f in sorted(raw.glob("filenames_*.txt")):
        for name, _ in parse_filenames(f):  # names are normalised and relative (FormatError otherwise)
            if not name or name in requested:
                continue
            requested[name] = None
            src_img = confined(images_root, name)
            if src_img is not None and src_img.is_file():
                copy_file(src_img, raw / name)
    return list(requested)


def _twin_faults(twin: Path, urls: list[tuple[str, str, int]]) -> dict[str, str]:
    """Network faults the twin planted: faults.json, else the manifest's darn_drop entries."""
    f = twin / "faults.json"
    if f.is_file():
        return json.loads(f.read_text())
    faults = {}
    m = twin_manifest(twin)
    if not m.is_file():
        return faults
    by_path = {p: u for p, u, _ in urls}
    by_line = {ln: u for _, u, ln in urls}
    for d in json.loads(m.read_text()).get("defects", []):
        if d.get("kind") != "darn_drop":
            continue
        url = d.get("url") or by_path.get(d.get("image") or "") or by_path.get(d.get("file") or "")
        if url is None and d.get("file") == "urls.txt" and d.get("line"):
            url = by_line.get(int(d["line"]))
        if url:
            faults[urllib.parse.urlsplit(url).path if "://" in url else "/" + url.lstrip("/")] = "drop"
    return faults


CACHE_SCOPE_CHARS = 16  # hex digits of the sha256 that names a URL list's folder in the download cache


def _cache_scope(cache_root: Path, identity: bytes) -> Path:
    """The download cache's folder for one URL list (named by the sha256 of ``identity``: what the
    URLs and the bytes behind them are). The folders of other lists, or of an older twin, are removed:
    their files may differ under the same relative paths, and the cache holds one list's images."""
    scope = hashlib.sha256(identity).hexdigest()[:CACHE_SCOPE_CHARS]
    cache_root = Path(cache_root)
    if cache_root.is_dir():
        for other in cache_root.iterdir():
            if other.name != scope and other.is_dir() and len(other.name) == CACHE_SCOPE_CHARS \
                    and all(c in "0123456789abcdef" for c in other.name):
                shutil.rmtree(other)
    folder = cache_root / scope
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _twin_identity(twin: Path) -> bytes:
    """What the twin serves: its urls.txt and manifest.json (the generator's seed and params), or,
    without a manifest, every file's path, size and mtime."""
    parts = [b"twin", (twin / "urls.txt").read_bytes()]
    m = twin_manifest(twin)
    if m.is_file():
        parts.append(m.read_bytes())
    else:
        for p in sorted(twin.rglob("*")):
            if p.is_file():
                st = p.stat()
                parts.append(f"{p.relative_to(twin)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return b"\n".join(parts)


def _link(src: Path, dst: Path) -> None:
    """dst as a hard link to src (the suite's own cache file, never a user's), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _fetch_darn(raw: Path, base_url: str, dl: dict, report: dict, cache: Path, shown_base: str | None = None) -> tuple[dict, dict]:
    """Fetch every URL of urls.txt into the download cache folder ``cache`` (one URL list's, see
    _cache_scope) and link what arrived into raw/; (dead links, timing). A file already complete in
    the cache is not requested again; a ``.part`` there (a run killed part-way, a dropped
    connection) is resumed with a Range request; a dead URL is tried again on every run.
    ``shown_base`` replaces ``base_url`` in what is recorded (the twin's loopback server listens on
    a new port each run; recording it would change raw/ and every stage downstream on each run)."""
    from datasets.download import fetch_many

    from datasets.parsers.darn import parse_urls

    urls = parse_urls(raw / "urls.txt")
    items = [(p, urllib.parse.urljoin(base_url, u)) for p, u, _ in urls]
    concurrency = int(dl.get("concurrency", 32))
    t0 = time.perf_counter()
    results = fetch_many(items, cache, concurrency=concurrency, retries=dl.get("retries", 3),
                         backoff_s=dl.get("backoff_s", 0.2), timeout_s=dl.get("timeout_s", 10))
    for r in results:
        if r.ok:
            _link(cache / r.path, raw / r.path)
    seconds = time.perf_counter() - t0
    show = (lambda t: t.replace(base_url, shown_base)) if shown_base else (lambda t: t)  # noqa: E731
    dead = {r.path: {"url": show(r.url), "status": r.status, "error": show(r.error or "") or None}
            for r in results if not r.ok}
    by_status: dict[str, int] = {}
    for d in dead.values():
        by_status[str(d["status"])] = by_status.get(str(d["status"]), 0) + 1
    report["urls"] = len(items)
    report["images_requested"] = len({p for p, _ in items})
    report["dead_links"] = {"count": len(dead), "by_status": dict(sorted(by_status.items())),
                            "items": [{"path": k, **v} for k, v in sorted(dead.items())]}
    from_cache = sum(1 for r in results if r.cached)
    unverified = sorted(r.path for r in results if r.ok and r.length_verified is False)
    report["download"] = {"urls": len(items), "fetched": sum(1 for r in results if r.ok) - from_cache,
                          "from_cache": from_cache, "dead": len(dead), "length_unverified": len(unverified)}
    report["length_unverified"] = unverified  # close-delimited answers: complete or cut, nothing could tell
    timing = dict(report["download"], concurrency=concurrency, seconds=round(seconds, 3),
                  urls_per_s=round(len(items) / seconds, 1) if seconds > 0 else None)
    return dead, timing


def acquire(key: str, cfg: dict, acq: dict, raw: Path | None = None, report_path: Path | None = None,
            cache: Path | None = None) -> dict:
    """Populate raw/ from the configured source; returns (and writes) the acquire report. DARN's
    URLs are downloaded into ``cache`` (default: raw's sibling ``download_cache``), which outlives
    the run; the timing of that download goes beside the report, in acquire_timing.json. An error
    names the user's file (and line), not its copy in raw/."""
    origins: dict[str, str] = {}  # a copy in raw/ -> the user's file it was copied from
    try:
        return _acquire(key, cfg, acq, raw, report_path, cache, origins)
    except DatasetError as e:
        raise _renamed(e, origins) from None


def _refuse_overlap(key: str, cfg: dict, outputs: dict[str, Path]) -> None:
    """DatasetError when an output (raw/, which is emptied first, the download cache, the report)
    is a user's input, lies inside one, or holds one: a user's input is never written or removed."""
    inputs = []
    for k in ("path", "meta", "images"):
        v = cfg.get(k)
        for one in (v if isinstance(v, list) else [v]):
            if one and "://" not in str(one):
                inputs.append((k, Path(one)))
    for name, out in outputs.items():
        o = Path(out).resolve()
        for k, inp in inputs:
            i = inp.resolve()
            if o == i or i in o.parents or o in i.parents:
                raise DatasetError(f"acquire.{key}.{k}: {inp} and the stage's {name} {out} overlap (one is, or holds, "
                                   "the other); the stage would write into or empty the user's input: give a copy "
                                   "outside data/")


def _acquire(key: str, cfg: dict, acq: dict, raw: Path | None, report_path: Path | None, cache: Path | None,
             origins: dict) -> dict:
    raw = Path(raw or raw_dir(key))
    cache = Path(cache) if cache is not None else raw.parent / "download_cache"
    source = cfg.get("source", "twin")
    max_bytes = caps(acq)
    dl = acq.get("download", {}) or {}
    _refuse_overlap(key, cfg, {"raw": raw, "download cache": cache,
                               **({"report": Path(report_path)} if report_path is not None else {})})
    if raw.exists():
        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    report: dict = {"dataset": key, "source": source, "inputs": []}
    dead: dict = {}  # path -> why a download failed (DARN)
    timing: dict | None = None  # DARN's download: counts, seconds, URLs/s (not in the DVC-tracked report)
    requested: list[str] | None = None  # the images asked for one by one (source: asen with images)
    path = Path(cfg["path"]) if cfg.get("path") else None

    if source == "twin":
        if path is None or not path.is_dir():
            raise DatasetError(f"acquire.{key}.path: twin folder {path} not found: run `python -m datasets.twins {key}`")
        if key == "darn":
            from datasets.loopback import serve
            from datasets.parsers.darn import parse_urls

            _copy_asen_files(path, raw, path / "meta.json" if (path / "meta.json").exists() else None, origins)
            faults = _twin_faults(path, parse_urls(path / "urls.txt"))
            scope = _cache_scope(cache, _twin_identity(path))
            with serve(path, faults) as srv:
                dead, timing = _fetch_darn(raw, srv.base_url, dl, report, scope, shown_base="http://loopback.twin/")
            report["served_faults"] = len(faults)
        else:
            skip = lambda p: p.name in ("manifest.json", "regions.json") and p.parent == path  # noqa: E731
            _copy_tree(path, raw, skip, origins)
            _hoist(raw, _markers(key))
            _expand_nested(key, raw, max_bytes, cfg.get("sha256"), report)
        if (path / "regions.json").is_file():
            # the generator's ground-truth regions of localised classes, for the pointing game (which
            # reads raw/regions.json: a real release has none unless its user adds one)
            copy_file(path / "regions.json", raw / "regions.json")
    elif source == "local":
        if path is None:
            raise DatasetError(f"acquire.{key}.path is required for source: local")
        paths = [Path(p) for p in cfg["path"]] if isinstance(cfg["path"], list) else [path]
        if key == "darn":
            _copy_asen_files(paths[0], raw, Path(cfg["meta"]) if cfg.get("meta") else None, origins)
            if (paths[0] / "pic").is_dir():
                _copy_tree(paths[0] / "pic", raw / "pic", origins=origins)
        else:
            _from_local(key, paths, raw, cfg, max_bytes, report, origins)
    elif source == "url":
        from datasets.download import download

        urls = cfg.get("url")
        urls = [urls] if isinstance(urls, str) else list(urls or [])
        downloads = raw.parent / "downloads"
        if key == "darn":
            if path is None:
                raise DatasetError("acquire.darn.path must name the folder with ASEN's files and urls.txt")
            _copy_asen_files(path, raw, Path(cfg["meta"]) if cfg.get("meta") else None, origins)
            base = cfg.get("base_url") or ""
            scope = _cache_scope(cache, b"url\n" + base.encode() + b"\n" + (raw / "urls.txt").read_bytes())
            dead, timing = _fetch_darn(raw, base, dl, report, scope)
        else:
            if not urls:
                raise DatasetError(f"acquire.{key}.url is required for source: url")
            files = []
            for u in urls:
                name = Path(urllib.parse.urlsplit(u).path).name or "download"
                want = cfg.get("sha256").get(name) if isinstance(cfg.get("sha256"), dict) else cfg.get("sha256")
                rec: dict = {}
                files.append(download(u, downloads / name, sha256=want, retries=dl.get("retries", 3),
                                      backoff_s=dl.get("backoff_s", 0.2), timeout_s=dl.get("timeout_s", 30),
                                      record=rec))
                report.setdefault("downloads", []).append({"url": u, **rec})
            report["length_unverified"] = [d["url"] for d in report["downloads"]
                                           if not d.get("length_verified") and not d.get("sha256_checked")]
            _from_local(key, files, raw, cfg, max_bytes, report)
    elif source == "asen":
        if path is None:
            raise DatasetError(f"acquire.{key}.path must name the folder with ASEN's split files")
        _copy_asen_files(path, raw, Path(cfg["meta"]) if cfg.get("meta") else None, origins)
        images = Path(cfg["images"]) if cfg.get("images") else None
        if images is not None:
            requested = _copy_asen_images(raw, images)
    else:
        raise DatasetError(f"acquire.{key}.source must be twin, local, url or asen, got {source!r}")

    # what arrived: counted, not parsed (the parse stage reads the annotations)
    missing = dict(dead)
    if requested is not None:
        report["images_requested"] = len(requested)
        missing.update({p: {"status": None, "error": "not in the images folder"}
                        for p in requested if not (raw / p).is_file()})
    files = [p for p in raw.rglob("*") if p.is_file()]  # before acquire_missing.json, which did not arrive
    (raw / MISSING_FILE).write_text(json.dumps(missing, indent=1, sort_keys=True) + "\n")
    report.setdefault("images_requested", None)
    report["images_obtained"] = sum(1 for p in files if p.suffix.lower() in IMAGE_SUFFIXES)
    report["missing"] = sorted(missing)
    report.setdefault("dead_links", {"count": 0, "by_status": {}, "items": []})
    report["files"] = len(files)
    if report_path is not None:
        write_json(report_path, report)
        if timing is not None:  # run-dependent: kept out of the DVC-tracked report (untracked, .gitignore)
            write_json(Path(report_path).with_name("acquire_timing.json"), {"dataset": key, **timing})
    return report


def main(argv: list[str] | None = None) -> int:
    from datasets.params import load_params

    ap = argparse.ArgumentParser(prog="python -m datasets.acquire", description=__doc__)
    ap.add_argument("key", choices=DATASETS)
    args = ap.parse_args(argv)
    acq = load_params()["acquire"]
    try:
        rep = acquire(args.key, acq[args.key], acq, raw_dir(args.key), reports_dir(args.key) / "acquire.json",
                      download_cache_dir(args.key))
    except DatasetError as e:
        print(f"acquire {args.key}: {e}", file=sys.stderr)
        return 1
    asked = "" if rep["images_requested"] is None else f" of {rep['images_requested']} requested"
    print(f"acquire {args.key}: {rep['files']} files, {rep['images_obtained']} images{asked}, "
          f"{rep['dead_links']['count']} dead links, {len(rep['missing'])} missing")
    tf = reports_dir(args.key) / "acquire_timing.json"
    t = json.loads(tf.read_text()) if rep.get("download") and tf.is_file() else None
    if t:
        print(f"acquire {args.key}: {t['urls']} URLs: {t['fetched']} fetched, {t['from_cache']} from the download cache "
              f"({download_cache_dir(args.key)}), {t['dead']} dead; {t['seconds']:.1f} s, {t['urls_per_s']} URLs/s "
              f"at concurrency {t['concurrency']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
