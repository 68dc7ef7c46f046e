"""DARN (docs/PROTOCOL.md#darn): images only as a URL list; the labels and splits are ASEN's files.

`urls.txt`: `<relative path> <url>` per line (the path may contain spaces; the URL is the last
field, absolute or relative to a base the acquire stage is given).
"""

from __future__ import annotations

from pathlib import Path

from datasets.errors import FormatError
from datasets.parsers import ParseResult, read_lines, safe_relpath
from datasets.parsers import asen

EXPECTED = "'<relative image path> <url>'"


def parse_urls(path: Path) -> list[tuple[str, str, int]]:
    """[(relative path, url, 1-based line)]; a malformed line raises FormatError."""
    out = []
    for i, ln in enumerate(read_lines(path), start=1):
        s = ln.strip()
        if not s:
            continue
        parts = s.rsplit(None, 1)
        if len(parts) != 2:
            raise FormatError(path, i, EXPECTED, got=ln)
        name, url = parts[0].strip(), parts[1]
        norm, why = safe_relpath(name)
        if norm is None or "://" in name:
            raise FormatError(path, i, EXPECTED + f" with a path inside the release folder ({why or 'a URL'})", got=ln)
        out.append((norm, url, i))
    if not out:
        raise FormatError(path, 1, EXPECTED, got="an empty file")
    return out


def parse(raw: Path, meta_path: Path | None = None) -> ParseResult:
    return asen.parse(Path(raw), "darn", meta_path)
