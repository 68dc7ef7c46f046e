"""Parsers of the benchmarks' raw release files into the canonical tables (datasets/schemas.py).

Each parser reads a raw folder (the release layout) and returns a `ParseResult`: the image list in
the source's order, long-form labels, the taxonomy, the partition and ASEN roles where the source
has them, and the lines it could not parse (quarantined, not fatal). A file that is not the
expected format at all raises `FormatError`; parsers raise only `datasets.errors` types.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandera.polars as pa
import polars as pl

from datasets.errors import FormatError

# a file whose share of unparseable data lines is above this is "not that format at all"
MAX_BAD_LINE_SHARE = 0.5


class SourcesSchema(pa.DataFrameModel):
    """Where each image was named: the annotation file and 1-based line (for quarantine reports)."""

    image_id: pl.Int64 = pa.Field(ge=0, unique=True)
    file: pl.Utf8
    line: pl.Int64 = pa.Field(nullable=True, ge=1)

    class Config:
        strict = True
        coerce = True


def read_lines(path: str | Path) -> list[str]:
    """Lines of a text file: UTF-8 (BOM dropped), CRLF or LF, trailing empty line dropped.

    Raises FormatError naming the line of the first byte that is not UTF-8.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FormatError(path, None, "a readable file", got=str(e)) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise FormatError(path, line, "UTF-8 text", got=repr(data[e.start : e.start + 8])) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise FormatError(path, line, "text without NUL bytes", got="NUL byte")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


@dataclass
class QuarantinedLine:
    file: str
    line: int
    check: str
    reason: str


@dataclass
class ParseResult:
    """What a parser found. Paths are relative to the raw folder, '/'-separated."""

    paths: list[str] = field(default_factory=list)  # image_id = position
    sources: list[tuple[str, int | None]] = field(default_factory=list)  # per image: (file, line)
    labels: list[tuple[int, int, int, str]] = field(default_factory=list)  # image, attr, class, state
    taxonomy: pl.DataFrame | None = None
    partition: dict[int, str] | None = None
    roles: list[tuple[int, str, str, int]] | None = None  # image, split, role, attribute
    quarantine: list[QuarantinedLine] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    def image_id(self, path: str, file: str, line: int | None) -> int:
        """The id of `path`, added in order on first sight."""
        i = self._index.get(path)
        if i is None:
            i = len(self.paths)
            self._index[path] = i
            self.paths.append(path)
            self.sources.append((file, line))
        return i

    def has(self, path: str) -> int | None:
        return self._index.get(path)

    def bad(self, file, line: int, check: str, reason: str) -> None:
        self.quarantine.append(QuarantinedLine(str(file), int(line), check, reason))


def guard_bad_share(path, n_good: int, bad: list[QuarantinedLine], expected: str, lines: list[str]) -> None:
    """Raise FormatError when a file is mostly (or wholly) not the expected format."""
    if bad and (n_good == 0 or len(bad) > MAX_BAD_LINE_SHARE * (n_good + len(bad))):
        first = bad[0]
        got = lines[first.line - 1] if 0 < first.line <= len(lines) else None
        raise FormatError(path, first.line, expected, got=got)


def taxonomy_frame(attributes: list[str], classes: list[list[str]], global_ids: list[list[int]] | None = None) -> pl.DataFrame:
    rows = {"attribute_id": [], "attribute": [], "class_id": [], "class_name": [], "global_class_id": []}
    g = 0
    for a, (name, names) in enumerate(zip(attributes, classes)):
        for c, cname in enumerate(names):
            rows["attribute_id"].append(a)
            rows["attribute"].append(name)
            rows["class_id"].append(c)
            rows["class_name"].append(cname)
            rows["global_class_id"].append(global_ids[a][c] if global_ids is not None else g)
            g += 1
    return pl.DataFrame(rows, schema={"attribute_id": pl.Int16, "attribute": pl.Utf8, "class_id": pl.Int16,
                                      "class_name": pl.Utf8, "global_class_id": pl.Int32})


def image_stats(path: Path) -> tuple[int | None, int | None, int | None, str | None]:
    """(width, height, bytes, sha256) of an image file; width/height None when undecodable,
    everything None when the file is missing."""
    import cv2
    import numpy as np

    try:
        data = path.read_bytes()
    except OSError:
        return None, None, None, None
    sha = hashlib.sha256(data).hexdigest()
    w = h = None
    if data:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is not None and img.ndim >= 2:
            h, w = int(img.shape[0]), int(img.shape[1])
    return w, h, len(data), sha


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
