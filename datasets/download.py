"""HTTP(S) downloads with resume (Range), retries with backoff and checksum verification.

`download()` writes `<dest>.part`, resumes it with a Range request after a dropped connection,
and renames it to `dest` only once the size and (when given) the sha256 match. `fetch_many()`
downloads a URL list with bounded concurrency and reports the ones that failed (status, error).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import ChecksumError, DownloadError

CHUNK = 1 << 16
USER_AGENT = "fashionbench/0.1 (+https://github.com/)"
_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError, OSError)


class _HTTPStatus(DownloadError):
    def __init__(self, url: str, status: int, reason: str = ""):
        self.status = status
        super().__init__(f"{url}: HTTP {status} {reason}".strip())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _attempt(url: str, part: Path, timeout: float, bar) -> None:
    """One request: resume `part` from its size. Raises on any failure; returns when complete."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the part file is complete
            return
        raise _HTTPStatus(url, e.code, str(e.reason)) from None
    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        if have and status == 206:
            mode = "ab"
            total = have + int(length) if length else None
        else:  # server ignored the Range: start over
            mode, have = "wb", 0
            total = int(length) if length else None
        if bar is not None:
            bar.reset(total=total)
            bar.update(have)
        got = 0
        with open(part, mode) as f:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if total is not None and have + got < total:
            raise http.client.IncompleteRead(b"", total - have - got)


def download(url: str, dest: str | Path, sha256: str | None = None, retries: int = 3, backoff_s: float = 0.2,
             timeout_s: float = 30, progress: bool = True) -> Path:
    """Download `url` to `dest` (resuming `dest.part`); returns dest. Raises DownloadError
    (with `.status` for HTTP errors) or ChecksumError; 4xx answers are not retried."""
    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    bar = tqdm(desc=dest.name, unit="B", unit_scale=True, file=sys.stderr,
               disable=not (progress and sys.stderr.isatty()), leave=False)
    last: Exception | None = None
    try:
        for attempt in range(retries + 1):
            try:
                _attempt(url, part, timeout_s, bar)
                last = None
                break
            except _HTTPStatus as e:
                if 400 <= e.status < 500 and e.status not in (408, 429):
                    raise
                last = e
            except _TRANSIENT as e:
                last = e
            if attempt < retries:
                time.sleep(backoff_s * (2**attempt))
    finally:
        bar.close()
    if last is not None:
        err = DownloadError(f"{url}: failed after {retries + 1} attempts: {type(last).__name__}: {last}")
        err.status = getattr(last, "status", "dropped")
        raise err
    if sha256:
        actual = _sha256(part)
        if actual.lower() != sha256.lower():
            part.unlink()
            raise ChecksumError(dest, sha256, actual)
    os.replace(part, dest)
    return dest


@dataclass
class FetchResult:
    path: str
    url: str
    ok: bool
    status: int | str | None = None  # HTTP status of a failure, or 'dropped' for a broken connection
    error: str = ""


def fetch_many(items: list[tuple[str, str]], dest_root: str | Path, concurrency: int = 8, retries: int = 3,
               backoff_s: float = 0.2, timeout_s: float = 10, progress: bool = True) -> list[FetchResult]:
    """Download (relative path, url) pairs under dest_root, `concurrency` at a time."""
    from tqdm import tqdm

    root = Path(dest_root)

    def one(item):
        rel, url = item
        try:
            download(url, root / rel, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s, progress=False)
            return FetchResult(rel, url, True)
        except DownloadError as e:
            return FetchResult(rel, url, False, getattr(e, "status", None), str(e))

    out = []
    with ThreadPoolExecutor(max_workers=max(1, int(concurrency))) as ex:
        it = ex.map(one, items)
        for r in tqdm(it, total=len(items), desc="images", unit="url", file=sys.stderr,
                      disable=not (progress and sys.stderr.isatty())):
            out.append(r)
    return out
