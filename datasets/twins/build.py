"""Generate one twin: sample records, plan defects, render, write the release layout, the manifest,
regions.json and the contact sheet."""

from __future__ import annotations

import contextlib
import os
import time
from collections import ChainMap
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from datasets.paths import twin_manifest

from . import darn as DA
from . import deepfashion as DF
from . import fashionai as FA
from .common import (EXPECT, _hashes, corrupt, encode_jpeg, hex_name, image_rng, key_rng, n_defects,
                     plan_image_defects, resized, truncate, write_json, write_text, write_zip)
from .draw import render
from .store import ImageStore

SPOOL_FROM = 20_000  # twins of at least this many images keep their JPEG bytes on disk, not in memory
PARALLEL_FROM = 2_000  # below this many images, starting worker processes costs more than it saves
#: up to this many images, no two clean images are within 5 bits of dHash or aHash (redrawn until so).
#: Beyond it the rule cannot hold: the 8x8 hashes of drawn garments (a few silhouettes on plain
#: backgrounds) crowd together, so among 10^5 drawings most new ones fall within 5 bits of an
#: earlier one and would be redrawn up to 19 times in the parent process. A larger twin (the scale
#: run's) keeps every first drawing; validation then finds what near duplicates it finds, reported
#: next to the planted ones.
DISTINCT_UNTIL = 20_000


def spool_path(out_dir: Path) -> Path:
    """Where a large twin's JPEG bytes wait to be written: beside its folder (never in it), until
    ``generate`` has drawn the contact sheet and closes the store."""
    return out_dir.parent / f".{out_dir.name}.images.spool"


def _draw(task, attempt: int = 0):
    """One drawing of a record: (pixels if kept, JPEG bytes, dHash word, aHash word, boxes at the
    stored size). Drawn at the render size R and resized to the stored size S when they differ.
    The hashes only serve the distinctness check: without it (``distinct`` false) they are None."""
    seed, key, i, spec, S, R, keep, distinct = task
    img, boxes = render(spec, R, image_rng(seed, key, i) if attempt == 0 else key_rng(seed, key, 9, i, attempt))
    drawn = img
    if R != S:
        img = cv2.resize(img, (S, S), interpolation=cv2.INTER_LINEAR if S > R else cv2.INTER_AREA)
        f = S / R
        boxes = {k: [min(S - 1, int(round(v * f))) for v in b] for k, b in boxes.items()}
    data = encode_jpeg(img)
    if not distinct:
        return img if keep else None, data, None, None, boxes
    # at R != S the 8x8 hashes of the drawing itself: decoding each stored JPEG again would cost
    # more than drawing it small (the hashes only keep clean images apart; validation has its own)
    h = _hashes(drawn if R != S else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    return (img if keep else None, data, np.packbits(h[:64]).view(">u8")[0], np.packbits(h[64:]).view(">u8")[0], boxes)


def _workers(params: dict, count: int) -> int:
    """twins.workers processes (0: one per core), one for a small twin."""
    w = int(params.get("workers", 1) or 0) or (os.cpu_count() or 1)
    return 1 if count < PARALLEL_FROM else w


@contextlib.contextmanager
def _renderer(workers: int):
    """imap(tasks) -> first drawings in task order, in this process or in ``workers`` spawned ones."""
    if workers <= 1:
        yield lambda tasks: map(_draw, tasks)
        return
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        yield lambda tasks: pool.imap(_draw, tasks, chunksize=64)

FA_ROOT = "fashionAI_attributes_train1"
FA_LABEL = f"{FA_ROOT}/Annotations/label.csv"


def _defect(kind, file, line, image, **extra):
    d = {"kind": kind, "file": file, "line": line, "image": image}
    d.update(extra)
    d["expect"] = EXPECT[kind]
    return d


def _sample(key, params, n, seed):
    recs = []
    for i in range(n):
        rng = key_rng(seed, key, 1, i)
        if key == "deepfashion":
            recs.append(DF.sample(rng))
        elif key == "fashionai":
            recs.append(FA.sample(rng))
        else:
            recs.append(DA.sample(rng, int(params["darn"].get("max_classes", 12))))
    return recs


def _partitions(key, params, n, seed):
    if key == "fashionai":
        return None
    # the release's own train / val / test (DeepFashion's list_eval_partition, DARN's ASEN split files)
    ratios = params[key].get("partition", [0.72, 0.14, 0.14] if key == "deepfashion" else [0.8, 0.1, 0.1])
    names = ["train", "val", "test"]
    counts = [int(round(r / sum(ratios) * n)) for r in ratios]
    counts[0] = n - sum(counts[1:])
    lab = sum(([nm] * c for nm, c in zip(names, counts)), [])
    perm = key_rng(seed, key, 2).permutation(n)
    return [lab[j] for j in np.argsort(perm)]


def build(key: str, params: dict, out_dir: Path | None = None, progress: bool = True) -> dict:
    """Generate the twin `key` from the `twins` params. Writes into out_dir when given; returns a dict
    with records, encoded images (an ImageStore: for a twin of SPOOL_FROM images or more it reads
    a spool file beside out_dir, which the caller removes with ``result["images"].close()``) and
    the manifest (the preview uses it without writing)."""
    t0 = time.perf_counter()
    seed = int(params["seed"])
    S = int(params.get("image_size", 112))
    n = int(params[key]["images"])
    recs = _sample(key, params, n, seed)
    parts = _partitions(key, params, n, seed)
    for i, r in enumerate(recs):
        r["index"] = i
        r["partition"] = parts[i] if parts else None
    drng = key_rng(seed, key, 3)
    plan, untouched = plan_image_defects(n, params, drng, parts)
    for dup, src in plan["sources"].items():
        for f in ("spec", "labels", "attribute", "class"):
            if f in recs[src]:
                recs[dup][f] = recs[src][f]
        recs[dup]["dup_of"] = src

    # names
    if key == "deepfashion":
        counter = {}
        for r in recs:
            cat = DF.category(r, None)
            counter[cat] = counter.get(cat, 0) + 1
            r["path"] = f"img/{cat}/img_{counter[cat]:08d}.jpg"
    elif key == "fashionai":
        for i, r in enumerate(recs):
            r["path"] = f"Images/{r['attribute']}_labels/{hex_name(seed, key, i)}.jpg"
    else:
        # shop ids drawn from 99,999 (as every twin up to 24,999 images has been), from 4n beyond:
        # a full-size DARN list (250,000 URLs) needs more ids than that
        ids = key_rng(seed, key, 4).choice(np.arange(50000000, 50000000 + max(99999, 4 * n)), size=n, replace=False)
        for i, r in enumerate(recs):
            grp = int(ids[i - (i % 3 if i % 5 == 0 else 0)])  # a few shops with several pictures
            r["path"] = f"pic/{grp}/{int(ids[i]) % 10000}_{i % 97:02d}_{i % 7 + 1}.jpg"

    # render
    R = int(params.get("render_size") or S)  # drawn at R, stored at S (a full-size twin draws small)
    images = ImageStore(spool_path(out_dir) if out_dir is not None and n >= SPOOL_FROM else None)
    pixels = {}
    sources = set(plan["sources"].values())  # decoded pixels are kept only for these (memory at full size)
    # dHash and aHash bits of the clean images so far, packed in 64-bit words: a popcount per
    # earlier image instead of 128 compared booleans (same test, 20x less work at 289k images)
    distinct = n <= DISTINCT_UNTIL
    Hd, Ha, nh = np.zeros(n if distinct else 0, np.uint64), np.zeros(n if distinct else 0, np.uint64), 0
    todo = [(seed, key, r["index"], r["spec"], S, R, r["index"] in sources, distinct) for r in recs if "dup_of" not in r]
    bar = tqdm(total=len(todo), desc=f"twins {key}", disable=None if progress else True, leave=False)
    with _renderer(_workers(params, len(todo))) as imap:
        for task, (img, data, hd, ha, boxes) in zip(todo, imap(todo)):
            i = task[2]
            # redraw (new background/jitter, same labels) until no earlier clean image is within
            # 5 bits of dHash or aHash, so only planted duplicates are perceptual near-duplicates;
            # the first drawing may come from a worker, redraws are made here, so the result does
            # not depend on the number of workers
            attempt = 0
            while distinct and nh and attempt < 19 and not (np.bitwise_count(Hd[:nh] ^ hd).min() > 5
                                               and np.bitwise_count(Ha[:nh] ^ ha).min() > 5):
                attempt += 1
                img, data, hd, ha, boxes = _draw(task, attempt)
            if distinct:
                Hd[nh], Ha[nh] = hd, ha
                nh += 1
            if img is not None:
                pixels[i] = img
            images[i] = data
            recs[i]["boxes"] = boxes
            bar.update()
    bar.close()
    for dup, src in sorted(plan["sources"].items()):
        if dup in plan["exact_duplicate"]:
            images.alias(dup, src)
            recs[dup]["boxes"] = recs[src]["boxes"]
        else:
            images[dup] = resized(pixels[src], key_rng(seed, key, 5, dup))
            sz = cv2.imdecode(np.frombuffer(images[dup], np.uint8), cv2.IMREAD_COLOR).shape[0]
            f = sz / S
            recs[dup]["boxes"] = {k: [int(round(v * f)) for v in b] for k, b in recs[src]["boxes"].items()}
    del pixels
    clean_bytes = images.copy()
    for i in plan["corrupt_jpeg"]:
        images[i] = corrupt(images[i], key_rng(seed, key, 6, i))
    for i in plan["truncated_jpeg"]:
        images[i] = truncate(images[i])

    # regions
    names = DA.class_names(int(params["darn"].get("max_classes", 12))) if key == "darn" else None
    regions = {}
    for r in recs:
        if key == "deepfashion":
            reg = DF.regions(r, r["boxes"])
        elif key == "fashionai":
            reg = FA.regions(r, r["boxes"])
        else:
            reg = DA.regions(r, r["boxes"], names)
        if reg:
            regions[r["path"]] = reg

    writer = {"deepfashion": _write_deepfashion, "fashionai": _write_fashionai, "darn": _write_darn}[key]
    defects, files, counts = writer(recs, images, plan, params, untouched, drng, names, out_dir)
    manifest = {
        "seed": seed,
        "params": {"image_size": S, key: params[key], "defects": params.get("defects", {})},
        "counts": counts,
        "defects": defects,
    }
    if out_dir is not None:
        write_json(out_dir / "regions.json", regions)
        write_json(twin_manifest(out_dir), manifest)
    return {"records": recs, "images": images, "clean_images": clean_bytes, "manifest": manifest,
            "regions": regions, "names": names, "seconds": time.perf_counter() - t0}


def _image_defects(recs, plan, file, line_of, name_of=lambda r: r["path"], extra=lambda r: {}):
    out = []
    for kind in ("corrupt_jpeg", "truncated_jpeg", "missing_file"):
        for i in sorted(plan[kind]):
            out.append(_defect(kind, file(recs[i]), line_of(recs[i]), name_of(recs[i]), **extra(recs[i])))
    for kind in ("exact_duplicate", "resized_duplicate"):
        for i in sorted(plan[kind]):
            s = plan["sources"][i]
            e = {"duplicate_of": name_of(recs[s])}
            if recs[i]["partition"] is not None:
                e.update(partition=recs[i]["partition"], duplicate_of_partition=recs[s]["partition"],
                         spans_partitions=recs[i]["partition"] != recs[s]["partition"])
            e.update(extra(recs[i]))
            out.append(_defect(kind, file(recs[i]), line_of(recs[i]), name_of(recs[i]), **e))
    return out


def _counts(recs, images, plan, files, extra):
    c = {"images": len(recs), "files": files,
         "image_bytes": int(sum(images.size(i) for i in images.keys() if i not in plan["missing_file"]))}
    c.update(extra)
    c["defects"] = {}
    return c


def _finish_counts(counts, defects):
    for d in defects:
        counts["defects"][d["kind"]] = counts["defects"].get(d["kind"], 0) + 1
    return counts


def _write_deepfashion(recs, images, plan, params, untouched, rng, names, out):
    classes = [(c, t + 1) for t, cl in enumerate(DF.CLASSES) for c in cl]
    width = max(len(c) for c, _ in classes) + 4
    cloth = [str(len(classes)), "attribute_name  attribute_type"] + [f"{c:<{width}}{t}" for c, t in classes]
    bad = sorted(_take(untouched, params.get("defects", {}).get("deepfashion_bad_columns"), len(recs)))
    unknown = set(int(i) for i in untouched[: max(1, len(recs) // 100)])
    pw = max(len(r["path"]) for r in recs) + 8
    rows = [str(len(recs)), "image_name  attribute_labels"]
    defects = []
    for r in recs:
        vals = []
        for t, cl in enumerate(DF.CLASSES):
            vals += [1 if c in r["labels"][t] else -1 for c in cl]
        if r["index"] in unknown:
            neg = [j for j, v in enumerate(vals) if v == -1]
            vals[neg[r["index"] % len(neg)]] = 0
        if r["index"] in bad:
            vals = vals[:-1]
            defects.append(_defect("deepfashion_bad_columns", "Anno/list_attr_img.txt", r["index"] + 3, r["path"],
                                   columns=1 + len(vals), expected_columns=1 + len(classes)))
        rows.append(f"{r['path']:<{pw}}" + " ".join(f"{v:>2}" for v in vals))
    part = [str(len(recs)), "image_name  evaluation_status"] + [f"{r['path']:<{pw}}{r['partition']}" for r in recs]
    members = images.view({r["path"]: r["index"] for r in recs if r["index"] not in plan["missing_file"]})
    defects = _image_defects(recs, plan, lambda r: "Anno/list_attr_img.txt", lambda r: r["index"] + 3) + defects
    if out is not None:
        write_text(out / "Anno" / "list_attr_cloth.txt", "\n".join(cloth) + "\n")
        write_text(out / "Anno" / "list_attr_img.txt", "\n".join(rows) + "\n")
        write_text(out / "Eval" / "list_eval_partition.txt", "\n".join(part) + "\n")
        write_zip(out / "Img" / "img.zip", images.view({"img/" + r["path"][4:]: r["index"]
                                                       for r in recs if r["index"] not in plan["missing_file"]}))
    counts = _counts(recs, images, plan, len(members), {
        "classes": {a: len(c) for a, c in zip(DF.ATTRIBUTES, DF.CLASSES)},
        "partition": {p: sum(r["partition"] == p for r in recs) for p in ("train", "val", "test")},
        "positive_labels": int(sum(len(L) for r in recs for L in r["labels"])),
        "unknown_values": len(unknown)})
    return defects, len(members), _finish_counts(counts, defects)


def _take(untouched, rate, n: int) -> set[int]:
    """The next images not yet given a defect, as many as ``rate`` asks of ``n`` (n_defects),
    removed from ``untouched``."""
    count = n_defects(rate, n)
    chosen = set(int(i) for i in untouched[:count])
    untouched[:] = untouched[count:]
    return chosen


def _write_fashionai(recs, images, plan, params, untouched, rng, names, out):
    d = params.get("defects", {})
    n = len(recs)
    no_yes = _take(untouched, d.get("fashionai_no_yes"), n)
    maybe = _take(untouched, d.get("fashionai_maybe"), n)
    rows, defects = [], []
    for r in recs:
        k = len(FA.VALUES[r["attribute"]])
        s = ["n"] * k
        s[r["class"]] = "y"
        i = r["index"]
        if i in maybe:
            j = r["class"] + 1 if r["class"] + 1 < k else r["class"] - 1
            s[j] = "m"
        if i in no_yes:
            s[r["class"]] = "m" if i % 2 else "n"
        r["ynm"] = "".join(s)
        rows.append(f"{r['path']},{r['attribute']}_labels,{r['ynm']}")
        if i in maybe:
            defects.append(_defect("fashionai_maybe", FA_LABEL, i + 1, r["path"], label=r["ynm"]))
        if i in no_yes:
            defects.append(_defect("fashionai_no_yes", FA_LABEL, i + 1, r["path"], label=r["ynm"]))
    members = images.view({f"{FA_ROOT}/{r['path']}": r["index"] for r in recs if r["index"] not in plan["missing_file"]})
    defects = _image_defects(recs, plan, lambda r: FA_LABEL, lambda r: r["index"] + 1,
                             extra=lambda r: {"member": f"{FA_ROOT}/{r['path']}"}) + defects
    if out is not None:
        write_zip(out / f"{FA_ROOT}.zip", ChainMap({FA_LABEL: ("\n".join(rows) + "\n").encode()}, members))
    counts = _counts(recs, images, plan, len(members), {
        "attributes": {a: sum(r["attribute"] == a for r in recs) for a in FA.ATTRIBUTES}})
    return defects, len(members), _finish_counts(counts, defects)


def _write_darn(recs, images, plan, params, untouched, rng, names, out):
    d = params.get("defects", {})
    n = len(recs)
    e404 = _take(untouched, d.get("darn_404"), n)
    drop = _take(untouched, d.get("darn_drop"), n)
    # file order: train in record order; valid/test candidates first, then queries (as ASEN's files)
    files, where = {}, {}
    role = {}
    for split in ("train", "valid", "test"):
        part = "val" if split == "valid" else split
        idx = [r["index"] for r in recs if r["partition"] == part]
        if split != "train":
            perm = key_rng(int(params["seed"]), "darn", 8, len(split)).permutation(len(idx))
            nq = max(1, int(round(len(idx) * 0.2)))
            q = set(idx[j] for j in perm[:nq])
            idx = [i for i in idx if i not in q] + [i for i in idx if i in q]
            role.update({i: ("query" if i in q else "candidate") for i in idx})
        files[split] = idx
        for line, i in enumerate(idx, 1):
            where[i] = (f"filenames_{split}.txt", line)
    texts = {f"filenames_{s}.txt": "".join(recs[i]["path"] + "\n" for i in idx) for s, idx in files.items()}
    texts["label_train.txt"] = "".join(
        f"{f} " + " ".join(f"{a} {c}" for a, c in recs[i]["labels"].items()) + "\n" for f, i in enumerate(files["train"]))
    for s in ("valid", "test"):
        for rl in ("query", "candidate"):
            texts[f"{rl}_{s}.txt"] = "".join(
                f"{f} {a} {c}\n" for f, i in enumerate(files[s]) if role[i] == rl for a, c in recs[i]["labels"].items())
    missing = set(plan["missing_file"])
    urls = "".join(f"{r['path']} {r['path']}\n" for r in recs if r["index"] not in missing)
    url_line = {}
    ln = 0
    for r in recs:
        if r["index"] not in missing:
            ln += 1
            url_line[r["index"]] = ln
    defects = _image_defects(recs, plan, lambda r: where[r["index"]][0], lambda r: where[r["index"]][1])
    for kind, idx in (("darn_404", e404), ("darn_drop", drop)):
        for i in sorted(idx):
            f, line = where[i]
            defects.append(_defect(kind, f, line, recs[i]["path"], url=recs[i]["path"], urls_line=url_line[i]))
    written = images.view({r["path"]: r["index"] for r in recs if r["index"] not in missing and r["index"] not in e404})
    if out is not None:
        meta = {"DARN": {"ATTRIBUTES": DA.ATTRIBUTES, "ATTRIBUTES_NUM": {a: len(names[a]) for a in DA.ATTRIBUTES},
                         "ATTRIBUTES_VALUES": names}}
        write_json(out / "meta.json", meta)
        write_text(out / "urls.txt", urls)
        for name, t in texts.items():
            write_text(out / name, t)
        for p, b in written.items():
            (out / p).parent.mkdir(parents=True, exist_ok=True)
            (out / p).write_bytes(b)
    counts = _counts(recs, images, plan, len(written), {
        "classes": {a: len(names[a]) for a in DA.ATTRIBUTES},
        "partition": {s: len(v) for s, v in files.items()},
        "queries": {s: sum(role[i] == "query" for i in files[s]) for s in ("valid", "test")},
        "annotations": int(sum(len(r["labels"]) for r in recs))})
    return defects, len(written), _finish_counts(counts, defects)
