import json

from benchmark.cli import main
from tests.fixtures_data import write_deepfashion, write_fashionai_zip

REAL = "/work/shared/real"


def test_check_real_fashionai_labels_only(capsys, tmp_path):
    rc = main(["check", "fashionai", f"{REAL}/fashionai/valid_label.csv", "--labels-only", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "18000 images/rows" in out and "rows with an 'm': 970" in out
    assert "skirt_length: 2225 (311 472 363 369 345 365)" in out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["checks"] == {"fashionai_maybe": 970} and rep["tables"]["labels"]["rows_in"] == 19269


def test_check_real_asen_folder_queries_candidates(capsys):
    assert main(["check", "fashionai", f"{REAL}/asen_splits/FashionAI", "--labels-only"]) == 0
    out = capsys.readouterr().out
    assert "skirt_length: 2225 (311 472 363 369 345 365) | 439 / 1786" in out
    assert "total: 3600 queries, 14400 candidates" in out
    assert main(["check", "darn", f"{REAL}/asen_splits/DARN", "--labels-only"]) == 0
    assert "total: 4293 queries, 17168 candidates" in capsys.readouterr().out


def test_check_not_that_dataset_exits_2(capsys, tmp_path):
    assert main(["check", "deepfashion", f"{REAL}/asen_splits/FashionAI/../../fashionai", "--labels-only"]) == 2
    p = tmp_path / "label.csv"
    p.write_text("this is,not,fashionai at all\nnor,is,this\n")
    assert main(["check", "fashionai", str(p), "--labels-only"]) == 2
    assert "label.csv:1: expected" in capsys.readouterr().err


def test_check_archive_with_images_thresholds(tmp_path, capsys):
    write_fashionai_zip(tmp_path / "fashionAI_attributes_train1.zip")
    # 1 corrupt image + 1 row without 'y' of 10 = 20%: over the default 5%
    (tmp_path / "p.yaml").write_text("validate:\n  max_bad_fraction: 0.05\n")
    assert main(["check", "fashionai", str(tmp_path / "fashionAI_attributes_train1.zip"), "--params", str(tmp_path / "p.yaml")]) == 1
    (tmp_path / "p.yaml").write_text("validate:\n  max_bad_fraction: 0.25\n")
    assert main(["check", "fashionai", str(tmp_path / "fashionAI_attributes_train1.zip"), "--params", str(tmp_path / "p.yaml")]) == 0
    out = capsys.readouterr().out
    assert "checks: corrupt_jpeg 1, fashionai_maybe 1, fashionai_no_yes 1" in out


def test_check_deepfashion_folder(tmp_path, capsys):
    write_deepfashion(tmp_path / "df", n=12)
    assert main(["check", "deepfashion", str(tmp_path / "df"), "--params", str(tmp_path / "none.yaml")]) == 1
    out = capsys.readouterr().out
    assert "unparseable lines: 1" in out and "duplicate groups: 1 exact, 1 near" in out
