"""Where a twin's encoded images live while it is generated: in memory for a small twin, in a spool
file for a large one (289,222 DeepFashion images at 300 px are ~5 GB of JPEG bytes).

An ``ImageStore`` maps a record index to its JPEG bytes. With a ``spool`` path, every image is
appended to that file as it is produced and only (offset, length) stays in memory; a read goes back
to the file. ``copy()`` shares the bytes (an exact duplicate costs no space) and ``view()`` maps
other keys (the release's member names) onto the indices, so the zip writer can read members one
at a time in its own order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


class ImageStore:
    def __init__(self, spool: Path | None = None):
        self._mem: dict[int, bytes] | None = {} if spool is None else None
        self._where: dict[int, tuple[int, int]] = {}
        self._path = Path(spool) if spool is not None else None
        self._fh = open(self._path, "w+b") if self._path is not None else None
        self._end = 0

    # mapping of index -> bytes
    def __setitem__(self, i: int, data: bytes) -> None:
        if self._mem is not None:
            self._mem[i] = data
            return
        self._fh.seek(self._end)
        self._fh.write(data)
        self._where[i] = (self._end, len(data))
        self._end += len(data)

    def __getitem__(self, i: int) -> bytes:
        if self._mem is not None:
            return self._mem[i]
        off, n = self._where[i]
        self._fh.seek(off)
        return self._fh.read(n)

    def __contains__(self, i) -> bool:
        return i in (self._mem if self._mem is not None else self._where)

    def __len__(self) -> int:
        return len(self._mem if self._mem is not None else self._where)

    def keys(self):
        return (self._mem if self._mem is not None else self._where).keys()

    def items(self):
        return ((i, self[i]) for i in list(self.keys()))

    def size(self, i: int) -> int:
        return len(self._mem[i]) if self._mem is not None else self._where[i][1]

    def alias(self, i: int, src: int) -> None:
        """Image ``i`` has the same bytes as ``src`` (stored once)."""
        if self._mem is not None:
            self._mem[i] = self._mem[src]
        else:
            self._where[i] = self._where[src]

    def copy(self) -> "ImageStore":
        """A store with the same entries now; later writes to either do not show in the other (they
        share the spool file, where bytes are only ever appended)."""
        other = ImageStore.__new__(ImageStore)
        other._mem = dict(self._mem) if self._mem is not None else None
        other._where = dict(self._where)
        other._path, other._fh, other._end = self._path, self._fh, self._end
        return other

    def view(self, names: dict[str, int]) -> "StoreView":
        return StoreView(self, names)

    def close(self) -> None:
        """Remove the spool file (the store can no longer be read)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._path.unlink(missing_ok=True)


class StoreView(Mapping):
    """A read-only mapping name -> bytes over an ImageStore (names given as name -> index)."""

    def __init__(self, store: ImageStore, names: dict[str, int]):
        self._store, self._names = store, names

    def __getitem__(self, name: str) -> bytes:
        return self._store[self._names[name]]

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
