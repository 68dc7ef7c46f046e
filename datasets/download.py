"""HTTP(S) downloads with resume (Range), retries with backoff and checksum verification.

`download()` writes `<dest>.part`, resumes it with a Range request after a dropped connection,
and renames it to `dest` only once the size and (when given) the sha256 match. `fetch_many()`
downloads a URL list with bounded concurrency and reports the ones that failed (status, error).
It skips a destination that already exists: a file appears only through that atomic rename, so
one that exists is complete (a download killed part-way leaves only its `.part`, which is resumed).

Only http and https URLs are fetched (redirects too). A `.part` is resumed only when it is known
to be the same resource: its validator (ETag or Last-Modified) and total size were recorded in
`<dest>.part.json` when it was started, the resume request carries `If-Range`, and the answer's
`Content-Range` must start at the part's size and name the recorded total; a 416 means "complete"
only when its `Content-Range: bytes */N` equals the part's size. Anything else starts over, so a
stale or foreign `.part` is never spliced into the file. Only 5xx, 408, 429 and broken connections
are retried; a 4xx, a redirect loop or a refused scheme is not.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import ChecksumError, DownloadError

CHUNK = 1 << 16
USER_AGENT = "fashionbench/0.1 (+https://github.com/)"
_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError, OSError)
SCHEMES = ("http", "https")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED = re.compile(r"bytes\s+\*/(\d+)")


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


class _BadScheme(DownloadError):
    status = "bad_scheme"


def check_scheme(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise _BadScheme(f"{url}: only http and https URLs are fetched, not {scheme or 'a relative path'!r}")


class _SafeRedirect(urllib.request.HTTPRedirectHandler):
    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_scheme(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SafeRedirect)


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_meta(part: Path) -> dict:
    try:
        m = json.loads(_meta_path(part).read_text())
        return m if isinstance(m, dict) else {}
    except (OSError, ValueError):
        return {}


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)


def _attempt(url: str, part: Path, timeout: float, bar) -> None:
    """One request: resume `part` from its size when it is provably the same resource (else start
    over). Raises on any failure; returns when complete."""
    have = part.stat().st_size if part.exists() else 0
    meta = _read_meta(part) if have else {}
    validator = meta.get("etag") or meta.get("last_modified")
    if have and (meta.get("url") != url or not validator or not meta.get("total")):
        _discard(part)  # a .part we cannot vouch for (stale, foreign, or no validator): start over
        have, meta, validator = 0, {}, None
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
        req.add_header("If-Range", validator)
    try:
        resp = _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            m = _UNSATISFIED.fullmatch((e.headers.get("Content-Range") or "").strip())
            if m and int(m.group(1)) == have == int(meta["total"]):
                return  # nothing left to fetch: the part file is complete
            _discard(part)
            raise _HTTPStatus(url, 503, "416 for a part that is not the resource: starting over") from None
        raise _HTTPStatus(url, e.code, str(e.reason)) from None
    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        mode = "wb"
        if have and status == 206:
            m = _CONTENT_RANGE.fullmatch((resp.headers.get("Content-Range") or "").strip())
            if not m or int(m.group(1)) != have or m.group(3) == "*" or int(m.group(3)) != int(meta["total"]):
                _discard(part)
                raise _HTTPStatus(url, 503, f"Content-Range {resp.headers.get('Content-Range')!r} does not continue "
                                            f"the part's {have} bytes: starting over")
            mode, total = "ab", int(m.group(3))
        else:  # a full answer (the server ignored the Range, or If-Range found the resource changed)
            have = 0
            total = int(length) if length else None
            _discard(part)
            etag, lm = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
            if total and (etag or lm):
                _meta_path(part).parent.mkdir(parents=True, exist_ok=True)
                _meta_path(part).write_text(json.dumps({"url": url, "etag": etag, "last_modified": lm, "total": total}))
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
        if total is not None and have + got > total:
            _discard(part)
            raise _HTTPStatus(url, 503, f"{have + got} bytes for a {total}-byte resource: starting over")


def download(url: str, dest: str | Path, sha256: str | None = None, retries: int = 3, backoff_s: float = 0.2,
             timeout_s: float = 30, progress: bool = True) -> Path:
    """Download `url` to `dest` (resuming `dest.part`); returns dest. Raises DownloadError
    (with `.status` for HTTP errors) or ChecksumError; 4xx answers are not retried."""
    from tqdm import tqdm

    dest = Path(dest)
    check_scheme(url)
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
            except _BadScheme:
                raise
            except _HTTPStatus as e:
                if not (e.status >= 500 or e.status in (408, 429)):
                    raise  # 4xx, and redirects urllib gave up on (a loop), are not retried
                last = e
            except _TRANSIENT as e:
                last = e
            if attempt < retries:
                time.sleep(backoff_s * (2**attempt))
    finally:
        bar.close()
    if last is not None:
        why = f"{type(last).__name__}: {last}"
        if isinstance(last, http.client.IncompleteRead):
            # not its byte counts: they depend on how much of the .part an earlier (killed) run left,
            # and the record of a dead link must be the same whatever run it comes from
            why = "IncompleteRead: the connection closed before the end of the body"
        err = DownloadError(f"{url}: failed after {retries + 1} attempts: {why}")
        err.status = getattr(last, "status", "dropped")
        raise err
    if sha256:
        actual = _sha256(part)
        if actual.lower() != sha256.lower():
            _discard(part)
            raise ChecksumError(dest, sha256, actual)
    os.replace(part, dest)
    _meta_path(part).unlink(missing_ok=True)
    return dest


@dataclass
class FetchResult:
    path: str
    url: str
    ok: bool
    status: int | str | None = None  # HTTP status of a failure, or 'dropped' for a broken connection
    error: str = ""
    cached: bool = False  # the destination existed already: nothing was requested


def fetch_many(items: list[tuple[str, str]], dest_root: str | Path, concurrency: int = 8, retries: int = 3,
               backoff_s: float = 0.2, timeout_s: float = 10, progress: bool = True) -> list[FetchResult]:
    """Download (relative path, url) pairs under dest_root, `concurrency` at a time. A destination
    that exists is complete (download() renames a finished .part into place atomically): it is not
    requested again and its result has ``cached=True``; a leftover ``.part`` is resumed."""
    from tqdm import tqdm

    root = Path(dest_root)

    def one(item):
        rel, url = item
        if (root / rel).is_file():
            return FetchResult(rel, url, True, cached=True)
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
