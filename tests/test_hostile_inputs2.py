"""Hostile input, second pass (issue 26): the last tracebacks and silent accepts, and an inner archive
that must never shadow the user's annotations. Each test builds the exact input of one item and
asserts the outcome docs/HOSTILE_INPUT.md gives it (cases S1-S13). Downloads go through a real HTTP
server on 127.0.0.1 (datasets/loopback.py)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from datasets.acquire import acquire
from datasets.archive import extract, sha256_file
from datasets.download import download, fetch_many
from datasets.errors import ChecksumError, ConflictError, DatasetError, DownloadError, FormatError
from datasets.loopback import serve
from datasets.parsers import asen, deepfashion, fashionai, safe_relpath
from tests.fixtures_data import jpeg, write_asen_folder, write_deepfashion, write_fashionai_zip
from tests.test_hostile import _acq, _check  # the check command and quick retries, shared with the first pass

TOP = "fashionAI_attributes_train1"




def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _label_rows(n: int, prefix: str = "Images/skirt_length_labels") -> list[str]:
    return [f"{prefix}/img {i:03d}.jpg,skirt_length_labels,{''.join('y' if c == i % 6 else 'n' for c in range(6))}"
            for i in range(n)]


# ------------------------------------------------------------------------------ tracebacks (1-3)


def test_s1_count_line_of_5000_digits_is_an_error_naming_line_1(tmp_path, capsys):
    """int() refuses strings over 4300 digits: a ValueError traceback at deepfashion.py:38."""
    write_deepfashion(tmp_path / "df", n=6, bad_line=False, bom_crlf=False)
    f = tmp_path / "df" / "Anno" / "list_attr_img.txt"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(["9" * 5000] + lines[1:]) + "\n")
    with pytest.raises(FormatError) as e:
        deepfashion.parse(tmp_path / "df")
    assert "list_attr_img.txt:1" in str(e.value) and "5000-character" in str(e.value)
    rc, _, err = _check(capsys, "deepfashion", tmp_path / "df", "--labels-only")
    assert rc == 1 and "list_attr_img.txt:1" in err


@pytest.mark.parametrize("field", ["\u00b2", "\u0663", "9" * 5000])
def test_s2_class_type_that_isdigit_but_is_not_an_ascii_number_is_an_error(tmp_path, capsys, field):
    """'²'.isdigit() is True and int('²') raises: a ValueError traceback at deepfashion.py:59."""
    write_deepfashion(tmp_path / "df", n=6, bad_line=False, bom_crlf=False)
    f = tmp_path / "df" / "Anno" / "list_attr_cloth.txt"
    lines = f.read_text().splitlines()
    lines[3] = f"a line              {field}"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError) as e:
        deepfashion.parse(tmp_path / "df")
    assert "list_attr_cloth.txt:4" in str(e.value)
    rc, _, err = _check(capsys, "deepfashion", tmp_path / "df", "--labels-only")
    assert rc == 1 and "list_attr_cloth.txt:4" in err


def test_s3_img_zip_that_is_a_folder_is_an_error_naming_it(tmp_path, capsys, acquire_params):
    """IsADirectoryError in archive.sha256_file, through _expand_nested."""
    user = tmp_path / "df"
    write_deepfashion(user, n=6, bad_line=False, bom_crlf=False)
    (user / "Img" / "img.zip").unlink()
    (user / "Img" / "img.zip" / "img").mkdir(parents=True)
    (user / "Img" / "img.zip" / "img" / "a.jpg").write_bytes(jpeg(1))
    with pytest.raises(FormatError) as e:
        sha256_file(user / "Img" / "img.zip")
    assert "a folder" in str(e.value)
    rc, _, err = _check(capsys, "deepfashion", user)
    assert rc == 1 and str(user / "Img" / "img.zip") in err and "a folder" in err
    with pytest.raises(DatasetError) as e:
        acquire("deepfashion", {"source": "local", "path": str(user)}, _acq(acquire_params), tmp_path / "raw")
    assert str(user / "Img" / "img.zip") in str(e.value) and "a folder" in str(e.value)


# --------------------------------------------------------------------------- silent accepts (4-9)


def _df_with_inner_annotations(tmp_path, edit) -> Path:
    """A DeepFashion folder whose Img/img.zip also carries an Anno/list_attr_img.txt (edited)."""
    user = tmp_path / "df"
    write_deepfashion(user, n=12, bad_line=False, bom_crlf=False)
    mine = (user / "Anno" / "list_attr_img.txt").read_text()
    inner = edit(mine)
    with zipfile.ZipFile(user / "Img" / "img.zip", "a") as zf:
        zf.writestr("Anno/list_attr_img.txt", inner)
    return user


def _flip(text: str, n: int) -> str:
    lines = text.splitlines()
    for i in range(2, 2 + n):
        name, vals = lines[i].rsplit("  ", 1)
        lines[i] = name + "  " + vals.replace(" 1", " X").replace("-1", " 1").replace(" X", "-1")
    return "\n".join(lines) + "\n"


def _all_negative(text: str) -> str:
    lines = text.splitlines()
    for i in range(2, len(lines)):
        name, vals = lines[i].rsplit("  ", 1)
        lines[i] = name + "  " + " ".join("-1" for _ in vals.split())
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("edit", ["flipped", "all_negative", "other_folder"])
def test_s4_inner_archive_never_shadows_the_users_annotation_file(tmp_path, capsys, acquire_params, edit):
    """Img/img.zip with its own Anno/list_attr_img.txt replaced the user's in check and in acquire
    (10 labels flipped: fewer label rows, no word; all -1: '0 label rows ... usable', exit 0)."""
    if edit == "other_folder":  # the user's files in Anno_coarse/, the archive's in Anno/ (read first)
        user = _df_with_inner_annotations(tmp_path, lambda t: _flip(t, 10))
        (user / "Anno").rename(user / "Anno_coarse")
    else:
        user = _df_with_inner_annotations(tmp_path, (lambda t: _flip(t, 10)) if edit == "flipped" else _all_negative)
    before = _digest(user)
    rc, out, err = _check(capsys, "deepfashion", user)
    assert rc == 1 and "usable" not in out + err
    assert "list_attr_img.txt" in err and str(user / "Img" / "img.zip") in err and "one place" in err
    assert "fashionbench-check-" not in err
    with pytest.raises(ConflictError) as e:
        acquire("deepfashion", {"source": "local", "path": str(user)}, _acq(acquire_params), tmp_path / "raw")
    user_anno = "Anno_coarse" if edit == "other_folder" else "Anno"
    assert str(user / user_anno / "list_attr_img.txt") in str(e.value) and "img.zip" in str(e.value)
    assert str(tmp_path / "raw") not in str(e.value)
    assert _digest(user) == before


def test_s4_inner_archive_with_an_identical_copy_is_fine(tmp_path, capsys):
    user = _df_with_inner_annotations(tmp_path, lambda t: t)
    (user / "Anno_fine").mkdir()  # not an annotation layout (no files): nothing to confuse
    rc, out, err = _check(capsys, "deepfashion", user, "--labels-only")
    assert rc in (0, 1) and "images/rows" in out


def test_s5_zip_with_two_label_csv_entries_is_refused(tmp_path, capsys):
    """The second entry (half the rows) was used; the images it names no row for passed unmentioned."""
    rows = _label_rows(20)
    z = tmp_path / f"{TOP}.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(f"{TOP}/Annotations/label.csv", "\n".join(rows) + "\n")
        for i in range(20):
            zf.writestr(f"{TOP}/Images/skirt_length_labels/img {i:03d}.jpg", jpeg(i))
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr(f"{TOP}/Annotations/label.csv", "\n".join(rows[:10]) + "\n")
    with pytest.raises(DatasetError) as e:
        extract(z, tmp_path / "out", 1 << 20)
    assert "label.csv" in str(e.value) and "twice" in str(e.value)
    rc, out, err = _check(capsys, "fashionai", z)
    assert rc == 1 and str(z) in err and "label.csv" in err and "twice" in err and "usable" not in out


def test_s5_identical_duplicate_entries_are_harmless(tmp_path):
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("x/label.csv", "same\n")
        zf.writestr("x/label.csv", "same\n")
    assert extract(z, tmp_path / "out", 1 << 20) == ["x/label.csv", "x/label.csv"]
    assert (tmp_path / "out" / "x" / "label.csv").read_text() == "same\n"


def _fa_zip_beside_copy(tmp_path, edited: bool) -> Path:
    user = tmp_path / "download"
    write_fashionai_zip(user / f"{TOP}.zip")
    with zipfile.ZipFile(user / f"{TOP}.zip") as zf:
        zf.extractall(user)
    if edited:
        f = user / TOP / "Annotations" / "label.csv"
        f.write_bytes(f.read_bytes().replace(b",nnnnnn", b",ynnnnn"))  # the user fixed the row with no 'y'
    return user


def test_s6_fashionai_zip_beside_an_edited_copy_is_refused_naming_both(tmp_path, capsys, acquire_params):
    """The zip's label.csv won over the user's edits without a word."""
    user = _fa_zip_beside_copy(tmp_path, edited=True)
    before = _digest(user)
    label = user / TOP / "Annotations" / "label.csv"
    rc, out, err = _check(capsys, "fashionai", user)
    assert rc == 1 and str(label) in err and f"{TOP}.zip!/{TOP}/Annotations/label.csv" in err and "usable" not in out
    with pytest.raises(ConflictError) as e:
        acquire("fashionai", {"source": "local", "path": str(user)}, _acq(acquire_params), tmp_path / "raw")
    assert str(label) in str(e.value) and f"{TOP}.zip" in str(e.value)
    assert _digest(user) == before


def test_s6_fashionai_zip_beside_an_identical_copy_is_read_once(tmp_path, capsys, acquire_params):
    user = _fa_zip_beside_copy(tmp_path, edited=False)
    rc, out, _ = _check(capsys, "fashionai", user)
    assert "10 images/rows" in out
    rep = acquire("fashionai", {"source": "local", "path": str(user)}, _acq(acquire_params), tmp_path / "raw")
    assert rep["images_obtained"] == 10


def test_s7_asen_meta_json_that_is_a_folder_is_an_error(tmp_path, capsys, acquire_params):
    """The packaged meta was used instead (12 twin classes became 20/13/55...), exit 0, 'usable'."""
    d = tmp_path / "asen"
    write_asen_folder(d, with_images=False)
    (d / "meta.json").unlink()
    (d / "meta.json").mkdir()
    with pytest.raises(FormatError) as e:
        asen.parse(d, "darn")
    assert str(d / "meta.json") in str(e.value) and "folder" in str(e.value)
    rc, out, err = _check(capsys, "darn", d, "--labels-only")
    assert rc == 1 and str(d / "meta.json") in err and "usable" not in out
    with pytest.raises(FormatError) as e:
        acquire("darn", {"source": "asen", "path": str(d)}, _acq(acquire_params), tmp_path / "raw")
    assert str(d / "meta.json") in str(e.value)


@pytest.mark.parametrize("ch", ["\x7f", "\u202e", "\x9b", "\u2066"])
def test_s8_names_with_del_or_bidi_overrides_are_refused(tmp_path, capsys, acquire_params, ch):
    """DEL and U+202E passed, though the doc says control characters are refused."""
    bad = f"Images/skirt_length_labels/x{ch}gpj.exe.jpg"
    assert safe_relpath(bad)[0] is None and f"U+{ord(ch):04X}" in safe_relpath(bad)[1]
    p = tmp_path / "fa" / "Annotations" / "label.csv"
    p.parent.mkdir(parents=True)
    p.write_text("\n".join(_label_rows(4) + [f"{bad},skirt_length_labels,ynnnnn"]) + "\n")
    res, _ = fashionai.parse_file(p)
    assert [(q.line, q.check) for q in res.quarantine] == [(5, "unsafe_path")] and len(res.paths) == 4
    rc, out, _ = _check(capsys, "fashionai", p, "--labels-only")
    assert "unparseable lines: 1" in out
    # DeepFashion: quarantined; ASEN split file: an error naming the line
    write_deepfashion(tmp_path / "df", n=6, bad_line=False, bom_crlf=False)
    f = tmp_path / "df" / "Anno" / "list_attr_img.txt"
    lines = f.read_text().splitlines()
    lines[3] = lines[3].replace("img_", f"img{ch}_", 1)
    f.write_text("\n".join(lines) + "\n")
    res = deepfashion.parse(tmp_path / "df")
    assert [(q.line, q.check) for q in res.quarantine if q.check == "unsafe_path"] == [(4, "unsafe_path")]
    src = tmp_path / "asen"
    write_asen_folder(src, with_images=True)
    lines = (src / "filenames_train.txt").read_text().splitlines()
    lines[1] = f"pic/x{ch}.jpg"
    (src / "filenames_train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError) as e:
        acquire("darn", {"source": "asen", "path": str(src), "images": str(src)}, _acq(acquire_params), tmp_path / "raw")
    assert f"{src / 'filenames_train.txt'}:2" in str(e.value)


def test_s8_letters_of_any_script_and_no_break_spaces_are_kept():
    for name in ("a/\u00e9t\u00e9.jpg", "a/\u88d9\u5b50.jpg", "a/b\u00a0c.jpg", "a/\u05d0\u05d1.jpg"):
        assert safe_relpath(name)[0] == name


DATA = jpeg(7, size=256) * 3


def _served(tmp_path) -> Path:
    (tmp_path / "srv").mkdir(exist_ok=True)
    (tmp_path / "srv" / "f.bin").write_bytes(DATA)
    return tmp_path / "srv"


def test_s9_content_length_100_bytes_short_is_not_kept(tmp_path):
    """The first Content-Length bytes were kept as the complete file."""
    with serve(_served(tmp_path), {"/f.bin": "short_length"}) as srv:
        with pytest.raises(DownloadError) as e:
            download(srv.base_url + "f.bin", tmp_path / "dl" / "f.bin", retries=2, backoff_s=0.01, progress=False)
        assert srv.gets["/f.bin"] == 1  # a lying length is not retried
    assert e.value.status == "bad_length" and f"Content-Length of {len(DATA) - 100}" in str(e.value)
    assert not (tmp_path / "dl" / "f.bin").exists() and not list((tmp_path / "dl").glob("*.part*"))


def test_s9_size_the_list_records_is_checked(tmp_path):
    with serve(_served(tmp_path), {"/f.bin": "no_length_cut"}) as srv:
        with pytest.raises(DownloadError) as e:
            download(srv.base_url + "f.bin", tmp_path / "dl" / "f.bin", retries=0, progress=False, size=len(DATA))
        assert e.value.status == "bad_length" and "records" in str(e.value)
        rec: dict = {}
        download(srv.base_url + "f.bin", tmp_path / "ok" / "f.bin", retries=0, progress=False, record=rec)
    assert not (tmp_path / "dl" / "f.bin").exists()
    assert rec == {"bytes": len(DATA) // 2, "length_verified": False, "sha256_checked": False}


def test_s9_close_delimited_cut_is_caught_by_sha256(tmp_path):
    with serve(_served(tmp_path), {"/f.bin": "no_length_cut"}) as srv:
        with pytest.raises(ChecksumError):
            download(srv.base_url + "f.bin", tmp_path / "dl" / "f.bin", sha256=hashlib.sha256(DATA).hexdigest(),
                     retries=0, progress=False)
    assert not (tmp_path / "dl" / "f.bin").exists()


def test_s9_close_delimited_answers_are_counted_length_unverified(tmp_path, acquire_params):
    """DARN's URL list: a close-delimited answer cut halfway is counted, not passed as verified."""
    paths = write_asen_folder(tmp_path / "asen", with_images=True, urls=True)
    from urllib.parse import quote

    faults = {"/" + paths[1]: "no_length_cut", "/" + paths[2]: "no_length"}  # unquoted URL paths
    with serve(tmp_path / "asen", faults) as srv:
        cfg = {"source": "url", "path": str(tmp_path / "asen"), "base_url": srv.base_url}
        rep = acquire("darn", cfg, _acq(acquire_params), tmp_path / "raw", cache=tmp_path / "cache")
        assert rep["download"]["length_unverified"] == 2 and rep["length_unverified"] == sorted(paths[1:3])
        assert (tmp_path / "raw" / paths[1]).stat().st_size == len(jpeg(301)) // 2
        # the next run finds them in the download cache and still counts them
        rep2 = acquire("darn", cfg, _acq(acquire_params), tmp_path / "raw", cache=tmp_path / "cache")
    assert rep2["download"]["from_cache"] == len(paths) and rep2["length_unverified"] == sorted(paths[1:3])
    with serve(tmp_path / "asen") as srv:
        res = fetch_many([(p, srv.base_url + quote(p)) for p in paths[:3]], tmp_path / "c2", progress=False)
    assert all(r.ok and r.length_verified for r in res)


def test_s9_source_url_records_what_was_verified(tmp_path, acquire_params):
    z = tmp_path / "srv" / f"{TOP}.zip"
    write_fashionai_zip(z)
    with serve(tmp_path / "srv", {f"/{TOP}.zip": "no_length"}) as srv:
        rep = acquire("fashionai", {"source": "url", "url": srv.base_url + f"{TOP}.zip"}, _acq(acquire_params),
                      tmp_path / "a" / "raw")
    assert rep["downloads"][0]["length_verified"] is False and rep["length_unverified"] == [srv.base_url + f"{TOP}.zip"]
    want = sha256_file(z)
    with serve(tmp_path / "srv", {f"/{TOP}.zip": "no_length"}) as srv:
        rep = acquire("fashionai", {"source": "url", "url": srv.base_url + f"{TOP}.zip", "sha256": want},
                      _acq(acquire_params), tmp_path / "b" / "raw")
    assert rep["downloads"][0]["sha256_checked"] is True and rep["length_unverified"] == []


# ------------------------------------------------------------------------- writes and messages (10-13)


@pytest.mark.parametrize("target", ["label_csv", "inside_folder", "link_to_input", "zip_itself"])
def test_s10_check_json_never_writes_an_input(tmp_path, capsys, target):
    """`check ... --json <label.csv>` overwrote the user's label.csv."""
    user = tmp_path / "fa"
    label = user / "Annotations" / "label.csv"
    label.parent.mkdir(parents=True)
    label.write_text("\n".join(_label_rows(4)) + "\n")
    z = tmp_path / "a.zip"
    if target == "zip_itself":
        write_fashionai_zip(z)
        src, out = z, z
    elif target == "label_csv":
        src, out = label, label
    elif target == "inside_folder":
        src, out = user, user / "Annotations" / "report.json"
    else:
        (tmp_path / "link.json").symlink_to(label)
        src, out = label, tmp_path / "link.json"
    before = {p: p.read_bytes() for p in (label, z) if p.exists()}
    rc, _, err = _check(capsys, "fashionai", src, "--labels-only", "--json", out)
    assert rc == 2 and "--json" in err and ("input" in err)
    assert {p: p.read_bytes() for p in before} == before
    assert not (user / "Annotations" / "report.json").exists()
    rc, _, _ = _check(capsys, "fashionai", src, "--labels-only", "--json", tmp_path / "out" / "r.json")
    assert json.loads((tmp_path / "out" / "r.json").read_text())["input"] == str(src)


def _crafted(path: Path, marker: Path) -> None:
    import torch

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format": "fashionbench-shared-trunk-2", "backbone": "x", "state_dict": {}, "p": Payload()}, path)


def test_s11_checkpoint_error_says_in_one_line_that_the_file_was_refused_and_why(tmp_path):
    """The text was cut at 200 characters, losing the sentence that the file could run code."""
    from benchmark.checkpoint import CheckpointError, read_checkpoint

    marker = tmp_path / "ran"
    _crafted(tmp_path / "c.pt", marker)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path / "c.pt")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path / 'c.pt'}: not a readable checkpoint; refused")
    assert "run code" in msg and "GLOBAL" in msg and "\x1b" not in msg and not marker.exists()


def test_s11_crafted_trunk_is_refused_in_one_line_not_a_raw_unpickling_error(tmp_path, monkeypatch, capsys):
    from benchmark import shared_trunk
    from benchmark.checkpoint import CheckpointError

    marker = tmp_path / "ran"
    p = tmp_path / "trunk" / "seed0.pt"
    p.parent.mkdir()
    _crafted(p, marker)
    monkeypatch.setattr(shared_trunk, "trunk_path", lambda key, seed: p)
    with pytest.raises(CheckpointError) as e:
        shared_trunk.load_trunk("darn", 0)
    assert "\n" not in str(e.value) and str(p) in str(e.value) and "refused" in str(e.value) and "run code" in str(e.value)
    p.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(CheckpointError) as e:
        shared_trunk.load_trunk("darn", 0)
    assert "\n" not in str(e.value) and "refused" in str(e.value)
    assert not marker.exists()


def test_s12_acquire_errors_name_the_users_file_and_line(tmp_path, acquire_params):
    """acquire named data/darn/raw/filenames_train.txt, the copy, not the file the user gave."""
    src = tmp_path / "asen"
    paths = write_asen_folder(src, with_images=True, urls=True)
    lines = (src / "filenames_train.txt").read_text().splitlines()
    lines[2] = "../../etc/passwd"
    (src / "filenames_train.txt").write_text("\n".join(lines) + "\n")
    raw = tmp_path / "data" / "darn" / "raw"
    with pytest.raises(FormatError) as e:
        acquire("darn", {"source": "asen", "path": str(src), "images": str(src)}, _acq(acquire_params), raw)
    assert str(e.value).startswith(f"{src / 'filenames_train.txt'}:3") and str(raw) not in str(e.value)
    assert e.value.path == str(src / "filenames_train.txt")
    (src / "filenames_train.txt").write_text("\n".join(paths[:6]) + "\n")
    (src / "urls.txt").write_text("pic/1/a.jpg http://x/a.jpg\nno-url-here\n")
    with pytest.raises(FormatError) as e:
        acquire("darn", {"source": "url", "path": str(src), "base_url": "http://127.0.0.1:9/"}, _acq(acquire_params), raw)
    assert str(e.value).startswith(f"{src / 'urls.txt'}:2") and str(raw) not in str(e.value)


def test_s13_meta_json_whose_darn_section_is_a_string(tmp_path, capsys):
    """Reported as 'no DARN section'."""
    d = tmp_path / "asen"
    write_asen_folder(d, with_images=False)
    (d / "meta.json").write_text('{\n  "FashionAI": {},\n  "DARN": "see the paper"\n}\n')
    with pytest.raises(FormatError) as e:
        asen.parse(d, "darn")
    msg = str(e.value)
    assert msg.startswith(f"{d / 'meta.json'}:3") and "DARN section" in msg and "str" in msg and "no DARN" not in msg
    rc, _, err = _check(capsys, "darn", d, "--labels-only")
    assert rc == 1 and "meta.json:3" in err


def _legacy_zip(path: Path, members: dict[str, bytes], encoding: str) -> None:
    """A zip whose non-ASCII names are stored in ``encoding`` without the UTF-8 flag (old Windows
    tools in a GBK locale, or Info-ZIP / macOS writing UTF-8 bytes unflagged)."""
    orig = zipfile.ZipInfo._encodeFilenameFlags

    def legacy(self):
        return self.filename.encode(encoding), self.flag_bits & ~0x800

    zipfile.ZipInfo._encodeFilenameFlags = legacy
    try:
        with zipfile.ZipFile(path, "w") as zf:
            for k, v in members.items():
                zf.writestr(k, v)
    finally:
        zipfile.ZipInfo._encodeFilenameFlags = orig
    with zipfile.ZipFile(path) as zf:  # the flag is really unset
        assert all(not (i.flag_bits & 0x800) for i in zf.infolist())


@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
def test_s13_legacy_zip_with_non_ascii_names(tmp_path, capsys, encoding):
    """Counted as missing_file, not as a name-encoding problem."""
    names = [f"Images/skirt_length_labels/\u88d9{i}.jpg" for i in range(3)] + \
            [f"Images/skirt_length_labels/plain{i}.jpg" for i in range(3)]
    rows = [f"{n},skirt_length_labels,{''.join('y' if c == i % 6 else 'n' for c in range(6))}" for i, n in enumerate(names)]
    members = {f"{TOP}/Annotations/label.csv": ("\n".join(rows) + "\n").encode()}
    members.update({f"{TOP}/{n}": jpeg(40 + i) for i, n in enumerate(names)})
    z = tmp_path / f"{TOP}.zip"
    _legacy_zip(z, members, encoding)
    rc, out, _ = _check(capsys, "fashionai", z, "--json", tmp_path / "r.json")
    rep = json.loads((tmp_path / "r.json").read_text())
    if encoding == "utf-8":  # UTF-8 bytes without the flag: read as UTF-8, every image found
        assert "missing_file" not in rep["checks"] and "name_encoding" not in rep["checks"]
        assert "6 images/rows, 6 kept" in out
    else:
        assert rep["checks"].get("name_encoding") == 3 and "missing_file" not in rep["checks"]


@pytest.mark.parametrize("where", ["is_raw", "inside_input", "holds_raw"])
def test_s10_acquire_never_empties_or_writes_a_users_input(tmp_path, acquire_params, where):
    """raw/ is emptied first: an input that is raw/, holds it or lies inside it would be removed."""
    user = tmp_path / "download"
    write_fashionai_zip(user / f"{TOP}.zip")
    raw = {"is_raw": user, "inside_input": user / "raw", "holds_raw": tmp_path}[where]
    before = _digest(user)
    with pytest.raises(DatasetError) as e:
        acquire("fashionai", {"source": "local", "path": str(user)}, _acq(acquire_params), raw)
    assert "overlap" in str(e.value) and str(user) in str(e.value)
    assert _digest(user) == before and not (user / "raw").exists()
