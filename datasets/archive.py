"""Safe extraction of zip and tar archives (the user's downloads and the twins' zips).

Every member is checked before anything is written: absolute paths, `..` components, links whose
target leaves the extraction folder, device files and members larger than `max_member_bytes` are
refused with UnsafeArchiveError naming them. Sizes are enforced while copying too, so a member
whose header lies about its size is still stopped. Two caps stop decompression bombs: the bytes
written by one archive in all (`max_total_bytes`) and the ratio of a member's written bytes to its
compressed bytes (`max_ratio`, zip; for a compressed tar the ratio of everything written to the
archive's size), checked from the headers first and again while writing. Damaged compressed
data (zlib, bz2, lzma errors) and truncated archives are FormatErrors naming the archive.

Extraction only ever creates new files: a path that already exists in the destination is never
opened for writing. A member whose path already holds a file (a copy of the user's own file beside
the archive, or an earlier member of the same name) is compared with it: the same bytes are kept as
they are; other bytes are a ConflictError naming both, since an annotation file or an image may come
from one place only (an inner archive never silently replaces the user's annotations, and a zip with
two different `label.csv` entries is refused rather than read as the last one).

Zip names without the UTF-8 flag (legacy zips) are decoded as UTF-8 when their bytes are valid
UTF-8 (what Info-ZIP and macOS write), else as cp437 (the zip standard's default); validate then
reports an image whose name was spelled in another legacy code page as `name_encoding`.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from datasets.errors import ConflictError, FormatError, UnsafeArchiveError

CHUNK = 1 << 20
DEFAULT_MAX_TOTAL_BYTES = 64 << 30  # everything one archive may write (acquire.max_total_bytes)
DEFAULT_MAX_RATIO = 200.0  # written / compressed bytes (acquire.max_compression_ratio)
RATIO_FLOOR = 1 << 20  # members smaller than this are not held to the ratio (tiny text compresses well)
_DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError,
            NotImplementedError, RuntimeError, tarfile.TarError)
_MAGIC = ((0, b"PK\x03\x04", "zip"), (0, b"PK\x05\x06", "zip"), (0, b"\x1f\x8b", "gzip"), (0, b"BZh", "bzip2"),
          (0, b"\xfd7zXZ\x00", "xz"), (257, b"ustar", "tar"))


def _not_regular(path: Path) -> str | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "nothing (the file does not exist)"
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if not stat.S_ISREG(st.st_mode):
        return "a FIFO or device"
    return None


def sha256_file(path: str | Path) -> str:
    """The sha256 of a regular file; FormatError naming it when it is a folder, a FIFO, a device or
    unreadable."""
    path = Path(path)
    why = _not_regular(path)
    if why is not None:
        raise FormatError(path, None, "an archive (a regular file)", got=why)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
    except OSError as e:
        raise FormatError(path, None, "a readable file", got=f"{type(e).__name__}: {e.strerror or e}") from None
    return h.hexdigest()


def archive_kind(path: str | Path) -> str | None:
    """'zip', 'gzip', 'bzip2', 'xz' or 'tar' from the file's first bytes (a damaged or truncated
    archive is still recognised, so that it is reported as a damaged archive); None otherwise.
    Raises FormatError when the file cannot be read."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        with open(p, "rb") as f:
            head = f.read(262)
    except OSError as e:
        raise FormatError(p, None, "a readable file", got=f"{type(e).__name__}: {e.strerror or e}") from None
    for off, magic, kind in _MAGIC:
        if head[off : off + len(magic)] == magic:
            return kind
    return None


def _old_tar(path: Path) -> bool:
    """A tar without the ustar magic (v7), recognised by tarfile itself."""
    try:
        return tarfile.is_tarfile(path)
    except _DAMAGED:
        return False


def is_archive(path: str | Path) -> bool:
    return archive_kind(path) is not None or (Path(path).is_file() and _old_tar(Path(path)))


class _Budget:
    """The bytes one archive may still write (max_total_bytes)."""

    def __init__(self, archive: Path, total: int):
        self.archive, self.total, self.used = archive, int(total), 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.total:
            raise UnsafeArchiveError(f"{self.archive}: extraction would write more than max_total_bytes = {self.total}")


def _unsafe_name(name: str) -> str | None:
    n = name.replace("\\", "/")
    if n.startswith("/") or (len(n) > 1 and n[1] == ":"):
        return "absolute path"
    if ".." in n.split("/"):
        return "'..' in the path"
    if "\x00" in n:
        return "NUL in the name"
    return None


def _link_escapes(member: str, target: str, hard: bool) -> bool:
    t = target.replace("\\", "/")
    if t.startswith("/") or (len(t) > 1 and t[1] == ":"):
        return True
    base = "" if hard else posixpath.dirname(member)
    norm = posixpath.normpath(posixpath.join(base, t))
    return norm == ".." or norm.startswith("../")


def _new_file(path: Path):
    """Open a new file for writing; an existing path (perhaps a hard link to someone else's file)
    is unlinked first, never written through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        if path.is_dir() and not path.is_symlink():
            raise UnsafeArchiveError(f"{path} is a folder; an archive member cannot replace it")
        path.unlink()
    return open(path, "xb")


def _limited_chunks(src, limit: int, name: str, budget: _Budget | None, compressed: int | None,
                    max_ratio: float | None):
    """The chunks of a member, stopped by max_member_bytes, the ratio cap and the archive's budget."""
    n = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return
        n += len(chunk)
        if n > limit:
            raise UnsafeArchiveError(f"member {name!r} is larger than max_member_bytes = {limit}")
        if max_ratio and compressed is not None and n > RATIO_FLOOR and n > max_ratio * max(compressed, 1):
            raise UnsafeArchiveError(f"member {name!r} expands more than max_compression_ratio = {max_ratio:g} "
                                     f"times its {compressed} compressed bytes")
        if budget is not None:
            budget.take(len(chunk))
        yield chunk


def _same_as_existing(src, dst_path: Path, limit: int, name: str, budget: _Budget | None,
                      compressed: int | None, max_ratio: float | None) -> bool:
    """Whether the member read from ``src`` has exactly the bytes of the file at ``dst_path``."""
    with open(dst_path, "rb") as have:
        for chunk in _limited_chunks(src, limit, name, budget, compressed, max_ratio):
            if have.read(len(chunk)) != chunk:
                return False
        return have.read(1) == b""


def _place(src, dst_path: Path, limit: int, name: str, archive: Path, written: set, budget: _Budget | None = None,
           compressed: int | None = None, max_ratio: float | None = None) -> None:
    """Write a member at dst_path; where a regular file is there already (a copy of the user's file,
    or a member of the same name written before), keep it when the bytes are the same and raise
    ConflictError naming both when they are not."""
    if dst_path.is_file() and not dst_path.is_symlink():
        if _same_as_existing(src, dst_path, limit, name, budget, compressed, max_ratio):
            return
        if dst_path in written:
            raise ConflictError(f"{archive}: member {name!r} appears twice with different content; which one is "
                                "meant cannot be told (repack the archive with one copy)")
        raise ConflictError(f"{dst_path} and {archive}!/{name}: two copies of one file with different content; a "
                            "file may come from one place only (remove one of them, or make them identical)")
    _copy_limited(src, dst_path, limit, name, budget, compressed, max_ratio)
    written.add(dst_path)


def _copy_limited(src, dst_path: Path, limit: int, name: str, budget: _Budget | None = None,
                  compressed: int | None = None, max_ratio: float | None = None) -> None:
    with _new_file(dst_path) as out:
        try:
            for chunk in _limited_chunks(src, limit, name, budget, compressed, max_ratio):
                out.write(chunk)
        except BaseException:
            out.close()
            dst_path.unlink(missing_ok=True)
            raise


def _inside(dest: Path, name: str) -> Path:
    p = (dest / name).resolve()
    if p != dest and dest not in p.parents:
        raise UnsafeArchiveError(f"member {name!r} would be written outside {dest}")
    return p


def extract(archive: str | Path, dest: str | Path, max_member_bytes: int, max_total_bytes: int | None = None,
            max_ratio: float | None = None) -> list[str]:
    """Extract a zip or tar (gz/bz2/xz) archive into dest; returns the member files written.
    The archive itself is only read."""
    archive, dest = Path(archive), Path(dest)
    kind = archive_kind(archive)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    total = DEFAULT_MAX_TOTAL_BYTES if max_total_bytes is None else int(max_total_bytes)
    ratio = DEFAULT_MAX_RATIO if max_ratio is None else float(max_ratio)
    if kind == "zip":
        return _extract_zip(archive, dest, max_member_bytes, _Budget(archive, total), ratio)
    try:
        is_tar = tarfile.is_tarfile(archive)
    except _DAMAGED:
        is_tar = False
    if is_tar:
        return _extract_tar(archive, dest, max_member_bytes, _Budget(archive, total), ratio, kind not in ("tar", None))
    if kind is not None:
        raise FormatError(archive, None, f"an intact {kind} archive", got="damaged or truncated data")
    raise FormatError(archive, None, "a zip or tar archive")


def member_name(info: zipfile.ZipInfo) -> str:
    """A zip member's name: as stored when the UTF-8 flag is set or it is ASCII; a legacy name
    (no flag) whose bytes are valid UTF-8 is read as UTF-8, any other as cp437 (zipfile's reading)."""
    name = info.filename
    if info.flag_bits & 0x800 or name.isascii():
        return name
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def _extract_zip(archive: Path, dest: Path, limit: int, budget: _Budget, max_ratio: float) -> list[str]:
    try:
        zf = zipfile.ZipFile(archive)
    except _DAMAGED as e:
        raise FormatError(archive, None, "an intact zip archive (it may be truncated)", got=str(e)) from None
    with zf:
        problems = []
        links = {}
        infos = [(info, member_name(info)) for info in zf.infolist()]
        seen: dict[str, tuple[int, int]] = {}
        for info, name in infos:
            why = _unsafe_name(name)
            mode = info.external_attr >> 16
            if why is None and not info.is_dir():
                prev = seen.setdefault(name, (info.CRC, info.file_size))
                if prev != (info.CRC, info.file_size):
                    why = "listed twice with different content: which copy is meant cannot be told"
            if why is None and stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", "replace")
                if _link_escapes(name, target, hard=False):
                    why = f"link to {target!r} outside the archive"
                else:
                    links[name] = target
            if why is None and info.file_size > limit:
                why = f"{info.file_size} bytes > max_member_bytes = {limit}"
            if (why is None and max_ratio and info.file_size > RATIO_FLOOR
                    and info.file_size > max_ratio * max(info.compress_size, 1)):
                why = (f"{info.file_size} bytes from {info.compress_size} compressed: ratio > "
                       f"max_compression_ratio = {max_ratio:g}")
            if why:
                problems.append(f"{name!r} ({why})")
        declared = sum(i.file_size for i in zf.infolist())
        if declared > budget.total:
            problems.append(f"{declared} bytes in all > max_total_bytes = {budget.total}")
        if problems:
            raise UnsafeArchiveError(f"{archive}: refused members: " + "; ".join(problems))
        written = []
        placed: set[Path] = set()
        try:
            for info, name in infos:
                if info.is_dir():
                    _inside(dest, name).mkdir(parents=True, exist_ok=True)
                    continue
                if name in links:
                    continue  # links inside the tree: materialised as copies below
                target = _inside(dest, name)
                with zf.open(info) as src:
                    _place(src, target, limit, name, archive, placed, budget, info.compress_size, max_ratio)
                written.append(name)
            for name, t in links.items():
                src_p = _inside(dest, posixpath.normpath(posixpath.join(posixpath.dirname(name), t)))
                if src_p.is_file():
                    with open(src_p, "rb") as src:
                        _place(src, _inside(dest, name), limit, name, archive, placed, budget)
                    written.append(name)
        except (UnsafeArchiveError, ConflictError):
            raise
        except _DAMAGED as e:
            raise FormatError(archive, None, "an intact zip archive",
                              got=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
    return written


def _extract_tar(archive: Path, dest: Path, limit: int, budget: _Budget, max_ratio: float, compressed: bool) -> list[str]:
    try:
        tf = tarfile.open(archive)
    except _DAMAGED as e:
        raise FormatError(archive, None, "a readable tar archive", got=str(e)) from None
    packed = archive.stat().st_size
    with tf:
        try:
            members = tf.getmembers()
        except _DAMAGED as e:
            raise FormatError(archive, None, "an intact tar archive (it may be truncated)", got=str(e)) from None
        problems = []
        for m in members:
            why = _unsafe_name(m.name)
            if why is None and (m.issym() or m.islnk()) and _link_escapes(m.name, m.linkname, hard=m.islnk()):
                why = f"link to {m.linkname!r} outside the archive"
            if why is None and (m.isdev() or m.isfifo()):
                why = "device or fifo"
            if why is None and m.isfile() and m.size > limit:
                why = f"{m.size} bytes > max_member_bytes = {limit}"
            if why:
                problems.append(f"{m.name!r} ({why})")
        declared = sum(m.size for m in members if m.isfile())
        if declared > budget.total:
            problems.append(f"{declared} bytes in all > max_total_bytes = {budget.total}")
        if compressed and max_ratio and declared > RATIO_FLOOR and declared > max_ratio * max(packed, 1):
            problems.append(f"{declared} bytes from a {packed}-byte archive: ratio > max_compression_ratio = {max_ratio:g}")
        if problems:
            raise UnsafeArchiveError(f"{archive}: refused members: " + "; ".join(problems))
        written = []
        deferred = []
        placed: set[Path] = set()
        try:
            for m in members:
                if m.isdir():
                    _inside(dest, m.name).mkdir(parents=True, exist_ok=True)
                elif m.isfile():
                    src = tf.extractfile(m)
                    _place(src, _inside(dest, m.name), limit, m.name, archive, placed, budget)
                    written.append(m.name)
                elif m.issym() or m.islnk():
                    deferred.append(m)
            for m in deferred:  # links inside the tree become copies (no link survives extraction)
                base = "" if m.islnk() else posixpath.dirname(m.name)
                src_p = _inside(dest, posixpath.normpath(posixpath.join(base, m.linkname)))
                if src_p.is_file():
                    with open(src_p, "rb") as srcf:
                        _place(srcf, _inside(dest, m.name), limit, m.name, archive, placed, budget)
                    written.append(m.name)
        except (UnsafeArchiveError, ConflictError):
            raise
        except _DAMAGED as e:
            raise FormatError(archive, None, "an intact tar archive",
                              got=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
    return written


def copy_file(src: Path, dst: Path) -> None:
    """Copy a user's file into the suite's folder. The source is only read (never linked: a later
    write or unlink in the destination must not reach it); `dst` is created anew (an existing one
    is unlinked, not written through); only regular files are copied (a FIFO would block); the
    source and destination being one file is refused (it would be lost)."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FormatError(src, None, "a regular file", got="a FIFO, device or folder" if src.exists() else "nothing")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        raise UnsafeArchiveError(f"{src}: source and destination {dst} are the same file")
    try:
        with open(src, "rb") as f, _new_file(dst) as out:
            shutil.copyfileobj(f, out, CHUNK)
    except OSError as e:
        raise FormatError(src, None, "a readable file", got=f"{type(e).__name__}: {e.strerror or e}") from None


link_or_copy = copy_file  # the old name: every input is copied now (hard links let extraction write through)
