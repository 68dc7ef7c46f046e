"""Parsers of the benchmarks' raw release files into the canonical tables (datasets/schemas.py).

Each parser reads a raw folder (the release layout) and returns a `ParseResult`: the image list in
the source's order, long-form labels, the taxonomy, the partition and ASEN roles where the source
has them, and the lines it could not parse (quarantined, not fatal). A file that is not the
expected format at all raises `FormatError`; parsers raise only `datasets.errors` types.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from datasets.errors import FormatError, WrongFormatError

# a file whose share of unparseable data lines is above this is "not that format at all"
MAX_BAD_LINE_SHARE = 0.5
# an image whose header claims more pixels than this is not decoded (validate.max_pixels)
DEFAULT_MAX_PIXELS = 40_000_000
_DRIVE = re.compile(r"^[A-Za-z]:")
# characters refused in a path: C0 controls (NUL, ESC...), DEL, C1 controls (0x80-0x9f, CSI and OSC
# among them) and the bidirectional formatting characters (U+202E RIGHT-TO-LEFT OVERRIDE makes
# 'gpj.exe' show as 'exe.jpg'); a no-break space or another letter of any script is a name's own
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def control_char(name: str) -> str | None:
    """A description of the first control or bidirectional formatting character in ``name``, or None."""
    m = _CONTROL.search(name)
    return None if m is None else f"U+{ord(m.group()):04X} at character {m.start() + 1}"


def safe_relpath(name: str) -> tuple[str | None, str]:
    """(normalised '/'-separated relative path, "") of a path named by an annotation or URL list, or
    (None, why) when it would leave its release folder. The check runs on the normalised form:
    backslashes become '/' first, then absolute paths, drive letters, UNC names, '..' components,
    NUL, control characters (C0, DEL, C1) and bidirectional formatting characters (U+202E...) are
    refused; '.' components and doubled separators are dropped."""
    if not name or not name.strip():
        return None, "an empty path"
    n = name.replace("\\", "/")
    bad = control_char(n)
    if bad is not None:
        return None, f"a control or bidirectional formatting character in the path ({bad})"
    if n.startswith("/"):
        return None, "an absolute path"
    if _DRIVE.match(n):
        return None, "a drive letter"
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "a '..' component"
    if not parts:
        return None, "an empty path"
    return "/".join(parts), ""


def confined(root: str | Path, name: str) -> Path | None:
    """``root / name`` when the normalised name stays inside root (after resolving links), else None."""
    relp, _ = safe_relpath(name)
    if relp is None:
        return None
    root = Path(root).resolve()
    p = (root / relp).resolve()
    return p if p == root or root in p.parents else None


def regular_file_error(path: Path) -> str | None:
    """Why ``path`` cannot be read as a data file (a FIFO or device would block a reader), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "the file does not exist"
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return "a FIFO, device or folder, not a regular file"
    return None


def read_lines(path: str | Path) -> list[str]:
    """Lines of a text file: UTF-8 (BOM dropped), CRLF or LF, trailing empty line dropped.

    Raises FormatError naming the line of the first byte that is not UTF-8.
    """
    path = Path(path)
    why = regular_file_error(path)
    if why is not None:
        raise FormatError(path, None, "a readable regular file", got=why)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FormatError(path, None, "a readable file", got=f"{type(e).__name__}: {e.strerror or e}") from None
    from datasets.archive import archive_kind

    kind = archive_kind(path) if data[:2] in (b"PK", b"\x1f\x8b", b"BZ", b"\xfd7") else None
    if kind is not None:
        raise FormatError(path, None, "a text file", got=f"a {kind} archive (damaged or truncated, or not extracted)")
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
        raise WrongFormatError(path, first.line, expected, got=got)


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


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF or a PNG's IHDR header, without decoding; None when the
    header is not found (not JPEG/PNG, or damaged)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 > n:
                return None
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        i += 2 + seg
    return None


def too_many_pixels(data: bytes, max_pixels: int) -> str | None:
    """The reason not to decode ``data`` (its header claims more than max_pixels), or None."""
    wh = header_size(data)
    if wh is not None and wh[0] * wh[1] > max_pixels:
        return f"{wh[0]}x{wh[1]} = {wh[0] * wh[1]} pixels > max_pixels = {max_pixels}"
    return None


def decode(data: bytes, flags=None):
    """cv2.imdecode that returns None instead of raising (OpenCV raises on huge or odd images)."""
    import cv2
    import numpy as np

    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED if flags is None else flags)
    except cv2.error:
        return None


def image_stats(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int | None, int | None, int | None, str | None]:
    """(width, height, bytes, sha256) of an image file; width/height None when undecodable or when
    its header claims more than ``max_pixels`` (not decoded then), everything None when the file
    is missing or not a regular file (a FIFO would block)."""
    if regular_file_error(path) is not None:
        return None, None, None, None
    try:
        data = path.read_bytes()
    except OSError:
        return None, None, None, None
    sha = hashlib.sha256(data).hexdigest()
    w = h = None
    if data and too_many_pixels(data, max_pixels) is None:
        img = decode(data)
        if img is not None and img.ndim >= 2:
            h, w = int(img.shape[0]), int(img.shape[1])
    return w, h, len(data), sha


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
