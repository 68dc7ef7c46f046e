"""FashionAI attributes (docs/PROTOCOL.md#fashionai): `Annotations/label.csv`, no header,
`Images/<key>/<hash>.jpg,<key>,<label>` with one char of {y, m, n} per class."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from datasets.errors import FormatError, NotThisDatasetError
from datasets.parsers import ParseResult, QuarantinedLine, guard_bad_share, read_lines, rel, safe_relpath, taxonomy_frame

EXPECTED = "'Images/<key>/<name>.jpg,<key>_labels,<one of y/m/n per class>'"
STATES = {"y": "positive", "m": "maybe", "n": None}


def meta() -> dict:
    return json.loads(resources.files("datasets").joinpath("data/fashionai_meta.json").read_text())


def taxonomy():
    m = meta()
    attrs = list(m["ATTRIBUTES"])
    values = m.get("ATTRIBUTES_VALUES", {})
    classes = [list(values.get(a) or [f"{a}_{i}" for i in range(m["ATTRIBUTES_NUM"][a])]) for a in attrs]
    return attrs, classes


def parse_label_csv(path: Path, res: ParseResult, prefix: str = "", file_label: str | None = None) -> None:
    """Add the rows of one label.csv to `res`. Image paths become `<prefix>/<path in the file>`."""
    path = Path(path)
    file_label = file_label or path.name
    attrs, classes = taxonomy()
    n_of = {a: len(c) for a, c in zip(attrs, classes)}
    lines = read_lines(path)
    bad: list[QuarantinedLine] = []
    n_good = 0
    for i, ln in enumerate(lines, start=1):
        if not ln.strip():
            continue
        parts = ln.strip().rsplit(",", 2)
        if len(parts) != 3 or not parts[0].strip():
            bad.append(QuarantinedLine(file_label, i, "bad_columns", f"expected 3 comma-separated fields, got {len(parts)}"))
            continue
        name, key, label = parts[0].strip(), parts[1].strip(), parts[2].strip()
        norm, why = safe_relpath(name)
        if norm is None:
            bad.append(QuarantinedLine(file_label, i, "unsafe_path", f"{name!r} leaves the release folder ({why})"))
            continue
        name = norm
        attr = key[: -len("_labels")] if key.endswith("_labels") else key
        if attr not in n_of:
            bad.append(QuarantinedLine(file_label, i, "unknown_attribute", f"{key!r} is not a FashionAI attribute key"))
            continue
        if len(label) != n_of[attr] or set(label) - set(STATES):
            bad.append(QuarantinedLine(file_label, i, "bad_value",
                                       f"expected {n_of[attr]} chars of y/m/n for {key}, got {label!r}"))
            continue
        full = f"{prefix}/{name}" if prefix else name
        if res.has(full) is not None:
            bad.append(QuarantinedLine(file_label, i, "duplicate_line", f"{full} listed twice"))
            continue
        n_good += 1
        img = res.image_id(full, file_label, i)
        a = attrs.index(attr)
        for c, ch in enumerate(label):
            if STATES[ch] is not None:
                res.labels.append((img, a, c, STATES[ch]))
    if n_good == 0 and not bad:
        raise FormatError(path, 1, EXPECTED, got="an empty file" if not lines else "only blank lines")
    guard_bad_share(path, n_good, bad, EXPECTED, lines)
    res.quarantine.extend(bad)


def find_label_files(raw: Path) -> list[Path]:
    found = sorted(raw.glob("*/Annotations/label.csv")) + sorted(raw.glob("Annotations/label.csv"))
    if not found:
        raise NotThisDatasetError(f"{raw}: not FashionAI: no Annotations/label.csv (nor <folder>/Annotations/label.csv)")
    return found


def parse(raw: Path) -> ParseResult:
    raw = Path(raw)
    res = ParseResult()
    attrs, classes = taxonomy()
    res.taxonomy = taxonomy_frame(attrs, classes)
    for f in find_label_files(raw):
        root = f.parent.parent
        prefix = "" if root == raw else rel(root, raw)
        parse_label_csv(f, res, prefix, rel(f, raw))
    return res


def parse_file(path: Path) -> tuple[ParseResult, Path]:
    """One label.csv on its own (check --labels-only): image paths relative to its release folder."""
    path = Path(path)
    res = ParseResult()
    attrs, classes = taxonomy()
    res.taxonomy = taxonomy_frame(attrs, classes)
    parse_label_csv(path, res, "", path.name)
    return res, path.parent.parent if path.parent.name == "Annotations" else path.parent
