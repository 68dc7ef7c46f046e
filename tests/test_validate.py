import copy
import json
from collections import Counter

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.params import load_params
from datasets.acquire import acquire
from datasets.errors import ValidationFailed
from datasets.parse import build_tables, parse_raw, write_tables
from datasets.validate import load_tables, main as validate_main, validate_tables, write_validated
from tests.fixtures_data import write_deepfashion


def thumb(path):
    """(32x32 grey, 8x8 colour BGR) thumbnails of an image file, float32 (check_image's, from a
    decode of its own); None when the file does not decode."""
    from pathlib import Path

    import cv2

    from datasets.parsers import decode
    from datasets.validate import thumbnails, unpack_thumbnails

    img = decode(Path(path).read_bytes()) if Path(path).is_file() else None
    if img is None or img.ndim != 3 or img.shape[2] != 3:
        return None
    return unpack_thumbnails(thumbnails(img, cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)))


def confirm_near(pairs, thumb_of, max_mad: float) -> list[tuple[int, int]]:
    """The plain per-pair loop confirm_near_array (the stage's) is checked against: the pairs whose
    thumbnails (``thumb_of(i)``: thumb()'s pair or None) agree, grey and colour, each within max_mad
    levels of mean absolute difference."""
    import numpy as np

    cache: dict = {}
    out = []
    for a, b in pairs:
        for i in (a, b):
            if i not in cache:
                cache[i] = thumb_of(i)
        ta, tb = cache[a], cache[b]
        if ta is not None and tb is not None and all(float(np.abs(x - y).mean()) <= max_mad for x, y in zip(ta, tb)):
            out.append((a, b))
    return out

PARAMS = {"max_bad_fraction": 0.6, "min_side": 32, "maybe_policy": "negative", "near_duplicate_max_mad": 8.0,
          "near_duplicate_hamming": load_params()["validate"]["near_duplicate_hamming"], "workers": 1}


def _run(key, src, tmp, acq, cfg=None, vparams=PARAMS):
    """acquire -> parse -> validate of ``src`` into ``tmp``; ``acq``: params' acquire section."""
    cfg = cfg or {"source": "twin", "path": str(src), "sha256": None}
    raw = tmp / "raw"
    rep = acquire(key, cfg, acq, raw, tmp / "acquire.json")
    tables = build_tables(parse_raw(key, raw, cfg["source"]), raw)
    write_tables(tables, tmp / "tables")
    out, report = validate_tables(key, load_tables(tmp / "tables"), raw, vparams)
    write_validated(out, tmp / "validated")
    return rep, out, report


def test_fixture_defects_found_and_rows_add_up(tmp_path, acquire_params):
    info = write_deepfashion(tmp_path / "src", n=12)
    rep, out, report = _run("deepfashion", tmp_path / "src", tmp_path, acquire_params)
    names = info["names"]
    assert report["checks"] == {"bad_columns": 1, "corrupt_jpeg": 1, "missing_file": 1, "truncated_jpeg": 1}
    assert report["findings"]["corrupt_jpeg"] == [names[3]] and report["findings"]["truncated_jpeg"] == [names[4]]
    assert report["findings"]["bad_columns"] == [f"Anno/list_attr_img.txt:{info['bad_line']}"]
    assert rep["missing"] == [] and rep["images_obtained"] == 11  # acquire counts what arrived; validate names the gap
    assert report["findings"]["missing_file"] == [names[5]]
    groups = {g["kind"]: g for g in report["duplicate_groups"]["groups"]}
    assert groups["exact"]["paths"] == [names[0], names[6]] and not groups["exact"]["spans_partitions"]  # both train
    assert groups["near"]["paths"] == [names[1], names[7]]
    for t in report["tables"].values():
        if isinstance(t, dict):
            assert t["rows_in"] == t["kept"] + t["quarantined"]
    assert report["tables"]["images"] == {"rows_in": 12, "kept": 9, "quarantined": 3}
    assert set(out["labels"]["image_id"]) <= set(out["images"]["image_id"])
    q = pl.read_parquet(tmp_path / "validated" / "quarantine.parquet")
    assert q.height == 4 and set(q["kind"]) == {"row", "file"}
    d = pl.read_parquet(tmp_path / "validated" / "duplicates.parquet")
    assert d.height == 4  # kept, reported: two groups of two


def test_too_many_bad_fails_with_clear_message(tmp_path, acquire_params, monkeypatch, capsys):
    write_deepfashion(tmp_path / "src", n=12)
    _run("deepfashion", tmp_path / "src", tmp_path, acquire_params)
    # 3 bad images + 1 bad line of 13 > 5%: the stage fails
    _, report = validate_tables("deepfashion", load_tables(tmp_path / "tables"), tmp_path / "raw", dict(PARAMS, max_bad_fraction=0.05))
    assert not report["passed"] and report["bad_fraction"] == pytest.approx(4 / 13, abs=1e-4)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "deepfashion").mkdir(parents=True)
    (tmp_path / "tables").rename(tmp_path / "data" / "deepfashion" / "tables")
    (tmp_path / "raw").rename(tmp_path / "data" / "deepfashion" / "raw")
    (tmp_path / "params.yaml").write_text("validate:\n  max_bad_fraction: 0.05\n  min_side: 32\n  maybe_policy: negative\n"
                                          "  near_duplicate_hamming: 6\n  near_duplicate_max_mad: 8.0\n  workers: 1\n")
    assert validate_main(["deepfashion"]) == 1
    err = capsys.readouterr().err
    assert "more than validate.max_bad_fraction" in err and "reports/deepfashion/validation.json" in err
    assert "max_dead_link_fraction" not in err
    v = json.loads((tmp_path / "reports" / "deepfashion" / "validation.json").read_text())
    assert v["tables"]["images"]["rows_in"] == 12


def test_dead_links_are_held_to_their_own_threshold(tmp_path, acquire_params, monkeypatch, capsys):
    """DARN's dead links (URLs that failed) count against validate.max_dead_link_fraction, not
    max_bad_fraction: 10% dead passes a 5% max_bad_fraction, and fails a 5% max_dead_link_fraction
    with a message naming that param and the report."""
    from datasets.twins.build import build

    tp = copy.deepcopy(load_params()["twins"])
    tp["darn"]["images"] = 60
    tp["defects"].update(corrupt_jpeg=0, truncated_jpeg=0, exact_duplicate=0, resized_duplicate=0, darn_404=5, darn_drop=1)
    build("darn", tp, tmp_path / "twin", progress=False)
    acq = dict(acquire_params, download=dict(acquire_params["download"], retries=1, backoff_s=0.01))
    strict = dict(PARAMS, max_bad_fraction=0.05, max_dead_link_fraction=0.25)
    rep, _, report = _run("darn", tmp_path / "twin", tmp_path, acq, vparams=strict)
    n = report["tables"]["images"]["rows_in"]
    assert rep["dead_links"]["count"] == 6 and 6 / n > 0.05  # over max_bad_fraction, had they counted there
    assert report["images_quarantined"]["dead_link"] == 6 and report["dead_link_fraction"] == pytest.approx(6 / n, abs=1e-6)
    assert report["images_quarantined"]["dead_link"] + report["images_quarantined"]["other"] == \
        report["tables"]["images"]["quarantined"]
    assert report["tables"]["images"]["rows_in"] == report["tables"]["images"]["kept"] + report["tables"]["images"]["quarantined"]
    assert report["bad_fraction"] <= 0.05 and report["passed"] and report["failed"] == []
    _, report = validate_tables("darn", load_tables(tmp_path / "tables"), tmp_path / "raw", dict(strict, max_dead_link_fraction=0.05))
    assert not report["passed"] and report["failed"] == ["max_dead_link_fraction"]

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "darn").mkdir(parents=True)
    (tmp_path / "tables").rename(tmp_path / "data" / "darn" / "tables")
    (tmp_path / "raw").rename(tmp_path / "data" / "darn" / "raw")
    (tmp_path / "params.yaml").write_text("validate:\n  max_bad_fraction: 0.05\n  max_dead_link_fraction: 0.05\n  min_side: 32\n"
                                          "  maybe_policy: negative\n  near_duplicate_hamming: 6\n  near_duplicate_max_mad: 8.0\n"
                                          "  workers: 1\n")
    assert validate_main(["darn"]) == 1
    err = capsys.readouterr().err
    assert "more than validate.max_dead_link_fraction = 5.0%" in err and "reports/darn/validation.json" in err
    assert "max_bad_fraction" not in err


def test_bad_policy_rejected():
    with pytest.raises(ValidationFailed):
        validate_tables("fashionai", {}, None, dict(PARAMS, maybe_policy="sometimes"))


KIND_TO_CHECK = {"corrupt_jpeg": "corrupt_jpeg", "truncated_jpeg": "truncated_jpeg", "missing_file": "missing_file",
                 "fashionai_no_yes": "fashionai_no_yes", "fashionai_maybe": "fashionai_maybe",
                 "deepfashion_bad_columns": "bad_columns"}


@pytest.mark.slow
@pytest.mark.parametrize("key", ["deepfashion", "fashionai", "darn"])
def test_twin_validation_finds_exactly_the_planted_defects(tmp_path, acquire_params, key):
    from datasets.twins.build import build

    tp = copy.deepcopy(load_params()["twins"])
    tp[key]["images"] = 250
    tp["defects"].update(corrupt_jpeg=2, truncated_jpeg=2, exact_duplicate=2, resized_duplicate=2, fashionai_maybe=5,
                         fashionai_no_yes=2, darn_404=3, darn_drop=2)
    build(key, tp, tmp_path / "twin", progress=False)
    manifest = json.loads((tmp_path / "twin" / "manifest.json").read_text())
    rep, out, report = _run(key, tmp_path / "twin", tmp_path / "run", acquire_params, vparams=dict(PARAMS, max_bad_fraction=0.2))
    planted = Counter(d["kind"] for d in manifest["defects"])
    prefix = "fashionAI_attributes_train1/" if key == "fashionai" else ""

    # image-level checks: counts and the images named
    for kind in ("corrupt_jpeg", "truncated_jpeg", "missing_file"):
        want = sorted(prefix + d["image"] for d in manifest["defects"] if d["kind"] == kind)
        assert sorted(report["findings"].get(kind, [])) == want, kind
    for kind in ("fashionai_no_yes", "fashionai_maybe", "deepfashion_bad_columns"):
        want = sorted(f"{d['file']}:{d['line']}" for d in manifest["defects"] if d["kind"] == kind)
        assert sorted(report["findings"].get(KIND_TO_CHECK[kind], [])) == want, kind
    # DARN dead links: 404s and dropped connections, by status
    dead = {d["path"]: d["status"] for d in rep["dead_links"]["items"]}
    assert sorted(p for p, s in dead.items() if s == 404) == sorted(d["image"] for d in manifest["defects"] if d["kind"] == "darn_404")
    assert sorted(p for p, s in dead.items() if s == "dropped") == sorted(d["image"] for d in manifest["defects"] if d["kind"] == "darn_drop")
    assert report["checks"].get("dead_link", 0) == planted["darn_404"] + planted["darn_drop"]
    # duplicates: one group per planted pair, no other group
    for kind, gkind in (("exact_duplicate", "exact"), ("resized_duplicate", "near")):
        want = sorted(sorted([prefix + d["image"], prefix + d["duplicate_of"]]) for d in manifest["defects"] if d["kind"] == kind)
        got = sorted(sorted(g["paths"]) for g in report["duplicate_groups"]["groups"] if g["kind"] == gkind)
        assert got == want, kind
    # nothing else was found
    expected_checks = {KIND_TO_CHECK[k]: v for k, v in planted.items() if k in KIND_TO_CHECK}
    if planted["darn_404"] + planted["darn_drop"]:
        expected_checks["dead_link"] = planted["darn_404"] + planted["darn_drop"]
    assert report["checks"] == expected_checks
    for t in report["tables"].values():
        if isinstance(t, dict):
            assert t["rows_in"] == t["kept"] + t["quarantined"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=0, max_size=60), st.integers(0, 8), st.data())
def test_near_pairs_equal_a_brute_force_pair_loop(base, max_dist, data):
    from datasets.neardup import near_pairs

    # plant close relatives of some hashes so that pairs exist at every distance up to max_dist + 1
    hashes = list(base)
    for h in base[:10]:
        flips = data.draw(st.lists(st.integers(0, 63), max_size=max_dist + 1, unique=True))
        hashes.append(h ^ sum(1 << f for f in flips))
    by_id = {i * 3 + 1: h for i, h in enumerate(hashes)}  # ids need not be 0..n-1
    want = sorted((a, c) for a in by_id for c in by_id
                  if a < c and (by_id[a] ^ by_id[c]).bit_count() <= max_dist)
    assert near_pairs(by_id, max_dist) == want
    # rows compared a few at a time (the bounded-memory path a big bucket takes) give the same pairs
    assert near_pairs(by_id, max_dist, block=data.draw(st.integers(1, 40))) == want


def test_darn_twin_acquired_twice_gives_identical_raw_files(tmp_path, acquire_params):
    """The loopback server listens on a new port each run; nothing recorded in raw/ may depend on
    it, or every stage downstream of acquire would re-run on each `dvc repro`."""
    from datasets.twins.build import build

    tp = copy.deepcopy(load_params()["twins"])
    tp["darn"]["images"] = 60
    tp["defects"].update(darn_404=2, darn_drop=1)
    build("darn", tp, tmp_path / "twin", progress=False)
    cfg = {"source": "twin", "path": str(tmp_path / "twin"), "sha256": None}
    for run in ("a", "b"):
        acquire("darn", cfg, acquire_params, tmp_path / run / "raw", tmp_path / run / "acquire.json")
    def outputs(run):  # raw/ and acquire.json: the DVC outputs (not the download cache, not the timing)
        top = tmp_path / run
        return sorted(p.relative_to(top) for p in [top / "acquire.json", *(top / "raw").rglob("*")] if p.is_file())

    files_a, files_b = outputs("a"), outputs("b")
    assert files_a == files_b
    for f in files_a:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    missing = json.loads((tmp_path / "a" / "raw" / "acquire_missing.json").read_text())
    assert sum(1 for v in missing.values() if v["status"] in (404, "dropped")) == 3


def _small_twin(tmp, key="deepfashion", n=250):
    from datasets.twins.build import build

    tp = copy.deepcopy(load_params()["twins"])
    tp[key]["images"] = n
    tp["defects"].update(corrupt_jpeg=2, truncated_jpeg=2, exact_duplicate=2, resized_duplicate=2)
    build(key, tp, tmp / "twin", progress=False)
    return tmp / "twin"


@pytest.mark.slow
def test_two_worker_processes_give_the_results_of_one(tmp_path, acquire_params):
    """Decoding and hashing in worker processes changes nothing: the per-image results, the
    validated tables and the report are identical to one process's."""
    from datasets.pool import MIN_PER_WORKER
    from datasets.validate import check_images

    twin = _small_twin(tmp_path)
    rep1, out1, report1 = _run("deepfashion", twin, tmp_path / "one", acquire_params, vparams=dict(PARAMS, workers=1))
    raw = tmp_path / "one" / "raw"
    files = sorted(raw.rglob("*.jpg"))
    assert len(files) >= 2 * MIN_PER_WORKER  # so two processes are really used
    files.append(raw / "img" / "no_such_file.jpg")
    assert check_images(files, 32, workers=2, progress=False) == check_images(files, 32, workers=1, progress=False)
    _, report2 = validate_tables("deepfashion", load_tables(tmp_path / "one" / "tables"), raw, dict(PARAMS, workers=2))
    write_validated(validate_tables("deepfashion", load_tables(tmp_path / "one" / "tables"), raw,
                                    dict(PARAMS, workers=2))[0], tmp_path / "two")
    assert json.dumps(report2, sort_keys=True) == json.dumps(report1, sort_keys=True)
    # parse reads every image's size and sha256 in the same processes: the same tables
    res = parse_raw("deepfashion", raw, "twin")
    one, two = build_tables(res, raw, workers=1), build_tables(res, raw, workers=2)
    assert one["images"]["width"].null_count() >= 2  # the corrupt JPEGs (no size) are among them
    for name in one:
        assert one[name].equals(two[name]), name
    for f in sorted((tmp_path / "one" / "validated").glob("*.parquet")):
        assert pl.read_parquet(f).equals(pl.read_parquet(tmp_path / "two" / f.name)), f.name
    assert report1["duplicate_groups"]["near"] == 2 and report1["duplicate_groups"]["exact"] == 2


def test_near_duplicate_params_have_one_source():
    for name in ("near_duplicate_hamming", "near_duplicate_max_mad", "workers"):
        p = dict(PARAMS)
        del p[name]
        with pytest.raises(ValidationFailed, match=f"validate.{name} is missing"):
            validate_tables("fashionai", {}, None, p)
    with pytest.raises(ValidationFailed, match="0..63"):
        validate_tables("fashionai", {}, None, dict(PARAMS, near_duplicate_hamming=64))


def test_resized_copies_the_twins_did_not_choose_are_all_found_and_nothing_else(tmp_path):
    """150 copies made here, without looking at any hash: scale 0.3-3x, JPEG quality 50-95. With the
    params' distance and thumbnail confirmation every copy is paired with its original (pHash recall
    1.0) and no two different pictures are paired."""
    import cv2
    import numpy as np

    from datasets.neardup import near_pairs as pairs_of
    from datasets.twins.build import build
    from datasets.validate import check_images, confirm_near_array, unpack_thumbnails

    tp = copy.deepcopy(load_params()["twins"])
    tp["deepfashion"]["images"] = 150
    tp["defects"] = {}
    clean = build("deepfashion", tp, None, progress=False)["clean_images"]
    rng = np.random.default_rng(2024)
    files, source = [], {}
    for i, data in sorted(clean.items()):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        (tmp_path / f"o{i}.jpg").write_bytes(data)
        f, q = float(rng.uniform(0.3, 3.0)), int(rng.integers(50, 96))
        side = max(32, int(round(img.shape[0] * f)))
        small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA if side < img.shape[0] else cv2.INTER_LINEAR)
        ok, enc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert ok
        (tmp_path / f"c{i}.jpg").write_bytes(enc.tobytes())
        files += [tmp_path / f"o{i}.jpg", tmp_path / f"c{i}.jpg"]
        source[len(files) - 2] = source[len(files) - 1] = i
    res = check_images(files, 32, workers=1, progress=False)
    assert all(r[0] is None for r in res)
    hashes = {k: r[2] for k, r in enumerate(res)}
    cand = pairs_of(hashes, PARAMS["near_duplicate_hamming"])
    # the thumbnails made while checking (as the stage confirms) are those of the file itself
    found = set(confirm_near(cand, lambda k: unpack_thumbnails(res[k][4]), PARAMS["near_duplicate_max_mad"]))
    for k in (0, 1, len(files) - 1):
        assert all((x == y).all() for x, y in zip(unpack_thumbnails(res[k][4]), thumb(files[k])))
    planted = {(k, k + 1) for k in range(0, len(files), 2)}
    assert found == planted, (sorted(planted - found), sorted(found - planted))
    # the stage's vectorised confirmation keeps the same pairs
    th = {k: r[4] for k, r in enumerate(res)}
    assert confirm_near_array(np.array(cand), th, PARAMS["near_duplicate_max_mad"], block=7) == sorted(found)


def test_same_layout_in_other_colours_is_not_a_near_duplicate(tmp_path):
    """Two pictures with the same grey levels everywhere but other colours (as two twin dresses on
    similar backgrounds were among 10,000 images) share their pHash; the colour thumbnails keep
    them apart, while a true resized copy is still confirmed."""
    import cv2
    import numpy as np

    from datasets.neardup import near_pairs as pairs_of
    from datasets.validate import check_images

    rng = np.random.default_rng(5)
    g = cv2.GaussianBlur(rng.uniform(60, 200, (300, 300)).astype(np.float32), (0, 0), 12)
    g = (g - g.min()) / (g.max() - g.min()) * 150 + 50  # grey levels 50..200
    grey = np.repeat(g[:, :, None], 3, 2)
    # same luminance (0.114 B + 0.587 G + 0.299 R), other colour: R and B up 40, G down to compensate
    tinted = np.stack([g + 40, g - 40 * (0.299 + 0.114) / 0.587, g + 40], 2)
    for name, img in (("grey.jpg", grey), ("tinted.jpg", tinted)):
        cv2.imwrite(str(tmp_path / name), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    small = cv2.resize(cv2.imread(str(tmp_path / "grey.jpg")), (120, 120), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "copy.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 60])
    files = [tmp_path / "grey.jpg", tmp_path / "tinted.jpg", tmp_path / "copy.jpg"]
    res = check_images(files, 32, workers=1, progress=False)
    cand = pairs_of({k: r[2] for k, r in enumerate(res)}, PARAMS["near_duplicate_hamming"])
    assert (0, 1) in cand and (0, 2) in cand  # the hash alone pairs all three
    assert confirm_near(cand, lambda k: thumb(files[k]), PARAMS["near_duplicate_max_mad"]) == [(0, 2)]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_vectorised_confirmation_equals_the_pair_loop(data):
    """confirm_near_array (the stage's) keeps exactly the pairs confirm_near's loop keeps: thumbnails
    a few levels apart around max_mad, some missing (undecodable), any block size."""
    import numpy as np

    from datasets.validate import confirm_near_array, unpack_thumbnails

    n = data.draw(st.integers(2, 12))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    base = rng.integers(0, 256, 1216)
    thumbs = {}
    for i in range(n):
        spread = data.draw(st.integers(0, 30))
        t = np.clip(base + rng.integers(-spread, spread + 1, 1216), 0, 255).astype(np.uint8)
        thumbs[i * 3] = None if data.draw(st.booleans()) and i % 4 == 3 else t.tobytes()
    ids = sorted(thumbs)
    pairs = [(a, b) for k, a in enumerate(ids) for b in ids[k + 1:]]
    max_mad = data.draw(st.sampled_from([0.0, 3.0, 7.5, 10.0, 12.0, 15.25]))
    want = confirm_near(pairs, lambda i: unpack_thumbnails(thumbs[i]), max_mad)
    got = confirm_near_array(np.array(pairs), thumbs, max_mad, block=data.draw(st.integers(1, 50)))
    assert got == want
