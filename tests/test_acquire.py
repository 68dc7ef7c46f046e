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
