"""Safe extraction of zip and tar archives (the user's downloads and the twins' zips).

Every member is checked before anything is written: absolute paths, `..` components, links whose
target leaves the extraction folder, device files and members larger than `max_member_bytes` are
refused with UnsafeArchiveError naming them. Sizes are enforced while copying too, so a member
whose header lies about its size is still stopped.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from datasets.errors import FormatError, UnsafeArchiveError

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def is_archive(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    return zipfile.is_zipfile(p) or tarfile.is_tarfile(p)


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


def _copy_limited(src, dst_path: Path, limit: int, name: str) -> None:
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(dst_path, "wb") as out:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            n += len(chunk)
            if n > limit:
                out.close()
                dst_path.unlink()
                raise UnsafeArchiveError(f"member {name!r} is larger than max_member_bytes = {limit}")
            out.write(chunk)


def _inside(dest: Path, name: str) -> Path:
    p = (dest / name).resolve()
    if p != dest and dest not in p.parents:
        raise UnsafeArchiveError(f"member {name!r} would be written outside {dest}")
    return p


def extract(archive: str | Path, dest: str | Path, max_member_bytes: int) -> list[str]:
    """Extract a zip or tar (gz/bz2/xz) archive into dest; returns the member files written."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, dest, max_member_bytes)
    try:
        is_tar = tarfile.is_tarfile(archive)
    except OSError:
        is_tar = False
    if is_tar:
        return _extract_tar(archive, dest, max_member_bytes)
    raise FormatError(archive, None, "a zip or tar archive")


def _extract_zip(archive: Path, dest: Path, limit: int) -> list[str]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise FormatError(archive, None, "a readable zip archive", got=str(e)) from None
    with zf:
        problems = []
        links = {}
        for info in zf.infolist():
            why = _unsafe_name(info.filename)
            mode = info.external_attr >> 16
            if why is None and stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", "replace")
                if _link_escapes(info.filename, target, hard=False):
                    why = f"link to {target!r} outside the archive"
                else:
                    links[info.filename] = target
            if why is None and info.file_size > limit:
                why = f"{info.file_size} bytes > max_member_bytes = {limit}"
            if why:
                problems.append(f"{info.filename!r} ({why})")
        if problems:
            raise UnsafeArchiveError(f"{archive}: refused members: " + "; ".join(problems))
        written = []
        try:
            for info in zf.infolist():
                if info.is_dir():
                    _inside(dest, info.filename).mkdir(parents=True, exist_ok=True)
                    continue
                if info.filename in links:
                    continue  # links inside the tree: materialised as copies below
                target = _inside(dest, info.filename)
                with zf.open(info) as src:
                    _copy_limited(src, target, limit, info.filename)
                written.append(info.filename)
            for name, t in links.items():
                src_p = _inside(dest, posixpath.normpath(posixpath.join(posixpath.dirname(name), t)))
                if src_p.is_file():
                    shutil.copyfile(src_p, _inside(dest, name))
                    written.append(name)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
            raise FormatError(archive, None, "an intact zip archive", got=str(e)) from None
    return written


def _extract_tar(archive: Path, dest: Path, limit: int) -> list[str]:
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError) as e:
        raise FormatError(archive, None, "a readable tar archive", got=str(e)) from None
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise FormatError(archive, None, "an intact tar archive", got=str(e)) from None
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
        if problems:
            raise UnsafeArchiveError(f"{archive}: refused members: " + "; ".join(problems))
        written = []
        deferred = []
        try:
            for m in members:
                if m.isdir():
                    _inside(dest, m.name).mkdir(parents=True, exist_ok=True)
                elif m.isfile():
                    src = tf.extractfile(m)
                    _copy_limited(src, _inside(dest, m.name), limit, m.name)
                    written.append(m.name)
                elif m.issym() or m.islnk():
                    deferred.append(m)
            for m in deferred:  # links inside the tree become copies (no link survives extraction)
                base = "" if m.islnk() else posixpath.dirname(m.name)
                src_p = _inside(dest, posixpath.normpath(posixpath.join(base, m.linkname)))
                if src_p.is_file():
                    shutil.copyfile(src_p, _inside(dest, m.name))
                    written.append(m.name)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise FormatError(archive, None, "an intact tar archive", got=str(e)) from None
    return written


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
