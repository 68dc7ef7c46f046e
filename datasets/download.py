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

A download that ends early is not kept as complete. The body is read to the end of the connection
(urllib asks the server to close it), not only to its `Content-Length`, so a `Content-Length`
shorter than the body sent is caught (status `bad_length`, not retried); a body shorter than its
`Content-Length` or `Content-Range` total is a broken connection (retried, resumed). A size the
caller knows (`size=`) is checked too, and a `sha256` wherever one is given. A close-delimited
answer (no `Content-Length`, not chunked) cut part-way cannot be told from a complete one: without a
size or sha256 it is kept and reported as "length unverified" (`record["length_verified"]` False,
`FetchResult.length_verified`), which the acquire report counts.
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


class _BadLength(DownloadError):
    """The server sent more bytes than its Content-Length (or a size that is not a number): the
    length it declares cannot be trusted, so neither can the file."""
    status = "bad_length"


_DIGITS = re.compile(r"\s*([0-9]{1,18})\s*")


def _declared_length(value: str | None, url: str) -> int | None:
    if value is None:
        return None
    m = _DIGITS.fullmatch(value)
    if m is None:
        raise _BadLength(f"{url}: Content-Length {value[:40]!r} is not a byte count")
    return int(m.group(1))


def _sock(resp):
    """The socket under an http.client response, or None."""
    raw = getattr(getattr(resp, "fp", None), "raw", None)
    return getattr(raw, "_sock", None)


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


def _attempt(url: str, part: Path, timeout: float, bar) -> bool:
    """One request: resume `part` from its size when it is provably the same resource (else start
    over). Raises on any failure; returns when complete: whether its length was verified (a
    Content-Length or Content-Range total that the bytes received match)."""
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
                return True  # nothing left to fetch: the part file is complete (its total was recorded)
            _discard(part)
            raise _HTTPStatus(url, 503, "416 for a part that is not the resource: starting over") from None
        raise _HTTPStatus(url, e.code, str(e.reason)) from None
    with resp:
        status = resp.status
        length = resp.headers.get("Content-Length")
        declared = None if getattr(resp, "chunked", False) else _declared_length(length, url)
        if declared is not None:
            resp.length = None  # read to the end of the connection: a body longer than declared is seen
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
            total = declared
            _discard(part)
            etag, lm = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
            if total and (etag or lm):
                _meta_path(part).parent.mkdir(parents=True, exist_ok=True)
                _meta_path(part).write_text(json.dumps({"url": url, "etag": etag, "last_modified": lm, "total": total}))
        if bar is not None:
            bar.reset(total=total)
            bar.update(have)
        got = 0
        waited_short = False
        with open(part, mode) as f:
            while True:
                if declared is not None and got >= declared and not waited_short:
                    # everything declared is here: a server that keeps the connection open is given
                    # a moment to show more bytes, not the whole timeout
                    waited_short = True
                    sock = _sock(resp)
                    if sock is not None:
                        sock.settimeout(min(timeout, 1.0))
                try:
                    chunk = resp.read(CHUNK)
                except (socket.timeout, TimeoutError):
                    if waited_short:
                        break  # the declared body, and nothing after it
                    raise
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if declared is not None and got > declared:
            _discard(part)
            raise _BadLength(f"{url}: the server sent {got} bytes or more after a Content-Length of {declared}: "
                             "the declared length is wrong, so the file cannot be told complete; not kept")
        if declared is not None and got < declared:
            raise http.client.IncompleteRead(b"", declared - got)
        if total is not None and have + got < total:
            raise http.client.IncompleteRead(b"", total - have - got)
        if total is not None and have + got > total:
            _discard(part)
            raise _HTTPStatus(url, 503, f"{have + got} bytes for a {total}-byte resource: starting over")
        return declared is not None or total is not None


def download(url: str, dest: str | Path, sha256: str | None = None, retries: int = 3, backoff_s: float = 0.2,
             timeout_s: float = 30, progress: bool = True, size: int | None = None,
             record: dict | None = None) -> Path:
    """Download `url` to `dest` (resuming `dest.part`); returns dest. Raises DownloadError
    (with `.status` for HTTP errors) or ChecksumError; 4xx answers are not retried. ``size`` (bytes,
    when a list records it) and ``sha256`` are checked before the file is kept. ``record``, when
    given, receives ``bytes``, ``length_verified`` (a Content-Length / Content-Range total or
    ``size`` matched the bytes received) and ``sha256_checked``."""
    from tqdm import tqdm

    dest = Path(dest)
    check_scheme(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    bar = tqdm(desc=dest.name, unit="B", unit_scale=True, file=sys.stderr,
               disable=not (progress and sys.stderr.isatty()), leave=False)
    last: Exception | None = None
    verified = False
    try:
        for attempt in range(retries + 1):
            try:
                verified = _attempt(url, part, timeout_s, bar)
                last = None
                break
            except (_BadScheme, _BadLength):
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
    n = part.stat().st_size
    if size is not None:
        if n != int(size):
            _discard(part)
            err = DownloadError(f"{url}: {n} bytes received, but the list records {int(size)}: not kept")
            err.status = "bad_length"
            raise err
        verified = True
    if sha256:
        actual = _sha256(part)
        if actual.lower() != sha256.lower():
            _discard(part)
            raise ChecksumError(dest, sha256, actual)
    if record is not None:
        record.update({"bytes": n, "length_verified": bool(verified), "sha256_checked": bool(sha256)})
    os.replace(part, dest)
    _meta_path(part).unlink(missing_ok=True)
    return dest


UNVERIFIED_SUFFIX = ".length-unverified"  # beside a cached file whose length nothing could verify


@dataclass
class FetchResult:
    path: str
    url: str
    ok: bool
    status: int | str | None = None  # HTTP status of a failure, or 'dropped' for a broken connection
    error: str = ""
    cached: bool = False  # the destination existed already: nothing was requested
    length_verified: bool | None = None  # False: a close-delimited answer, complete or cut, cannot be told


def fetch_many(items: list[tuple], dest_root: str | Path, concurrency: int = 8, retries: int = 3,
               backoff_s: float = 0.2, timeout_s: float = 10, progress: bool = True) -> list[FetchResult]:
    """Download (relative path, url[, size]) items under dest_root, `concurrency` at a time. A
    destination that exists is complete (download() renames a finished .part into place
    atomically): it is not requested again and its result has ``cached=True``; a leftover
    ``.part`` is resumed. ``length_verified`` says whether a declared length or ``size`` matched."""
    from tqdm import tqdm

    root = Path(dest_root)

    def one(item):
        rel, url = item[0], item[1]
        size = item[2] if len(item) > 2 else None
        note = root / (rel + UNVERIFIED_SUFFIX)
        if (root / rel).is_file():
            return FetchResult(rel, url, True, cached=True, length_verified=not note.exists())
        try:
            rec: dict = {}
            note.unlink(missing_ok=True)
            download(url, root / rel, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s, progress=False,
                     size=size, record=rec)
            if not rec.get("length_verified"):
                note.write_text(url + "\n")  # remembered for the runs that find it in the cache
            return FetchResult(rel, url, True, length_verified=bool(rec.get("length_verified")))
        except DownloadError as e:
            return FetchResult(rel, url, False, getattr(e, "status", None), str(e))

    out = []
    with ThreadPoolExecutor(max_workers=max(1, int(concurrency))) as ex:
        it = ex.map(one, items)
        for r in tqdm(it, total=len(items), desc="images", unit="url", file=sys.stderr,
                      disable=not (progress and sys.stderr.isatty())):
            out.append(r)
    return out
