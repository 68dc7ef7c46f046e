"""Hostile input: a corpus of bad inputs (generated here, tiny) against `fashionbench check`, the
parsers, acquisition, the downloader (a loopback server on 127.0.0.1) and the trainer's
checkpoints. Each case asserts its outcome: a clear error naming the user's file (exit 1 or 2, no
traceback), quarantined and counted, or handled. Nothing outside the suite's own folders is
written, truncated or deleted; no pickle beyond tensors and plain types is run; nothing hangs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from benchmark.cli import main as cli
from datasets.acquire import acquire
from datasets.archive import extract
from datasets.download import download
from datasets.errors import DatasetError, DownloadError, FormatError, UnsafeArchiveError
from datasets.loopback import serve
from datasets.parsers import asen, darn, deepfashion, fashionai, safe_relpath
from datasets.validate import check_image
from tests.fixtures_data import jpeg, write_asen_folder, write_deepfashion, write_fashionai_zip

ROOT = Path(__file__).resolve().parents[1]
TOP = "fashionAI_attributes_train1"


# ----------------------------------------------------------------------------------------- helpers


def _tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """sha256 and link count of every file under root (what the user owns)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_nlink)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _check(capsys, *args) -> tuple[int, str, str]:
    rc = cli(["check", *map(str, args)])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap.out, cap.err


def _acq(acq: dict) -> dict:
    """params' acquire section (the ``acquire_params`` fixture) with quick download retries."""
    return dict(acq, download=dict(acq["download"], retries=1, backoff_s=0.01, timeout_s=5))


def _label_csv_rows(n: int = 4, prefix: str = "Images/skirt_length_labels") -> list[str]:
    return [f"{prefix}/img {i:03d}.jpg,skirt_length_labels,{''.join('y' if c == i % 6 else 'n' for c in range(6))}"
            for i in range(n)]


def _big_header_jpeg(w: int, h: int) -> bytes:
    """A tiny real JPEG whose SOF header claims w x h pixels."""
    data = bytearray(jpeg(1, size=8))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 7] = h.to_bytes(2, "big")
    data[i + 7 : i + 9] = w.to_bytes(2, "big")
    return bytes(data)


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def _run_check_subprocess(*args, timeout=120) -> subprocess.CompletedProcess:
    """`fashionbench check` in a child process with a timeout (for inputs that used to hang)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "benchmark.cli", "check", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------- 1. never touch the user's files (high)


def _download_with_extracted_copy(tmp_path, tail: str) -> Path:
    """A user's folder: the FashionAI zip beside its extracted copy, whose label.csv the user edited."""
    user = tmp_path / "download"
    write_fashionai_zip(user / f"{TOP}.zip")
    with zipfile.ZipFile(user / f"{TOP}.zip") as zf:
        zf.extractall(user)
    (user / TOP / "Annotations" / "label.csv").write_text("\n".join(_label_csv_rows(3)) + "\n" + tail)
    return user


@pytest.mark.parametrize("zip_state", ["intact", "damaged"])
def test_check_folder_with_zip_beside_extracted_copy_leaves_user_files_alone(tmp_path, capsys, zip_state):
    """The FashionAI zip beside its extracted copy whose label.csv the user edited: the check used
    to hard-link both into its work folder and extract through the links (label.csv reverted; a
    damaged zip truncated to 0 bytes)."""
    user = _download_with_extracted_copy(tmp_path, "# edited by the user\n")
    if zip_state == "damaged":
        data = (user / f"{TOP}.zip").read_bytes()
        (user / f"{TOP}.zip").write_bytes(data[: len(data) // 3])
    before = _tree_digest(user)
    rc, out, err = _check(capsys, "fashionai", user)
    assert _tree_digest(user) == before  # same bytes, and no new hard links to the user's files
    assert all(n == 1 for _, n in before.values())
    if zip_state == "intact":  # the zip's label.csv and the user's edited copy differ: refused, naming both
        assert rc == 1 and str(user / TOP / "Annotations" / "label.csv") in err and f"{TOP}.zip!/" in err
    else:
        assert rc == 1 and f"{TOP}.zip" in err and "zip" in err


def test_acquire_local_folder_copies_never_links(tmp_path, acquire_params):
    user = _download_with_extracted_copy(tmp_path, "")
    with zipfile.ZipFile(user / f"{TOP}.zip") as zf:  # the copy as extracted (an edited one is refused)
        (user / TOP / "Annotations" / "label.csv").write_bytes(zf.read(f"{TOP}/Annotations/label.csv"))
    before = _tree_digest(user)
    acquire("fashionai", {"source": "local", "path": str(user)}, _acq(acquire_params), tmp_path / "raw")
    assert _tree_digest(user) == before
    raw_files = [p for p in (tmp_path / "raw").rglob("*") if p.is_file()]
    assert raw_files and all(p.stat().st_nlink == 1 for p in raw_files)


@pytest.mark.parametrize("line", [
    "\\{victim}",                       # backslashes: the check ran before '\' became '/'
    "{victim_win}",                     # same, spelled with backslashes throughout
    "pic\\..\\..\\..\\victim.jpg",     # '..' behind backslashes
    "C:\\victim.jpg",                   # a drive letter
    "/{victim}",
    "pic/../../victim.jpg",
])
def test_asen_path_outside_release_is_an_error_and_deletes_nothing(tmp_path, acquire_params, line):
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"the user's photo")
    src = tmp_path / "asen"
    write_asen_folder(src, with_images=True)
    v = str(victim).lstrip("/")
    bad = line.format(victim=v, victim_win="\\" + v.replace("/", "\\"))
    lines = (src / "filenames_train.txt").read_text().splitlines()
    lines[2] = bad
    (src / "filenames_train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError) as e:
        acquire("darn", {"source": "asen", "path": str(src), "images": str(src)}, _acq(acquire_params), tmp_path / "raw")
    assert "filenames_train.txt:3" in str(e.value) and "inside the release folder" in str(e.value)
    assert victim.read_bytes() == b"the user's photo"


@pytest.mark.parametrize("name,norm", [
    ("a/b.jpg", "a/b.jpg"), ("a\\b.jpg", "a/b.jpg"), ("./a//b.jpg", "a/b.jpg"),
    ("\\tmp\\x.jpg", None), ("/tmp/x.jpg", None), ("..\\x.jpg", None), ("a/../../x.jpg", None),
    ("C:\\x.jpg", None), ("c:x.jpg", None), ("\\\\server\\share\\x.jpg", None), ("a/\x00b.jpg", None), ("", None),
])
def test_paths_are_normalised_before_they_are_confined(name, norm):
    assert safe_relpath(name)[0] == norm


def test_darn_url_list_path_outside_release_is_an_error(tmp_path):
    p = tmp_path / "urls.txt"
    p.write_text("pic/1/a.jpg http://x/a.jpg\n..\\..\\evil.jpg http://x/b.jpg\n")
    with pytest.raises(FormatError) as e:
        darn.parse_urls(p)
    assert "urls.txt:2" in str(e.value)


@pytest.mark.parametrize("row", ["../x.jpg", "Images/../../x.jpg", "\\etc\\x.jpg", "/etc/x.jpg"])
def test_fashionai_row_outside_release_is_quarantined(tmp_path, row):
    p = tmp_path / "label.csv"
    p.write_text("\n".join(_label_csv_rows(4) + [f"{row},skirt_length_labels,ynnnnn"]) + "\n")
    res, _ = fashionai.parse_file(p)
    assert len(res.paths) == 4 and all(".." not in q and not q.startswith("/") for q in res.paths)
    assert [(q.line, q.check) for q in res.quarantine] == [(5, "unsafe_path")]


def test_deepfashion_row_outside_release_is_quarantined(tmp_path):
    write_deepfashion(tmp_path / "df", n=6, bad_line=False, bom_crlf=False)
    f = tmp_path / "df" / "Anno" / "list_attr_img.txt"
    lines = f.read_text().splitlines()
    lines[3] = "../outside.jpg" + lines[3][lines[3].index(".jpg") + 4:]
    f.write_text("\n".join(lines) + "\n")
    res = deepfashion.parse(tmp_path / "df")
    assert "../outside.jpg" not in res.paths and len(res.paths) == 5
    assert [(q.line, q.check) for q in res.quarantine if q.check == "unsafe_path"] == [(4, "unsafe_path")]


# ----------------------------------------------------------------------- 2. checkpoints (high)


def _train_helpers():
    """The shared tiny models and data (tests/tiny_training.py registers the tiny models)."""
    from tests import tiny_training

    return tiny_training


class _Payload:
    """What a crafted checkpoint carries: unpickling it runs code (here: touches a file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _corrupt(path: Path, kind: str, marker: Path) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))
    elif kind == "pickle_payload":
        ck = torch.load(path, weights_only=True)
        ck["payload"] = _Payload(marker)
        torch.save(ck, path)


def test_a_crafted_checkpoint_would_run_code_under_full_pickle(tmp_path):
    """The threat is real: the same file loaded with weights_only=False runs its payload."""
    marker = tmp_path / "ran"
    torch.save({"model": {}, "payload": _Payload(marker)}, tmp_path / "c.pt")
    torch.load(tmp_path / "c.pt", weights_only=False)
    assert marker.exists()


def test_trained_checkpoint_loads_with_weights_only_and_evaluate_refuses_payloads(tiny_workdir):
    from benchmark.train import CheckpointError, load_trained_model, read_checkpoint

    tt = _train_helpers()
    tmp_path = tiny_workdir
    tt.make_params(tmp_path, epochs=1, triplets=16, batch=8)
    from benchmark.train import checkpoint_path, main

    assert main(["fashionai", "tiny_test"]) == 0
    p = checkpoint_path("fashionai", "tiny_test", 0)
    ck = torch.load(p, weights_only=True)  # tensors and plain types only
    assert isinstance(ck["rng"]["numpy"]["keys"], torch.Tensor) and isinstance(ck["rng"]["python"]["state"], list)
    marker = tmp_path / "ran"
    for kind in ("pickle_payload", "truncated", "empty", "garbage"):
        q = tmp_path / f"{kind}.pt"
        q.write_bytes(p.read_bytes())
        _corrupt(q, kind, marker)
        with pytest.raises(CheckpointError) as e:
            load_trained_model(q)
        assert str(q) in str(e.value) and "not a readable checkpoint" in str(e.value)
        with pytest.raises(CheckpointError):
            read_checkpoint(q)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage", "pickle_payload", "no_previous"])
def test_corrupt_latest_checkpoint_resumes_from_previous_bitwise(tiny_workdir, capsys, kind):
    """3 epochs straight vs a run killed in epoch 3 whose latest checkpoint (epoch 2) is then
    corrupted: the resume names the bad file, starts from the previous one (epoch 1) and ends with
    bitwise the weights of the straight run; the payload never runs."""
    from benchmark.train import checkpoint_path, previous_checkpoint_path

    tt = _train_helpers()
    tmp_path = tiny_workdir
    tt.make_params(tmp_path, epochs=3, triplets=32, batch=8)
    assert tt.train_tiny() == 0
    straight = torch.load(checkpoint_path(tt.KEY, "tiny_test", 0), weights_only=True)
    latest = checkpoint_path(tt.KEY, "tiny_test", 0)
    prev = previous_checkpoint_path(latest)
    for p in (latest, prev, Path("models") / tt.KEY / "tiny_test" / "done.json"):
        p.unlink()
    tt.CALLS[0], tt.CRASH_AT[0] = 0, 4 * 2 + 2  # killed in epoch 3: latest = epoch 2, previous = epoch 1
    with pytest.raises(tt.SimulatedKill):
        tt.train_tiny()
    tt.CRASH_AT[0] = None
    assert torch.load(latest, weights_only=True)["epoch"] == 2 and torch.load(prev, weights_only=True)["epoch"] == 1
    marker = tmp_path / "ran"
    if kind == "no_previous":
        prev.unlink()
        _corrupt(latest, "garbage", marker)
    else:
        _corrupt(latest, kind, marker)
    capsys.readouterr()
    assert tt.train_tiny() == 0
    err = capsys.readouterr().err
    assert f"{latest}: not a readable checkpoint" in err and "Traceback" not in err
    if kind != "no_previous":
        assert "resuming from the previous checkpoint" in err and "after epoch 1/3" in err
    resumed = torch.load(latest, weights_only=True)
    assert resumed["complete"] and resumed["epoch"] == 3
    assert torch.load(prev, weights_only=True)["epoch"] == 2  # the corrupt file never became "previous"
    assert straight["model"].keys() == resumed["model"].keys()
    assert all(torch.equal(straight["model"][k], resumed["model"][k]) for k in straight["model"])
    assert not marker.exists()


def test_rng_state_round_trips_through_weights_only(tmp_path):
    import random

    from benchmark.train import _rng_state, _set_rng_state

    np.random.seed(3)
    random.seed(4)
    torch.manual_seed(5)
    np.random.normal()  # a cached gaussian in numpy's state
    torch.save(_rng_state(), tmp_path / "rng.pt")
    want = (np.random.random(4).tolist(), random.random(), torch.rand(3).tolist(), np.random.normal())
    _set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (np.random.random(4).tolist(), random.random(), torch.rand(3).tolist(), np.random.normal()) == want


# -------------------------------------------------------------------------- 3. archives (medium)


def _bomb_zip(path: Path, member: str, nbytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(member, "w", force_zip64=True) as f:
            chunk = b"\x00" * (1 << 20)
            for _ in range(nbytes >> 20):
                f.write(chunk)


def test_zip_bomb_refused_by_ratio_before_writing(tmp_path):
    _bomb_zip(tmp_path / "bomb.zip", "Img/zeros.bin", 24 << 20)
    assert (tmp_path / "bomb.zip").stat().st_size < 100_000
    with pytest.raises(UnsafeArchiveError) as e:
        extract(tmp_path / "bomb.zip", tmp_path / "out", 1 << 40, 1 << 40, 200)
    assert "zeros.bin" in str(e.value) and "max_compression_ratio" in str(e.value)
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_check_refuses_a_zip_bomb(tmp_path, capsys):
    """`check` used to pass a 1 TiB cap: a 2 MB zip wrote 1 GB."""
    _bomb_zip(tmp_path / f"{TOP}.zip", f"{TOP}/Images/skirt_length_labels/zeros.jpg", 24 << 20)
    rc, _, err = _check(capsys, "fashionai", tmp_path / f"{TOP}.zip")
    assert rc == 1 and "max_compression_ratio" in err and f"{TOP}.zip" in err


def test_total_size_cap_of_an_archive(tmp_path, acquire_params):
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:  # stored, ratio 1: only the total cap can stop it
        for i in range(4):
            zf.writestr(f"m{i}.bin", rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    with pytest.raises(UnsafeArchiveError) as e:
        extract(tmp_path / "a.zip", tmp_path / "out", 1 << 30, 1_000_000, 200)
    assert "max_total_bytes" in str(e.value)
    acq = dict(_acq(acquire_params), max_total_bytes=1_000_000)
    with pytest.raises(UnsafeArchiveError):
        acquire("fashionai", {"source": "local", "path": str(tmp_path / "a.zip")}, acq, tmp_path / "raw")


def test_tar_gz_bomb_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 24 << 20
        tf.addfile(info, io.BytesIO(b"\x00" * info.size))
    (tmp_path / "b.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError) as e:
        extract(tmp_path / "b.tar.gz", tmp_path / "out", 1 << 40, 1 << 40, 200)
    assert "max_compression_ratio" in str(e.value)


def test_damaged_deflate_data_is_a_format_error(tmp_path):
    p = tmp_path / "d.zip"
    text = "".join(f"line {i} of some annotation text {i * 7919 % 1000}\n" for i in range(3000)).encode()
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Annotations/label.csv", text)
    data = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as zf:
        info = zf.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for k in range(start + 40, start + 400):
        data[k] ^= 0x5A
    p.write_bytes(bytes(data))
    with pytest.raises(FormatError) as e:
        extract(p, tmp_path / "out", 1 << 30)
    assert str(p) in str(e.value) and "intact zip" in str(e.value)


def test_truncated_zip_is_reported_as_a_damaged_archive(tmp_path, capsys):
    write_fashionai_zip(tmp_path / f"{TOP}.zip")
    data = (tmp_path / f"{TOP}.zip").read_bytes()
    (tmp_path / f"{TOP}.zip").write_bytes(data[: len(data) // 2])
    rc, _, err = _check(capsys, "fashionai", tmp_path / f"{TOP}.zip")
    assert rc == 1 and "zip" in err and "UTF-8" not in err and "is not fashionai" not in err


def test_unreadable_archive_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import builtins

    import datasets.archive as archive

    write_fashionai_zip(tmp_path / f"{TOP}.zip")
    target = str(tmp_path / f"{TOP}.zip")
    real_open = builtins.open

    def deny(path, *a, **k):
        if str(path) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_open(path, *a, **k)

    monkeypatch.setattr(archive, "open", deny, raising=False)  # the tests run as root: simulate chmod 000
    rc, _, err = _check(capsys, "fashionai", target)
    assert rc == 1 and "Permission denied" in err and target in err


# ---------------------------------------------------------------------------- 4. images (medium)


@pytest.mark.parametrize("side", [20000, 60000])
def test_pixel_cap_from_the_header_before_decoding(tmp_path, side):
    from datasets.parsers import image_stats

    p = tmp_path / "big.jpg"
    p.write_bytes(_big_header_jpeg(side, side))
    assert p.stat().st_size < 1000
    check, reason, _, sha, _ = check_image(p, 32, 40_000_000)
    assert check == "too_many_pixels" and f"{side}x{side}" in reason and sha is not None
    w, h, b, _ = image_stats(p, 40_000_000)
    assert (w, h, b) == (None, None, p.stat().st_size)


def test_check_quarantines_and_counts_a_huge_header_image(tmp_path, capsys):
    rows = _label_csv_rows(8)
    with zipfile.ZipFile(tmp_path / f"{TOP}.zip", "w") as zf:
        zf.writestr(f"{TOP}/Annotations/label.csv", "\n".join(rows) + "\n")
        for i in range(8):
            data = _big_header_jpeg(20000, 20000) if i == 5 else jpeg(200 + i)
            zf.writestr(f"{TOP}/Images/skirt_length_labels/img {i:03d}.jpg", data)
    (tmp_path / "p.yaml").write_text("validate:\n  max_bad_fraction: 0.5\n")
    rc, out, _ = _check(capsys, "fashionai", tmp_path / f"{TOP}.zip", "--params", tmp_path / "p.yaml",
                        "--json", tmp_path / "r.json")
    assert rc == 0 and "too_many_pixels 1" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["quarantined"] == {"too_many_pixels": 1} and rep["tables"]["images"]["quarantined"] == 1


def test_jpeg_with_cut_scan_but_end_marker_is_truncated(tmp_path):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((96, 128, 3)) * 255).astype(np.uint8), (7, 7), 3)
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    (tmp_path / "ok.jpg").write_bytes(data)
    (tmp_path / "cut.jpg").write_bytes(data[: int(len(data) * 0.6)] + b"\xff\xd9")
    assert check_image(tmp_path / "ok.jpg", 32)[0] is None
    check, reason, _, _, _ = check_image(tmp_path / "cut.jpg", 32)
    assert check == "truncated_jpeg" and "cut short" in reason


def test_fifo_image_does_not_hang(tmp_path):
    _fifo(tmp_path / "x.jpg")
    check, reason, _, _, _ = check_image(tmp_path / "x.jpg", 32)
    assert check == "missing_file" and "FIFO" in reason


# ----------------------------------------------------------------------- 5. annotations (medium)


@pytest.mark.parametrize("which", ["list_attr_img.txt", "list_attr_cloth.txt", "list_eval_partition.txt"])
def test_deepfashion_file_cut_short_is_an_error(tmp_path, capsys, which):
    """Count lines were read and thrown away: files cut to 60 of 200 rows passed with exit 0."""
    write_deepfashion(tmp_path / "df", n=12, bad_line=False, bom_crlf=False)
    f = next((tmp_path / "df").rglob(which))
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:-3]) + "\n")
    with pytest.raises(FormatError) as e:
        deepfashion.parse(tmp_path / "df")
    assert f"{which}:1" in str(e.value) and "count line" in str(e.value)
    rc, _, err = _check(capsys, "deepfashion", tmp_path / "df", "--labels-only")
    assert rc == 1 and which in err and "damaged" in err and "is not deepfashion" not in err


def test_superscript_count_line_is_an_error(tmp_path):
    write_deepfashion(tmp_path / "df", n=6, bad_line=False, bom_crlf=False)
    f = tmp_path / "df" / "Anno" / "list_attr_cloth.txt"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(["²"] + lines[1:]) + "\n")
    with pytest.raises(FormatError) as e:
        deepfashion.parse(tmp_path / "df")
    assert "list_attr_cloth.txt:1" in str(e.value)


@pytest.mark.parametrize("content", ["", "\n\n", "   \n\t\n"])
def test_empty_label_csv_is_an_error(tmp_path, capsys, content):
    p = tmp_path / "label.csv"
    p.write_text(content)
    with pytest.raises(FormatError):
        fashionai.parse_file(p)
    rc, _, err = _check(capsys, "fashionai", p, "--labels-only")
    assert rc == 1 and "label.csv" in err and "usable" not in err


def test_empty_asen_split_files_are_an_error(tmp_path, capsys):
    d = tmp_path / "asen"
    write_asen_folder(d, with_images=False)
    for p in d.glob("*.txt"):
        p.write_text("")
    with pytest.raises(FormatError):
        asen.parse(d, "darn")
    rc, _, err = _check(capsys, "darn", d, "--labels-only")
    assert rc == 1 and "filenames_" in err


def test_partition_listing_an_image_twice_is_quarantined(tmp_path):
    write_deepfashion(tmp_path / "df", n=6, bad_line=False, bom_crlf=False)
    f = tmp_path / "df" / "Eval" / "list_eval_partition.txt"
    lines = f.read_text().splitlines()
    first = lines[2].rsplit(None, 1)[0]
    lines[-1] = f"{first}  test"  # image 0 again (and image 5 no longer listed)
    f.write_text("\n".join(lines) + "\n")
    res = deepfashion.parse(tmp_path / "df")
    assert res.partition[0] == "train"  # the first line is kept
    assert [(q.line, q.check) for q in res.quarantine] == [(len(lines), "partition_conflict")]


def test_names_keep_their_own_whitespace(tmp_path):
    """Names were re-joined with single spaces: a no-break space became a plain one."""
    write_deepfashion(tmp_path / "df", n=4, bad_line=False, bom_crlf=False)
    f = tmp_path / "df" / "Anno" / "list_attr_img.txt"
    lines = f.read_text().splitlines()
    odd = "img/Floral\u00a0Print  Dress/img_00000001.jpg"
    lines[3] = odd + lines[3][lines[3].index(".jpg") + 4:]
    f.write_text("\n".join(lines) + "\n")
    p = tmp_path / "df" / "Eval" / "list_eval_partition.txt"
    plines = p.read_text().splitlines()
    plines[3] = f"{odd}  train"
    p.write_text("\n".join(plines) + "\n")
    res = deepfashion.parse(tmp_path / "df")
    assert odd in res.paths and res.quarantine == [] and res.partition[res.paths.index(odd)] == "train"


def test_asen_index_listed_twice_in_a_split_is_counted(tmp_path):
    d = tmp_path / "asen"
    write_asen_folder(d, with_images=False)
    lines = (d / "filenames_valid.txt").read_text().splitlines()
    lines[4] = lines[1]
    (d / "filenames_valid.txt").write_text("\n".join(lines) + "\n")
    res = asen.parse(d, "darn")
    assert [(q.file, q.line, q.check) for q in res.quarantine] == [("filenames_valid.txt", 5, "duplicate_index")]


def test_asen_query_listed_twice_is_quarantined(tmp_path):
    d = tmp_path / "asen"
    write_asen_folder(d, with_images=False)
    q = d / "query_valid.txt"
    q.write_text(q.read_text() + q.read_text().splitlines()[0] + "\n")
    n = len(q.read_text().splitlines())
    res = asen.parse(d, "darn")
    assert [(q_.file, q_.line, q_.check) for q_ in res.quarantine] == [("query_valid.txt", n, "duplicate_line")]
    assert sum(1 for r in res.roles if r[2] == "query") == n - 1


def test_fifo_label_csv_does_not_hang_check(tmp_path):
    d = tmp_path / "fa"
    _fifo(d / "Annotations" / "label.csv")
    r = _run_check_subprocess("fashionai", d, "--labels-only", timeout=120)
    assert r.returncode in (1, 2) and "label.csv" in r.stderr and "Traceback" not in r.stderr
    r = _run_check_subprocess("fashionai", d / "Annotations" / "label.csv", "--labels-only", timeout=120)
    assert r.returncode in (1, 2) and "label.csv" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------ 6. the check's CLI (low)


def test_json_pointing_at_a_folder(tmp_path, capsys):
    p = tmp_path / "label.csv"
    p.write_text("\n".join(_label_csv_rows(4)) + "\n")
    rc, _, err = _check(capsys, "fashionai", p, "--labels-only", "--json", tmp_path)
    assert rc == 2 and "--json" in err and str(tmp_path) in err


@pytest.mark.parametrize("yaml_text,needle", [
    ("validate: [unclosed\n", "not a YAML params file"),
    ("validate:\n  max_bad_fraction: lots\n", "max_bad_fraction must be a number"),
    ("- just\n- a list\n", "expected a mapping"),
    ("validate:\n  max_pixels: many\n", "max_pixels must be a number"),
])
def test_bad_params_file(tmp_path, capsys, yaml_text, needle):
    p = tmp_path / "label.csv"
    p.write_text("\n".join(_label_csv_rows(4)) + "\n")
    (tmp_path / "p.yaml").write_text(yaml_text)
    rc, _, err = _check(capsys, "fashionai", p, "--labels-only", "--params", tmp_path / "p.yaml")
    assert rc == 2 and needle in err and "p.yaml" in err


def test_errors_name_the_users_path_not_the_temporary_copy(tmp_path, capsys):
    user = tmp_path / "download"
    rows = "\n".join(_label_csv_rows(4)).encode() + b"\n\xff\xfe not utf-8\n"
    user.mkdir()
    with zipfile.ZipFile(user / f"{TOP}.zip", "w") as zf:
        zf.writestr(f"{TOP}/Annotations/label.csv", rows)
    for src in (user, user / f"{TOP}.zip"):
        rc, _, err = _check(capsys, "fashionai", src)
        assert rc == 1 and "fashionbench-check-" not in err and str(src) in err and "label.csv:5" in err


def test_broken_copy_of_the_right_dataset_exits_1_not_2(tmp_path, capsys):
    write_deepfashion(tmp_path / "df", n=12, bad_line=False, bom_crlf=False)
    f = tmp_path / "df" / "Anno" / "list_attr_img.txt"
    f.write_bytes(f.read_bytes()[:-200])  # cut mid-line
    rc, _, err = _check(capsys, "deepfashion", tmp_path / "df", "--labels-only")
    assert rc == 1 and "is not deepfashion" not in err and "list_attr_img.txt" in err
    # garbage is still "not that dataset at all"
    g = tmp_path / "label.csv"
    g.write_text("this is,not,fashionai at all\nnor,is,this\n")
    assert _check(capsys, "fashionai", g, "--labels-only")[0] == 2


def test_killed_checks_temporary_folder_is_removed_by_the_next(tmp_path, capsys, monkeypatch):
    base = tmp_path / "tmproot"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    from datasets.check import OWNER_FILE, make_tmp

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = make_tmp(base, pid=dead.pid)
    (stale / "x").mkdir()
    alive = make_tmp(base, pid=os.getppid())  # a check still running: left alone
    other = make_tmp(base, pid=dead.pid)  # made on another machine sharing this /tmp: left alone
    note = json.loads((other / OWNER_FILE).read_text())
    (other / OWNER_FILE).write_text(json.dumps(dict(note, host=note["host"] + "-elsewhere")))
    foreign = base / "fashionbench-check-123-zz"  # no owner note: not ours to judge
    foreign.mkdir()
    p = tmp_path / "label.csv"
    p.write_text("\n".join(_label_csv_rows(4)) + "\n")
    rc, _, _ = _check(capsys, "fashionai", p, "--labels-only")
    assert rc == 0
    assert not stale.exists() and alive.exists() and other.exists() and foreign.exists()
    assert sorted(q.name for q in base.iterdir()) == sorted([alive.name, other.name, foreign.name])  # its own is gone too


def test_sigterm_removes_the_temporary_folder(tmp_path):
    base = tmp_path / "tmproot"
    base.mkdir()
    script = tmp_path / "slow_check.py"
    script.write_text(
        "import sys, time\n"
        "import datasets.check as c\n"
        "def slow(*a, **k):\n"
        "    print('loading', flush=True); time.sleep(60)\n"
        "c.load = slow\n"
        "from benchmark.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(base))
    proc = subprocess.Popen([sys.executable, str(script), "check", "fashionai", str(script), "--labels-only"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "loading"
        assert any(base.glob("fashionbench-check-*"))
        proc.terminate()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0 and not any(base.glob("fashionbench-check-*"))


# ----------------------------------------------------------------- 7. the downloader (loopback)


def _served(tmp_path, data: bytes) -> Path:
    (tmp_path / "srv").mkdir(exist_ok=True)
    (tmp_path / "srv" / "f.bin").write_bytes(data)
    return tmp_path / "srv"


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def _part(dest: Path, body: bytes, meta: dict | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.with_name(dest.name + ".part").write_bytes(body)
    if meta is not None:
        dest.with_name(dest.name + ".part.json").write_text(json.dumps(meta))


DATA = jpeg(7, size=256) * 3


def test_stale_part_without_validator_is_not_spliced(tmp_path):
    srv_root = _served(tmp_path, DATA)
    dest = tmp_path / "dl" / "f.bin"
    _part(dest, b"X" * 1000, None)  # left by an old run, or another tool
    with serve(srv_root) as srv:
        download(srv.base_url + "f.bin", dest, retries=0, progress=False)
        assert srv.requests[0][1] is None  # no Range for a part nobody can vouch for
    assert dest.read_bytes() == DATA


def test_changed_resource_under_if_range_is_fetched_whole(tmp_path):
    srv_root = _served(tmp_path, DATA)
    dest = tmp_path / "dl" / "f.bin"
    old = b"Y" * len(DATA)
    with serve(srv_root) as srv:
        url = srv.base_url + "f.bin"
        _part(dest, old[:500], {"url": url, "etag": _etag(old), "last_modified": None, "total": len(DATA)})
        download(url, dest, retries=0, progress=False)
        assert srv.requests[0][1] == "bytes=500-" and srv.if_range[0] == _etag(old)
    assert dest.read_bytes() == DATA


@pytest.mark.parametrize("fault", ["bad_416", "wrong_range"])
def test_resume_answers_that_do_not_continue_the_part_start_over(tmp_path, fault):
    """Any 416 counted as complete and Content-Range was not checked."""
    srv_root = _served(tmp_path, DATA)
    dest = tmp_path / "dl" / "f.bin"
    with serve(srv_root, {"/f.bin": fault}) as srv:
        url = srv.base_url + "f.bin"
        _part(dest, DATA[:700], {"url": url, "etag": _etag(DATA), "last_modified": None, "total": len(DATA)})
        download(url, dest, retries=2, backoff_s=0.01, progress=False)
        assert srv.requests[0][1] == "bytes=700-" and srv.requests[-1][1] is None
    assert dest.read_bytes() == DATA


def test_resume_after_a_drop_sends_if_range(tmp_path):
    srv_root = _served(tmp_path, DATA)
    with serve(srv_root, {"/f.bin": "drop_once"}) as srv:
        download(srv.base_url + "f.bin", tmp_path / "dl" / "f.bin", retries=2, backoff_s=0.01, progress=False)
        assert srv.requests[1][1] == f"bytes={len(DATA) // 2}-" and srv.if_range[1] == _etag(DATA)
    assert (tmp_path / "dl" / "f.bin").read_bytes() == DATA
    assert not list((tmp_path / "dl").glob("*.part*"))


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1/x", "data:,hello", "/etc/hostname"])
def test_only_http_urls_are_fetched(tmp_path, url):
    with pytest.raises(DownloadError) as e:
        download(url, tmp_path / "x", retries=3, backoff_s=0.01, progress=False)
    assert e.value.status == "bad_scheme" and not (tmp_path / "x").exists()


def test_file_url_in_a_darn_url_list_is_a_dead_link(tmp_path, acquire_params):
    paths = write_asen_folder(tmp_path / "asen", with_images=True, urls=True)
    u = tmp_path / "asen" / "urls.txt"
    lines = u.read_text().splitlines()
    lines[1] = f"{paths[1]} file:///etc/hostname"
    u.write_text("\n".join(lines) + "\n")
    with serve(tmp_path / "asen") as srv:
        rep = acquire("darn", {"source": "url", "path": str(tmp_path / "asen"), "base_url": srv.base_url}, _acq(acquire_params),
                      tmp_path / "raw")
    assert rep["dead_links"]["by_status"] == {"bad_scheme": 1} and rep["missing"] == [paths[1]]
    assert not (tmp_path / "raw" / paths[1]).exists()


def test_redirects_to_other_schemes_are_refused_and_loops_not_retried(tmp_path):
    srv_root = _served(tmp_path, DATA)
    with serve(srv_root, {"/file": "redirect_file", "/loop": "redirect_loop"}) as srv:
        with pytest.raises(DownloadError) as e:
            download(srv.base_url + "file", tmp_path / "a", retries=3, backoff_s=0.01, progress=False)
        assert e.value.status in ("bad_scheme", 302) and "file:///etc/hostname" in str(e.value)
        with pytest.raises(DownloadError):
            download(srv.base_url + "loop", tmp_path / "b", retries=3, backoff_s=0.01, progress=False)
        assert len([r for r in srv.requests if r[0] == "/loop"]) <= 6  # one attempt's redirects, not four
        assert len([r for r in srv.requests if r[0] == "/file"]) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_no_error_escapes_as_anything_but_a_dataset_error(tmp_path):
    """The parsers' and the extractor's failures are datasets.errors types (what the stages catch)."""
    (tmp_path / "g.zip").write_bytes(b"PK\x03\x04" + os.urandom(200))
    with pytest.raises(DatasetError):
        extract(tmp_path / "g.zip", tmp_path / "out", 1 << 20)


def test_garbage_done_json_is_not_done(tiny_workdir, capsys):
    """done.json travels through DVC remotes like the checkpoints: garbage means "not done", and the
    complete checkpoints make the re-run a no-op."""
    tt = _train_helpers()
    tt.make_params(tiny_workdir, epochs=1, triplets=16, batch=8)
    assert tt.train_tiny() == 0
    calls = tt.CALLS[0]
    done = Path("models") / tt.KEY / "tiny_test" / "done.json"
    done.write_bytes(b"\x00garbage{")
    capsys.readouterr()
    assert tt.train_tiny() == 0
    assert tt.CALLS[0] == calls and "complete and up to date" in capsys.readouterr().err
    assert json.loads(done.read_text())["seeds"] == [0]
