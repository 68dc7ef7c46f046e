"""A loopback HTTP server: serves a folder on 127.0.0.1 (port 0) with Range support.

Used by the acquire stage to download the DARN twin through the real downloader, and by tests.
Faults make the network's failures reproducible: `faults={"/a.jpg": "drop"}` sends the headers
and half the body, then closes the connection, on every request; "drop_once" only on the first;
"404" answers Not Found although the file exists.

Hostile servers, for the downloader's tests: "redirect_loop" (a 302 to itself), "redirect_file"
(a 302 to file:///etc/hostname), "bad_416" (every Range answered 416 with a wrong size),
"wrong_range" (every Range answered 206 from byte 0), "no_validators" (no ETag/Last-Modified),
"short_length" (a Content-Length 100 bytes short of the body sent, then the connection closed),
"no_length" (no Content-Length: the body ends where the connection closes) and "no_length_cut"
(the same, cut after half the body: a close-delimited answer whose end cannot be told).
Every answer carries an ETag (of the content) and Last-Modified; `If-Range` is honoured (a
validator that does not match gets the whole file with 200). `srv.if_range` records the
If-Range header of every request, `srv.gets` counts the GET requests per URL path (what a resumed
download asked for again), and `delay_s` holds every answer back that long (a slow network, so a
test can kill a download part-way).

The DARN twin names its planted faults in `faults.json` beside `urls.txt`
(`{"<url path>": "drop" | "404"}`); a URL with no file behind it is a 404 anyway.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import threading
import time
from collections import Counter
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "LoopbackServer"

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        srv = self.server
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        with srv.lock:
            srv.requests.append((url_path, self.headers.get("Range")))
            srv.if_range.append(self.headers.get("If-Range"))
            if body:
                srv.gets[url_path] += 1
            fault = srv.faults.get(url_path)
            if fault == "drop_once":
                if url_path in srv.dropped:
                    fault = None
                else:
                    srv.dropped.add(url_path)
        if srv.delay_s:
            time.sleep(srv.delay_s)
        if fault in ("redirect_loop", "redirect_file"):
            self.send_response(302)
            self.send_header("Location", self.path if fault == "redirect_loop" else "file:///etc/hostname")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        rel = url_path.lstrip("/")
        target = (srv.root / rel).resolve()
        if fault == "404" or not rel or srv.root not in target.parents or not target.is_file():
            self.send_error(404, "Not Found")
            return
        data = target.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        modified = email.utils.formatdate(target.stat().st_mtime, usegmt=True)
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range not in (etag, modified):
            rng = None  # the resource changed since the client's part: send all of it
        if rng and fault == "bad_416":
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data) + 7}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if rng and fault == "wrong_range":
            rng = "bytes=0-"
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            try:
                start = int(a) if a else 0
                end = min(int(b), len(data) - 1) if b else len(data) - 1
            except ValueError:
                start, end = 0, len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        chunk = data[start : end + 1]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if fault == "short_length":
            self.send_header("Content-Length", str(max(len(chunk) - 100, 0)))
        elif fault not in ("no_length", "no_length_cut"):
            self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        if fault != "no_validators":
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        if fault in ("drop", "drop_once", "short_length", "no_length", "no_length_cut"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not body:
            return
        if fault in ("drop", "drop_once", "no_length_cut"):
            self.wfile.write(chunk[: len(chunk) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                import socket

                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(chunk)


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    # listen() backlog above socketserver's 5: urllib opens a connection per request, up to
    # acquire.download.concurrency at once (at 64 on 2 cores, 5 and 128 measured the same, within noise)
    request_queue_size = 128

    def __init__(self, root: Path, faults: dict[str, str] | None = None, delay_s: float = 0.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay_s = float(delay_s)
        self.gets: Counter[str] = Counter()  # GET requests per URL path
        self.root = Path(root).resolve()
        self.faults = {("/" + k.lstrip("/")): v for k, v in (faults or {}).items()}
        self.dropped: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        self.if_range: list[str | None] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


@contextlib.contextmanager
def serve(root: str | Path, faults: dict[str, str] | None = None, delay_s: float = 0.0):
    """Serve `root` on 127.0.0.1 in a background thread; yields the server (`.base_url`)."""
    srv = LoopbackServer(Path(root), faults, delay_s)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)
