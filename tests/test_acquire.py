import hashlib
import io
import json
import tarfile
import zipfile

import pytest

from datasets.acquire import acquire
from datasets.archive import extract
from datasets.download import download, fetch_many
from datasets.errors import ChecksumError, DownloadError, UnsafeArchiveError
from datasets.loopback import serve
from tests.fixtures_data import jpeg, write_asen_folder, write_fashionai_zip


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize("bad", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt"])
def test_zip_slip_refused_naming_member(tmp_path, bad):
    _zip(tmp_path / "a.zip", {"ok.txt": b"x", bad: b"pwned"})
    with pytest.raises(UnsafeArchiveError) as e:
        extract(tmp_path / "a.zip", tmp_path / "out", 1000)
    assert bad in str(e.value)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "ok.txt").exists()  # nothing written


def test_tar_link_outside_and_oversize_refused(tmp_path):
    p = tmp_path / "a.tar.gz"
    with tarfile.open(p, "w:gz") as tf:
        ti = tarfile.TarInfo("img/link.jpg")
        ti.type, ti.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tf.addfile(ti)
        big = tarfile.TarInfo("img/big.jpg")
        big.size = 2000
        tf.addfile(big, io.BytesIO(b"\0" * 2000))
    with pytest.raises(UnsafeArchiveError) as e:
        extract(p, tmp_path / "out", 1000)
    assert "img/link.jpg" in str(e.value) and "img/big.jpg" in str(e.value)


def test_safe_tar_and_zip_extract(tmp_path):
    p = tmp_path / "a.tar"
    with tarfile.open(p, "w") as tf:
        data = jpeg(1)
        ti = tarfile.TarInfo("img/a b.jpg")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
        ln = tarfile.TarInfo("img/same.jpg")
        ln.type, ln.linkname = tarfile.SYMTYPE, "a b.jpg"
        tf.addfile(ln)
    written = extract(p, tmp_path / "out", 10**6)
    assert (tmp_path / "out" / "img" / "same.jpg").read_bytes() == jpeg(1)
    assert not (tmp_path / "out" / "img" / "same.jpg").is_symlink() and "img/a b.jpg" in written


def test_interrupted_download_resumes_with_range_and_verifies(tmp_path):
    data = jpeg(7, size=256) * 3
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "big.bin").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    with serve(tmp_path / "srv", {"/big.bin": "drop_once"}) as srv:
        out = download(srv.base_url + "big.bin", tmp_path / "dl" / "big.bin", sha256=sha, retries=2, backoff_s=0.01,
                       progress=False)
        reqs = list(srv.requests)
    assert out.read_bytes() == data and not (tmp_path / "dl" / "big.bin.part").exists()
    assert len(reqs) == 2 and reqs[0][1] is None and reqs[1][1] == f"bytes={len(data) // 2}-"


def test_checksum_mismatch_keeps_nothing(tmp_path):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.bin").write_bytes(b"hello")
    with serve(tmp_path / "srv") as srv:
        with pytest.raises(ChecksumError):
            download(srv.base_url + "f.bin", tmp_path / "f.bin", sha256="0" * 64, progress=False)
        with pytest.raises(DownloadError) as e:
            download(srv.base_url + "nope.bin", tmp_path / "n.bin", retries=3, backoff_s=0.01, progress=False)
        assert e.value.status == 404
        assert len([r for r in srv.requests if r[0] == "/nope.bin"]) == 1  # a 404 is not retried
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_fetch_many_reports_dead_links(tmp_path):
    (tmp_path / "srv" / "pic").mkdir(parents=True)
    for i in range(6):
        (tmp_path / "srv" / "pic" / f"{i}.jpg").write_bytes(jpeg(i))
    (tmp_path / "srv" / "pic" / "5.jpg").unlink()
    with serve(tmp_path / "srv", {"/pic/4.jpg": "drop"}) as srv:
        res = fetch_many([(f"pic/{i}.jpg", f"{srv.base_url}pic/{i}.jpg") for i in range(6)], tmp_path / "out",
                         concurrency=3, retries=1, backoff_s=0.01, progress=False)
    bad = {r.path: r.status for r in res if not r.ok}
    assert bad == {"pic/4.jpg": "dropped", "pic/5.jpg": 404}
    assert (tmp_path / "out" / "pic" / "0.jpg").read_bytes() == jpeg(0)


def test_local_archive_sha_recorded_and_checked(tmp_path, acquire_params):
    write_fashionai_zip(tmp_path / "fashionAI_attributes_train1.zip")
    cfg = {"source": "local", "path": str(tmp_path / "fashionAI_attributes_train1.zip"), "sha256": None}
    rep = acquire("fashionai", cfg, acquire_params, tmp_path / "raw", tmp_path / "acquire.json")
    digest = hashlib.sha256((tmp_path / "fashionAI_attributes_train1.zip").read_bytes()).hexdigest()
    assert rep["inputs"][0]["sha256"] == digest
    assert rep["inputs"][0]["members"] == 11  # 10 images and label.csv
    written = json.loads((tmp_path / "acquire.json").read_text())
    assert written["images_obtained"] == 10 and written["files"] == 11
    assert written["images_requested"] is None and written["missing"] == []  # an archive asks for no image by name
    assert (tmp_path / "raw" / "fashionAI_attributes_train1" / "Annotations" / "label.csv").is_file()
    with pytest.raises(ChecksumError):
        acquire("fashionai", dict(cfg, sha256="f" * 64), acquire_params, tmp_path / "raw2")


def test_asen_source_with_local_images(tmp_path, acquire_params):
    paths = write_asen_folder(tmp_path / "asen", with_images=True)
    (tmp_path / "asen" / paths[3]).unlink()
    cfg = {"source": "asen", "path": str(tmp_path / "asen"), "images": str(tmp_path / "asen")}
    rep = acquire("darn", cfg, acquire_params, tmp_path / "raw")
    assert rep["missing"] == [paths[3]] and rep["images_obtained"] == len(paths) - 1
    assert rep["images_requested"] == len(paths)
    missing = json.loads((tmp_path / "raw" / "acquire_missing.json").read_text())
    assert missing == {paths[3]: {"status": None, "error": "not in the images folder"}}
    assert (tmp_path / "raw" / "meta.json").is_file()


def test_darn_url_source_with_loopback(tmp_path, acquire_params):
    paths = write_asen_folder(tmp_path / "asen", with_images=True, urls=True)
    (tmp_path / "asen" / paths[0]).unlink()
    acq = dict(acquire_params, download=dict(acquire_params["download"], retries=1, backoff_s=0.01))
    with serve(tmp_path / "asen") as srv:
        cfg = {"source": "url", "path": str(tmp_path / "asen"), "base_url": srv.base_url}
        rep = acquire("darn", cfg, acq, tmp_path / "raw")
    assert rep["dead_links"]["by_status"] == {"404": 1} and rep["missing"] == [paths[0]]
    assert rep["urls"] == rep["images_requested"] == len(paths) and rep["images_obtained"] == len(paths) - 1
    assert (tmp_path / "raw" / paths[1]).read_bytes() == (tmp_path / "asen" / paths[1]).read_bytes()
    missing = json.loads((tmp_path / "raw" / "acquire_missing.json").read_text())
    assert missing[paths[0]]["status"] == 404


def test_acquire_counts_what_arrived_without_parsing_the_annotations(tmp_path, acquire_params):
    """The annotation tables are the parse stage's: acquire gets the bytes of a release whose
    label.csv no parser would accept, counts them, and leaves the error to parse."""
    from datasets.errors import FormatError
    from datasets.parse import parse_raw

    top = "fashionAI_attributes_train1"
    images = {f"{top}/Images/skirt_length_labels/{i}.jpg": jpeg(i) for i in range(3)}
    _zip(tmp_path / f"{top}.zip", {**images, f"{top}/Annotations/label.csv": b"\x00 not a label table \xff\n"})
    cfg = {"source": "local", "path": str(tmp_path / f"{top}.zip"), "sha256": None}
    rep = acquire("fashionai", cfg, acquire_params, tmp_path / "raw", tmp_path / "acquire.json")
    assert rep["images_obtained"] == 3 and rep["files"] == 4 and rep["inputs"][0]["members"] == 4
    assert rep["missing"] == [] and json.loads((tmp_path / "raw" / "acquire_missing.json").read_text()) == {}
    with pytest.raises(FormatError):
        parse_raw("fashionai", tmp_path / "raw")


def test_fetch_many_skips_complete_files_and_resumes_a_leftover_part(tmp_path):
    """A destination that exists is complete (only the atomic rename of a finished .part makes one):
    it is not requested again; a .part that an earlier call left is resumed with a Range request."""
    (tmp_path / "srv" / "pic").mkdir(parents=True)
    data = {i: jpeg(i, size=128) for i in range(4)}
    for i, d in data.items():
        (tmp_path / "srv" / "pic" / f"{i}.jpg").write_bytes(d)
    out = tmp_path / "out"
    (out / "pic").mkdir(parents=True)
    (out / "pic" / "0.jpg").write_bytes(b"already here")  # existence means complete: not re-read, not refetched
    with serve(tmp_path / "srv", {"/pic/2.jpg": "drop_once"}) as srv:
        items = [(f"pic/{i}.jpg", f"{srv.base_url}pic/{i}.jpg") for i in range(4)]
        first = {r.path: (r.ok, r.cached) for r in fetch_many(items, out, retries=0, backoff_s=0.01, progress=False)}
        assert first == {"pic/0.jpg": (True, True), "pic/1.jpg": (True, False), "pic/2.jpg": (False, False),
                         "pic/3.jpg": (True, False)}
        assert srv.gets["/pic/0.jpg"] == 0 and (out / "pic" / "2.jpg.part").is_file()
        half = (out / "pic" / "2.jpg.part").stat().st_size
        second = {r.path: (r.ok, r.cached) for r in fetch_many(items, out, retries=0, backoff_s=0.01, progress=False)}
        assert second == {"pic/0.jpg": (True, True), "pic/1.jpg": (True, True), "pic/2.jpg": (True, False),
                          "pic/3.jpg": (True, True)}
        assert dict(srv.gets) == {"/pic/1.jpg": 1, "/pic/2.jpg": 2, "/pic/3.jpg": 1}
        assert [r for p, r in srv.requests if p == "/pic/2.jpg"] == [None, f"bytes={half}-"]
    assert (out / "pic" / "0.jpg").read_bytes() == b"already here"
    assert (out / "pic" / "2.jpg").read_bytes() == data[2] and not (out / "pic" / "2.jpg.part").exists()


def _darn_twin(folder, n=60, **defects):
    import copy

    from benchmark.params import load_params
    from datasets.twins.build import build

    tp = copy.deepcopy(load_params()["twins"])
    tp["darn"]["images"] = n
    tp["defects"].update(defects)
    build("darn", tp, folder, progress=False)
    return folder


def test_darn_twin_second_acquire_takes_every_image_from_the_download_cache(tmp_path, acquire_params):
    twin = _darn_twin(tmp_path / "twin", darn_404=2, darn_drop=1)
    acq = dict(acquire_params, download=dict(acquire_params["download"], retries=1, backoff_s=0.01))
    cfg = {"source": "twin", "path": str(twin), "sha256": None}
    first = acquire("darn", cfg, acq, tmp_path / "raw", tmp_path / "acquire.json")
    raw1 = {p.relative_to(tmp_path / "raw"): p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()}
    second = acquire("darn", cfg, acq, tmp_path / "raw", tmp_path / "acquire.json")
    n = first["urls"]
    assert first["download"] == {"urls": n, "fetched": n - 3, "from_cache": 0, "dead": 3, "length_unverified": 0}
    assert second["download"] == {"urls": n, "fetched": 0, "from_cache": n - 3, "dead": 3, "length_unverified": 0}  # dead ones tried again
    assert {p.relative_to(tmp_path / "raw"): p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()} == raw1
    timing = json.loads((tmp_path / "acquire_timing.json").read_text())  # the run-dependent part, untracked
    assert timing["from_cache"] == n - 3 and timing["seconds"] > 0 and timing["urls_per_s"] > 0
    assert "seconds" not in json.dumps(json.loads((tmp_path / "acquire.json").read_text()))
    (scope,) = (tmp_path / "download_cache").iterdir()
    img = next(p for p in (tmp_path / "raw" / "pic").rglob("*.jpg"))
    assert (scope / img.relative_to(tmp_path / "raw")).read_bytes() == img.read_bytes()
    # a regenerated twin (other params) is another list: a new cache folder, the old one removed
    import shutil

    shutil.rmtree(twin)
    _darn_twin(twin, n=40, darn_404=2, darn_drop=1)
    third = acquire("darn", cfg, acq, tmp_path / "raw", tmp_path / "acquire.json")
    assert third["download"]["from_cache"] == 0 and [p.name for p in (tmp_path / "download_cache").iterdir()] != [scope.name]
    assert len(list((tmp_path / "download_cache").iterdir())) == 1


_ACQUIRE_IN_A_PROCESS = """
import json, sys
from datasets.acquire import acquire
a = json.loads(sys.argv[1])
acquire("darn", a["cfg"], a["acq"], a["raw"], a["report"], a["cache"])
"""


def test_killed_darn_download_resumes_without_refetching_what_it_had(tmp_path, acquire_params):
    """acquire in a subprocess, SIGKILLed once the download cache holds some images; the rerun asks
    the server (a real loopback HTTP server, counting GETs per path) for none of the files complete in
    the cache, and its raw/ equals that of an uninterrupted run, file for file and byte for byte."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from datasets.acquire import _twin_faults
    from datasets.parsers.darn import parse_urls

    twin = _darn_twin(tmp_path / "twin", n=80, darn_404=4, darn_drop=2)
    faults = _twin_faults(twin, parse_urls(twin / "urls.txt"))
    acq = dict(acquire_params, download=dict(acquire_params["download"], retries=1, backoff_s=0.01, concurrency=2))
    root = Path(__file__).resolve().parents[1]
    with serve(twin, faults, delay_s=0.03) as srv:  # slow enough that the kill lands part-way
        cfg = {"source": "url", "path": str(twin), "base_url": srv.base_url}

        def args(run):
            return json.dumps({"cfg": cfg, "acq": acq, "raw": str(tmp_path / run / "raw"),
                               "report": str(tmp_path / run / "acquire.json"), "cache": str(tmp_path / run / "cache")})

        def complete(cache):
            return {str(p.relative_to(cache)) for p in cache.rglob("*.jpg")} if cache.is_dir() else set()

        proc = subprocess.Popen([sys.executable, "-c", _ACQUIRE_IN_A_PROCESS, args("k")], cwd=root,
                                env=dict(os.environ, PYTHONPATH=str(root)))
        cache_k = tmp_path / "k" / "cache"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            scopes = list(cache_k.iterdir()) if cache_k.is_dir() else []
            if scopes and len(complete(scopes[0])) >= 15:
                break
            time.sleep(0.01)
        proc.kill()
        assert proc.wait() != 0, "the download finished before it was killed"
        (scope,) = cache_k.iterdir()
        had = complete(scope)
        srv.gets.clear()
        rep = acquire("darn", cfg, acq, tmp_path / "k" / "raw", tmp_path / "k" / "acquire.json", cache_k)
        assert 15 <= len(had) < rep["urls"] - 6
        assert {p: srv.gets["/" + p] for p in had if srv.gets["/" + p]} == {}  # nothing complete asked for again
        assert rep["download"]["from_cache"] == len(had) and rep["download"]["fetched"] == rep["urls"] - 6 - len(had)
        assert all(srv.gets["/" + p] >= 1 for p in complete(scope) - had)  # the rest was fetched
        acquire("darn", cfg, acq, tmp_path / "ref" / "raw", tmp_path / "ref" / "acquire.json", tmp_path / "ref" / "cache")

    def files(raw):
        return {str(p.relative_to(raw)): p.read_bytes() for p in raw.rglob("*") if p.is_file()}

    resumed, ref = files(tmp_path / "k" / "raw"), files(tmp_path / "ref" / "raw")
    assert sorted(resumed) == sorted(ref) and resumed == ref
    assert json.loads(ref["acquire_missing.json"]) and not any(p.endswith(".part") for p in ref)
