"""Atomic file writes, the one spelling: write to ``<name>.tmp`` beside the file, then rename it
into place (``os.replace``), so a killed stage never leaves a half-written output.

``atomic_path`` is the primitive (any writer that takes a path: parquet, zip, torch.save, a
figure); ``write_bytes``/``write_text`` the common cases. ``datasets.schemas.write_table`` and
``write_json`` write through it. (``datasets.download`` keeps its resumable ``.part`` file: it
is renamed into place the same way, but survives a killed run on purpose.)
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yields the temporary name to write; on leaving the block without an error it is renamed
    onto ``path``. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    yield tmp
    os.replace(tmp, path)


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
