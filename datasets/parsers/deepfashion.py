"""DeepFashion Category and Attribute Prediction Benchmark (docs/PROTOCOL.md#deepfashion).

Layouts: `Anno/` (original) or `Anno_coarse/` (+ `Anno_fine/`, newer copies); the partition is
`Eval/list_eval_partition.txt` (or beside the annotation files). Only `Anno_fine/` is used when
it is the sole annotation folder.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from datasets.errors import FormatError, NotThisDatasetError
from datasets.parsers import ParseResult, QuarantinedLine, guard_bad_share, read_lines, rel, safe_relpath, taxonomy_frame

IMAGE_EXT = (".jpg", ".jpeg", ".png")
VALUES = {"1": "positive", "-1": None, "0": "unknown"}
PARTITIONS = {"train": "train", "val": "val", "test": "test"}
_ASCII_INT = re.compile(r"[0-9]+")
MAX_DIGITS = 12  # a count or type field longer than this is not a number of this release (int() refuses > 4300 digits)


def ascii_int(tok: str) -> int | None:
    """The value of an ASCII decimal field of at most MAX_DIGITS digits, else None (str.isdigit
    accepts '²', which int() refuses, and int() refuses a 5,000-digit string)."""
    return int(tok) if len(tok) <= MAX_DIGITS and _ASCII_INT.fullmatch(tok) else None
_SEP = re.compile(r"[ \t]+")  # the release's field separators; other whitespace belongs to a name


def type_names() -> list[str]:
    meta = json.loads(resources.files("datasets").joinpath("data/asen_meta.json").read_text())
    return list(meta["DeepFashion"]["ATTRIBUTES"])


def _count_line(path, lines: list[str]) -> int:
    if len(lines) < 2:
        raise FormatError(path, len(lines) + 1, "a count line then a header line", got="end of file")
    head = lines[0].strip()
    count = ascii_int(head)
    if count is None:
        got = lines[0] if len(head) <= MAX_DIGITS else f"a {len(head)}-character line"
        raise FormatError(path, 1, f"the number of entries (an integer of at most {MAX_DIGITS} digits)", got=got)
    if not lines[1].strip():
        raise FormatError(path, 2, "a header line", got=lines[1])
    return count


def _check_count(path, count: int, lines: list[str]) -> None:
    """The count line must agree with the number of entry lines (a cut or padded file is an error)."""
    n = sum(1 for ln in lines[2:] if ln.strip())
    if n != count:
        raise FormatError(path, 1, f"the number of entry lines ({n}) as the count line",
                          got=f"{count} (the file is cut or padded)")


def parse_attr_cloth(path: Path) -> list[tuple[str, int]]:
    """`<name> <type>` per class (names contain spaces; the type is the last token)."""
    lines = read_lines(path)
    _check_count(path, _count_line(path, lines), lines)
    out: list[tuple[str, int]] = []
    for i, ln in enumerate(lines[2:], start=3):
        s = ln.strip()
        if not s:
            continue
        parts = s.rsplit(None, 1)
        t = ascii_int(parts[1]) if len(parts) == 2 else None
        if t is None or t < 1 or t > 99:
            raise FormatError(path, i, "'<class name> <type 1-5>'", got=ln)
        out.append((parts[0].strip(), t))
    if not out:
        raise FormatError(path, 3, "at least one '<class name> <type>' line", got="end of file")
    return out


def parse_attr_img(path: Path, n_classes: int, res: ParseResult, class_of: list[tuple[int, int]], file_label: str) -> set[str]:
    """`<image name> <n values in {1,-1,0}>` per image. Returns the names seen on quarantined lines."""
    lines = read_lines(path)
    _check_count(path, _count_line(path, lines), lines)
    bad: list[QuarantinedLine] = []
    n_good = 0
    quarantined_names: set[str] = set()
    expected = f"'<image name> <{n_classes} values in {{1,-1,0}}>'"
    for i, ln in enumerate(lines[2:], start=3):
        s = ln.strip(" \t\r")
        if not s:
            continue
        toks = _SEP.split(s)
        # the name is the line up to its last n_classes fields, spelled as in the file (a no-break
        # space or a doubled space inside a name is kept)
        seps = [m.start() for m in _SEP.finditer(s)]
        name = s[: seps[-n_classes]] if len(toks) > n_classes else ""
        if not name.lower().endswith(IMAGE_EXT):
            bad.append(QuarantinedLine(file_label, i, "bad_columns",
                                       f"expected {n_classes} values after the image name, got {len(toks) - 1} fields"))
            if toks[0].lower().endswith(IMAGE_EXT):
                quarantined_names.add(toks[0])
            continue
        vals = toks[-n_classes:]
        wrong = [v for v in vals if v not in VALUES]
        if wrong:
            bad.append(QuarantinedLine(file_label, i, "bad_value", f"values must be 1, -1 or 0, got {wrong[0]!r}"))
            quarantined_names.add(name)
            continue
        norm, why = safe_relpath(name)
        if norm is None:
            bad.append(QuarantinedLine(file_label, i, "unsafe_path", f"{name!r} leaves the release folder ({why})"))
            quarantined_names.add(name)
            continue
        name = norm
        if res.has(name) is not None:
            bad.append(QuarantinedLine(file_label, i, "duplicate_line", f"{name} listed twice"))
            continue
        n_good += 1
        img = res.image_id(name, file_label, i)
        for g, v in enumerate(vals):
            state = VALUES[v]
            if state is not None:
                a, c = class_of[g]
                res.labels.append((img, a, c, state))
    if n_good == 0 and not bad:
        raise FormatError(path, 3, f"at least one {expected} line", got="end of file")
    guard_bad_share(path, n_good, bad, expected, lines)
    res.quarantine.extend(bad)
    return quarantined_names


def parse_partition(path: Path, res: ParseResult, skip: set[str], file_label: str) -> dict[int, str]:
    lines = read_lines(path)
    _check_count(path, _count_line(path, lines), lines)
    part: dict[int, str] = {}
    first_line: dict[int, int] = {}
    bad: list[QuarantinedLine] = []
    n_good = 0
    for i, ln in enumerate(lines[2:], start=3):
        s = ln.strip()
        if not s:
            continue
        parts = s.rsplit(None, 1)
        if len(parts) != 2 or parts[1] not in PARTITIONS or not parts[0].lower().endswith(IMAGE_EXT):
            bad.append(QuarantinedLine(file_label, i, "bad_partition_line", "expected '<image name> train|val|test'"))
            continue
        n_good += 1
        name = parts[0].strip(" \t\r")
        norm, _ = safe_relpath(name)
        img = res.has(norm) if norm is not None else None
        if img is None:
            if name not in skip:
                bad.append(QuarantinedLine(file_label, i, "unknown_image", f"{name} is not in the attribute file"))
            continue
        if img in part:  # listed twice: the first line is kept, the second quarantined and counted
            bad.append(QuarantinedLine(file_label, i, "partition_conflict",
                                       f"{name} is also line {first_line[img]} ({part[img]})"))
            continue
        part[img] = PARTITIONS[parts[1]]
        first_line[img] = i
    guard_bad_share(path, n_good, bad, "'<image name> train|val|test'", lines)
    res.quarantine.extend(bad)
    return part


def find_layout(raw: Path) -> tuple[Path, Path | None]:
    """(annotation folder, partition file or None)."""
    for name in ("Anno", "Anno_coarse", "Anno_fine"):
        d = raw / name
        if (d / "list_attr_cloth.txt").is_file() and (d / "list_attr_img.txt").is_file():
            for p in (raw / "Eval" / "list_eval_partition.txt", d / "list_eval_partition.txt"):
                if p.is_file():
                    return d, p
            return d, None
    raise NotThisDatasetError(
        f"{raw}: not DeepFashion: no Anno/, Anno_coarse/ or Anno_fine/ with list_attr_cloth.txt and list_attr_img.txt")


def parse(raw: Path) -> ParseResult:
    raw = Path(raw)
    anno, part_file = find_layout(raw)
    cloth = parse_attr_cloth(anno / "list_attr_cloth.txt")
    types = sorted({t for _, t in cloth})
    names = type_names()
    attributes = [names[t - 1] if t - 1 < len(names) else f"type_{t}" for t in types]
    class_of: list[tuple[int, int]] = []
    per_attr: list[list[str]] = [[] for _ in types]
    gids: list[list[int]] = [[] for _ in types]
    for g, (cname, t) in enumerate(cloth):
        a = types.index(t)
        class_of.append((a, len(per_attr[a])))
        per_attr[a].append(cname)
        gids[a].append(g)
    res = ParseResult()
    res.taxonomy = taxonomy_frame(attributes, per_attr, gids)
    skip = parse_attr_img(anno / "list_attr_img.txt", len(cloth), res, class_of, rel(anno / "list_attr_img.txt", raw))
    if part_file is not None:
        res.partition = parse_partition(part_file, res, skip, rel(part_file, raw))
    return res
