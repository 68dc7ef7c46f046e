"""The split files ASEN (AAAI 2020) and ASEN++ (TIP 2021) published (docs/PROTOCOL.md#asens-prepared-splits).

- `meta.json`: per dataset `ATTRIBUTES`, `ATTRIBUTES_NUM` [, `ATTRIBUTES_VALUES`] (or one flat section)
- `filenames_{train,valid,test}.txt`: one relative image path per line; 0-based line = file index
- `label_train.txt`: `<fidx> <attr> <value> [<attr> <value> ...]`
- `query_{valid,test}.txt`, `candidate_{valid,test}.txt`: `<fidx> <attr> <value>`
- DeepFashion `label_{train,valid,test}.txt`: tab-separated `<fidx> <type 1-5> <global id 0-999> ...`
  (trailing tabs); the class within a type is the rank of the global id among that type's ids.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from datasets.errors import FormatError, NotThisDatasetError
from datasets.parsers import (ParseResult, QuarantinedLine, guard_bad_share, read_lines, regular_file_error, rel,
                              safe_relpath, taxonomy_frame)

SECTIONS = {"deepfashion": "DeepFashion", "fashionai": "FashionAI", "darn": "DARN"}
SPLIT_FILES = {"train": "train", "valid": "val", "test": "test"}
INT16_MAX = 32767


def is_asen_folder(folder: Path) -> bool:
    return any((Path(folder) / f"filenames_{s}.txt").is_file() for s in SPLIT_FILES)


def find_meta(folder: Path) -> Path | None:
    """meta.json beside the split files, else one folder up; None when neither exists (the packaged
    meta is used then). One that exists but is a folder, FIFO or device is returned all the same,
    so that reading it is an error naming it, not a silent fall-back to the packaged meta."""
    for p in (Path(folder) / "meta.json", Path(folder).parent / "meta.json"):
        if p.exists() or p.is_symlink():
            return p
    return None


def _key_line(text: str, key: str) -> int | None:
    """The 1-based line of the first ``"key":`` in a JSON text, or None."""
    i = text.find(json.dumps(key))
    return None if i < 0 else text[:i].count("\n") + 1


def parse_meta(path: Path | None, key: str) -> tuple[list[str], list[int], dict[str, list[str]]]:
    """(attributes, classes per attribute, class names where given) for dataset `key`."""
    if path is None:
        data = json.loads(resources.files("datasets").joinpath("data/asen_meta.json").read_text())
        where = "datasets/data/asen_meta.json"
    else:
        why = regular_file_error(Path(path))
        if why is not None:
            raise FormatError(path, None, "a readable JSON file (ASEN meta.json)", got=why)
        raw = Path(path).read_bytes()
        try:
            text = raw.decode("utf-8-sig")
            data = json.loads(text)
        except UnicodeDecodeError:
            raise FormatError(path, None, "UTF-8 JSON") from None
        except json.JSONDecodeError as e:
            raise FormatError(path, e.lineno, "JSON with ATTRIBUTES and ATTRIBUTES_NUM", got=e.msg) from None
        except RecursionError:
            raise FormatError(path, None, "JSON with ATTRIBUTES and ATTRIBUTES_NUM", got="nesting too deep") from None
        where = str(path)
    if not isinstance(data, dict):
        raise FormatError(where, None, "a JSON object")
    sec = data.get(SECTIONS[key], data) if SECTIONS[key] in data else data
    if not isinstance(sec, dict):  # the section is there but is a string, a list...
        line = _key_line(text, SECTIONS[key]) if path is not None else None
        raise FormatError(where, line, f"a JSON object as the {SECTIONS[key]} section (with ATTRIBUTES and ATTRIBUTES_NUM)",
                          got=f"a {type(sec).__name__}: {json.dumps(sec)[:80]}")
    try:
        attrs = [str(a) for a in sec["ATTRIBUTES"]]
        nums = [int(sec["ATTRIBUTES_NUM"][a]) for a in attrs]
    except (KeyError, TypeError, ValueError):
        raise NotThisDatasetError(
            f"{where}: no {SECTIONS[key]} section with ATTRIBUTES and ATTRIBUTES_NUM (ASEN meta.json)") from None
    if not attrs or any(n <= 0 or n > INT16_MAX for n in nums):
        raise FormatError(where, None, "a non-empty ATTRIBUTES list with positive ATTRIBUTES_NUM")
    values = sec.get("ATTRIBUTES_VALUES") or {}
    names = {a: [str(v) for v in values[a]] for a in attrs if isinstance(values, dict) and isinstance(values.get(a), list)
             and len(values[a]) == nums[attrs.index(a)]}
    return attrs, nums, names


def parse_filenames(path: Path) -> list[tuple[str, int]]:
    """(relative path, 1-based line) per file index. Paths are normalised first (backslashes become
    '/') and must stay inside the release folder: an absolute path, a drive letter or a '..'
    component is a FormatError naming the line."""
    out = []
    for i, ln in enumerate(read_lines(path), start=1):
        name = ln.strip(" \t\r")
        if not name:
            if i == 1:
                raise FormatError(path, 1, "one relative image path per line", got=ln)
            out.append(("", i))
            continue
        norm, why = safe_relpath(name) if "\t" not in name else (None, "a tab in the path")
        if norm is None:
            raise FormatError(path, i, f"one relative image path per line inside the release folder ({why})", got=ln)
        out.append((norm, i))
    return out


def _ints(ln: str) -> list[int] | None:
    toks = ln.split()
    try:
        return [int(t) for t in toks]
    except ValueError:
        return None


def parse_pairs_file(path: Path, pairs_per_line: str) -> tuple[list[tuple[int, int, list[tuple[int, int]]]], list[QuarantinedLine]]:
    """Lines `<fidx> <a> <v> [<a> <v> ...]`; `pairs_per_line` is 'one' (query/candidate) or 'many'.
    Returns ([(line, fidx, [(a, v), ...])], quarantined lines)."""
    lines = read_lines(path)
    good, bad = [], []
    expected = "'<fidx> <attr> <value>'" if pairs_per_line == "one" else "'<fidx> <attr> <value> [<attr> <value> ...]'"
    for i, ln in enumerate(lines, start=1):
        if not ln.strip():
            continue
        vals = _ints(ln)
        if vals is None:
            bad.append(QuarantinedLine(path.name, i, "bad_value", f"expected integers {expected}"))
            continue
        n = len(vals)
        if (pairs_per_line == "one" and n != 3) or n < 3 or n % 2 == 0:
            bad.append(QuarantinedLine(path.name, i, "bad_columns", f"expected {expected}, got {n} fields"))
            continue
        if any(v < 0 or v > 10**9 for v in vals):
            bad.append(QuarantinedLine(path.name, i, "bad_value", "negative or huge index"))
            continue
        good.append((i, vals[0], [(vals[k], vals[k + 1]) for k in range(1, n, 2)]))
    guard_bad_share(path, len(good), bad, expected, lines)
    return good, bad


def _in_range(res: ParseResult, file: str, line: int, a: int, v: int, n_attributes: int) -> bool:
    """An (attribute, class) pair that fits the taxonomy's attribute count and an Int16 class id;
    the line is quarantined with the reason otherwise."""
    if a >= n_attributes:
        res.bad(file, line, "unknown_attribute", f"attribute {a} >= {n_attributes}")
        return False
    if v > INT16_MAX:
        res.bad(file, line, "bad_value", f"class {v} out of range")
        return False
    return True


def parse(raw: Path, key: str, meta_path: Path | None = None) -> ParseResult:
    raw = Path(raw)
    if not is_asen_folder(raw):
        raise NotThisDatasetError(f"{raw}: no ASEN split files (filenames_train/valid/test.txt)")
    attrs, nums, names = parse_meta(meta_path or find_meta(raw), key)
    res = ParseResult()
    res.partition = {}
    res.roles = []
    fidx_to_img: dict[str, list[int | None]] = {}
    for split_name, split in SPLIT_FILES.items():
        f = raw / f"filenames_{split_name}.txt"
        if not f.is_file():
            continue
        ids: list[int | None] = []
        seen_here: dict[str, int] = {}
        for name, line in parse_filenames(f):
            if not name:
                ids.append(None)
                continue
            if name in seen_here:
                # two file indices of one split naming one image (the real DeepFashion valid split has
                # one): both indices keep pointing at the image, and the line is reported and counted
                res.bad(f.name, line, "duplicate_index",
                        f"{name} is also line {seen_here[name]} of {f.name}: both file indices name one image")
            seen_here.setdefault(name, line)
            img = res.image_id(name, f.name, line)
            if img in res.partition and res.partition[img] != split:
                res.bad(f.name, line, "partition_conflict", f"{name} is also in the {res.partition[img]} split")
            else:
                res.partition[img] = split
            ids.append(img)
        fidx_to_img[split_name] = ids
    if not res.paths:
        first = next(raw / f"filenames_{s}.txt" for s in SPLIT_FILES if (raw / f"filenames_{s}.txt").is_file())
        raise FormatError(first, 1, "at least one image path in filenames_{train,valid,test}.txt", got="empty files")

    deepfashion = key == "deepfashion"
    # DeepFashion: the class is the rank of the global id among its type's ids, over every label file
    df_files = sorted(raw.glob("label_*.txt")) if deepfashion else []
    df_parsed = {}
    rank: dict[int, tuple[int, int]] = {}
    if deepfashion:
        seen: dict[int, set[int]] = {t: set() for t in range(1, len(attrs) + 1)}
        for f in df_files:
            good, bad = parse_pairs_file(f, "many")
            df_parsed[f] = (good, bad)
            for _, _, pairs in good:
                for t, g in pairs:
                    if t in seen:
                        seen[t].add(g)
        cls = []
        gids = []
        for a, t in enumerate(range(1, len(attrs) + 1)):
            ids = sorted(seen[t])
            gids.append(ids)
            cls.append([f"class_{g}" for g in ids])
            for c, g in enumerate(ids):
                rank[g] = (a, c)
        res.taxonomy = taxonomy_frame(attrs, cls, gids)
    else:
        res.taxonomy = taxonomy_frame(attrs, [names.get(a) or [f"{a}_{i}" for i in range(n)] for a, n in zip(attrs, nums)])

    labels: set[tuple[int, int, int, str]] = set()
    roles: set[tuple[int, str, str, int]] = set()

    def resolve(fname: str, split_name: str, line: int, fidx: int) -> int | None:
        ids = fidx_to_img.get(split_name)
        if ids is None:
            res.bad(fname, line, "unknown_index", f"no filenames_{split_name}.txt for this file")
            return None
        if fidx >= len(ids) or ids[fidx] is None:
            res.bad(fname, line, "unknown_index", f"file index {fidx} is not a line of filenames_{split_name}.txt")
            return None
        return ids[fidx]

    # label files: train roles (and DeepFashion's multi-labels for every split)
    label_files = df_files if deepfashion else [p for p in [raw / "label_train.txt"] if p.is_file()]
    for f in label_files:
        split_name = f.stem[len("label_"):]
        if split_name not in SPLIT_FILES:
            continue
        good, bad = df_parsed[f] if deepfashion else parse_pairs_file(f, "many")
        res.quarantine.extend(bad)
        for line, fidx, pairs in good:
            img = resolve(f.name, split_name, line, fidx)
            if img is None:
                continue
            for a, v in pairs:
                if deepfashion:
                    if v not in rank or rank[v][0] != a - 1:
                        res.bad(f.name, line, "unknown_class", f"type {a} / global id {v} is not in the taxonomy")
                        continue
                    a, v = rank[v]
                elif not _in_range(res, f.name, line, a, v, len(attrs)):
                    continue
                labels.add((img, a, v, "positive"))
                if split_name == "train":
                    roles.add((img, "train", "train", a))

    for role in ("query", "candidate"):
        for split_name in ("valid", "test"):
            f = raw / f"{role}_{split_name}.txt"
            if not f.is_file():
                continue
            good, bad = parse_pairs_file(f, "one")
            res.quarantine.extend(bad)
            first: dict[tuple[int, int], int] = {}
            for line, fidx, [(a, v)] in good:
                img = resolve(f.name, split_name, line, fidx)
                if img is None:
                    continue
                if not _in_range(res, f.name, line, a, v, len(attrs)):
                    continue
                if (img, a) in first:  # one image twice for one attribute: not merged silently
                    res.bad(f.name, line, "duplicate_line",
                            f"file index {fidx} names the image of line {first[(img, a)]} for attribute {a} again")
                    continue
                first[(img, a)] = line
                labels.add((img, a, v, "positive"))
                roles.add((img, SPLIT_FILES[split_name], role, a))
    res.labels = sorted(labels)
    res.roles = sorted(roles)
    return res
