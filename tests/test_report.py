"""The report's tables are read back and checked against the metrics files they came from."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from benchmark import report

ATTRS = ["skirt_length", "sleeve_length", "coat_length", "pant_length", "collar_design", "lapel_design",
         "neckline_design", "neck_design"]


def _metrics(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sec = lambda: {"overall": float(rng.uniform(10, 90)), "macro": float(rng.uniform(10, 90)),  # noqa: E731
                   **{a: float(rng.uniform(10, 90)) for a in ATTRS}}
    split = lambda: {"map_all": sec(), "map_100": sec(), "recall_100": sec(),  # noqa: E731
                     "queries": {"used": 120, "left_out": 3, "no_relevant": 3},
                     "cooccurring": {"map_all": 50.0, "queries": 40, "classes": 6, "pairs": 4}}
    return {"test": split(), "val": split(),
            "class_cap": {"max_classes": 16, "gamma": 0.8, "binding_pairs": 7 + seed, "pairs": 1000, "binding_share": (7 + seed) / 1000},
            "checkpoint": {"policy": "best_val", "epoch": 3 + seed, "epochs_run": [5 + seed, 12], "max_epochs": 12}}


def _write_examples(root, model):
    d = root / "data" / "fashionai" / "eval" / model
    d.mkdir(parents=True, exist_ok=True)
    a = root / "data" / "fashionai" / "attention" / model
    a.mkdir(parents=True)
    rng = np.random.default_rng(0)
    (a / "names.json").write_text(json.dumps({"attributes": ATTRS, "classes": {"0/1": "Short Length"}}))
    np.savez_compressed(a / "attention.npz", image_id=np.arange(3), pixels=rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8),
                        attribute_id=np.array([0, 1, 2]), class_id=np.array([1, 2, 0]),
                        attribute_map=rng.random((3, 4, 4)), class_map=rng.random((3, 4, 4)))
    np.savez_compressed(d / "retrieval.npz", query_image_id=np.array([1, 2]), attribute_id=np.array([0, 3]),
                        top_image_id=np.array([[3, 4, 5], [5, 6, -1]]), top_relevant=np.array([[1, 0, 1], [0, 1, 0]], bool),
                        ap_all=np.array([0.5, 0.4]), shown_image_id=np.arange(1, 7),
                        pixels=rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    (d / "names.json").write_text(json.dumps({"attributes": ATTRS, "classes": {"0/1": "Short Length"}}))


@pytest.fixture
def reports_tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = {}
    for i, model in enumerate(["asen", "m3net"]):
        d = tmp_path / "data" / "fashionai" / "eval" / model  # the evaluate stage's copy, which the report reads
        d.mkdir(parents=True)
        m = _metrics(i)
        (d / "metrics.json").write_text(json.dumps(m))
        ci = {"test": {k: {"overall": m["test"][k]["overall"], "low": m["test"][k]["overall"] - 1,
                           "high": m["test"][k]["overall"] + 2} for k in ("map_all", "map_100", "recall_100")}}
        (d / "metrics_ci.json").write_text(json.dumps(ci))
        written[model] = (m, ci)
    (tmp_path / "reports" / "fashionai").mkdir(parents=True)
    for model in ("m3net", "modc"):
        _write_examples(tmp_path, model)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"report": {"examples": 2},
                                                          "acquire": {"fashionai": {"source": "twin"},
                                                                      "darn": {"source": "local"}}}))
    return tmp_path, written


def _split_cell(c: str):
    m = re.fullmatch(r"([\d.]+|–)(?: \(([\d.]+)\))?", c)
    assert m, c
    return (None if m[1] == "–" else float(m[1])), (float(m[2]) if m[2] else None)


def test_tables_match_metrics_and_paper(reports_tree):
    root, written = reports_tree
    assert report.main([]) == 0
    md = (root / "reports" / "fashionai.md").read_text()
    paper = json.loads(report.PAPER_RESULTS.read_text())["datasets"]["fashionai"]["models"]
    header, rows = report.parse_table(md, "MAP@all per attribute")
    assert header[1:9] == ATTRS and header[9:] == ["MAP@all", "MAP@100", "Recall@100"]
    by_label = {r[0]: r for r in rows}
    assert list(by_label) == list(report.MODELS.values())
    for model in ("asen", "m3net"):
        m = written[model][0]["test"]
        row = by_label[report.MODELS[model]]
        for a, c in zip(ATTRS, row[1:9]):
            got, pap = _split_cell(c)
            assert got == round(m["map_all"][a], 2)
            assert pap == paper[model]["map_all"][report.norm(a)]
        for (k, _), c in zip(report.OVERALL, row[9:]):
            got, pap = _split_cell(c)
            assert got == round(m[k]["overall"], 2) and pap == paper[model][k]["overall"]
    # a model not evaluated: dashes beside the paper's numbers
    assert _split_cell(by_label["MODC"][-1]) == (None, paper["modc"]["recall_100"]["overall"])
    _, ci_rows = report.parse_table(md, "95% bootstrap")
    ci_row = {r[0]: r for r in ci_rows}["M3-Net"]
    lo, hi = (float(x) for x in ci_row[1].split(" – "))
    assert (lo, hi) == (round(written["m3net"][1]["test"]["map_all"]["low"], 2),
                        round(written["m3net"][1]["test"]["map_all"]["high"], 2))
    assert "not comparable with the paper" in md and "Twin data" in md
    # summary: query counts, checkpoint, the attribute-level column and its M3-Net_c footnote
    header, rows = report.parse_table(md, "Summary per model")
    srow = {r[0]: dict(zip(header, r)) for r in rows}
    assert srow["M3-Net"]["test queries"] == "123"
    assert srow["M3-Net"]["with no relevant candidate (R = 0)"] == "3"
    assert srow["M3-Net"]["left out of the means"] == "3"
    assert "mean-pooled" in md and "`evaluate.no_relevant: leave_out`" in md
    assert "ASEN 0.70% (7 of 1000)" in md and "M3-Net 0.80% (8 of 1000)" in md
    _, ck = report.parse_table(md, "Checkpoint evaluated")
    ck = {r[0]: r[1:] for r in ck}
    assert ck["ASEN"] == ["best_val", "3", "5, 12*", "12"] and ck["M3-Net"] == ["best_val", "4", "6, 12*", "12"]
    assert ck["MODC"] == ["–"] * 4 and ck["M3-Net (Eq. 11 only)"] == ["–"] * 4  # a run at its most is starred


@pytest.mark.parametrize("source, profile, comparable, mark", [
    ("twin", "twin", False, "Twin data"),
    ("twin", "paper", False, "Twin data"),
    ("local", "twin", False, "Real data, `twin` training profile"),
    ("url", "paper", True, "paper's training recipe"),
])
def test_banner_follows_source_and_profile(reports_tree, repo_params, source, profile, comparable, mark):
    root, _ = reports_tree
    train = {**repo_params["train"], "profile": profile}  # the shipped profiles: the paper's is the recipe
    (root / "params.yaml").write_text(yaml.safe_dump({"report": {"examples": 2}, "train": train,
                                                      "models": repo_params["models"],
                                                      "acquire": {"darn": {"source": source}}}))
    report.main([])
    md = (root / "reports" / "darn.md").read_text()
    head = md.split("## ")[0]  # the title and banner, before the first table
    assert mark in head
    assert ("not comparable" in head) is (not comparable)


def test_zero_policy_is_named_on_the_page(reports_tree):
    root, _ = reports_tree
    (root / "params.yaml").write_text(yaml.safe_dump({"report": {"examples": 2}, "evaluate": {"no_relevant": "zero"},
                                                      "acquire": {"fashionai": {"source": "twin"}}}))
    report.main([])
    md = (root / "reports" / "fashionai.md").read_text()
    assert "counted as AP = 0" in md and "`evaluate.no_relevant: zero`" in md


def test_figures_written(reports_tree):
    root, _ = reports_tree
    report.main([])
    for name in ("fashionai_attention.png", "fashionai_retrieval.png"):
        p = root / "reports" / "figures" / name
        assert p.exists() and p.stat().st_size > 5000
        assert f"figures/{name}" in (root / "reports" / "fashionai.md").read_text()
    assert not (root / "reports" / "figures" / "darn_attention.png").exists()


def test_paper_results_overall_match_protocol_paper_results():
    d = json.loads(report.PAPER_RESULTS.read_text())["datasets"]
    # docs/PROTOCOL.md#paper-results, three spot checks per dataset
    assert d["deepfashion"]["models"]["m3net"]["map_100"]["overall"] == 35.08
    assert d["fashionai"]["models"]["modc"]["recall_100"]["overall"] == 30.26
    assert d["darn"]["models"]["asenpp"]["map_all"]["overall"] == 55.78
    for key, t in d.items():
        assert set(report.MODELS) - set(t["models"]) == {"m3net_eq11"}  # the paper has no literal-Eq. 11 run
        for m in t["models"]:
            assert set(t["models"][m]["map_all"]) == set(t["attributes"]) | {"overall"}, (key, m)


def _board(models=("asen", "m3net")) -> dict:
    e = lambda m: {"mean": m, "sd": 0.5, "low": m - 1.5, "high": m + 1.5}  # noqa: E731
    return {"chance": {"map_all": 20.0, "map_100": 18.0, "recall_100": 40.0},
            "queries": {"test": 1200, "test_left_out": 4}, "candidates": {"min": 210, "median": 240.0},
            "models": {m: {"seeds": [0, 1, 2], "map_all": e(30.0 + 10 * i), "map_100": e(25.0), "recall_100": e(60.0),
                           "multi_class_map_all": 28.0, "single_class_map_all": 31.0,
                           **({"pointing": {"accuracy": 40.0, "low": 35.0, "high": 45.0, "chance": 9.0, "n": 300}}
                              if m == "m3net" else {})}
                       for i, m in enumerate(models)},
            "pairs": {"asen_vs_m3net": {"delta": -10.0, "p": 0.0001, "p_adjusted": 0.0001, "significant": True, "queries": 1200}}}


def test_leaderboard_section_and_figure(reports_tree):
    root, _ = reports_tree
    (root / "reports" / "fashionai" / "leaderboard.json").write_text(json.dumps(_board()))
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["leaderboard"] = {"alpha": 0.05}
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    report.main([])
    md = (root / "reports" / "fashionai.md").read_text()
    header, rows = report.parse_table(md, "Leaderboard")
    by = {r[0]: dict(zip(header, r)) for r in rows}
    assert by["chance"]["MAP@all"] == "20.00"
    assert by["M3-Net"]["MAP@all"] == "40.00 ± 0.50 [38.50, 41.50]"
    assert by["M3-Net"]["pointing game (%)"] == "40.00 [35.00, 45.00], chance 9.00"
    _, pg = report.parse_table(md, "Pointing game")
    assert {r[0]: r for r in pg}["M3-Net"][1:] == ["40.00", "35.00 – 45.00", "9.00", "300"]
    assert {r[0]: r for r in pg}["ASEN"][1:] == ["–"] * 4
    assert by["ASEN"]["MAP@all, multi-class queries"] == "28.00"
    assert "1 of 1 differences are significant at 0.05" in md and "| ASEN − M3-Net | -10.00 | 0.0001 | 0.0001 | **yes** |" in md
    assert (root / "reports" / "figures" / "leaderboard.png").stat().st_size > 5000
    assert "figures/leaderboard.png" in md
    # a dataset without a leaderboard has no such section, but the overview figure
    assert "## Leaderboard" not in (root / "reports" / "darn.md").read_text()


def test_the_control_row_and_models_not_above_it(reports_tree):
    root, _ = reports_tree
    board = _board()
    board["attribute_blind"] = {"seeds": [0, 1, 2], "map_all": {"mean": 35.0, "sd": 0.2, "low": 34.0, "high": 36.0},
                                "map_100": {"mean": 20.0, "sd": 0.1, "low": 19.0, "high": 21.0},
                                "recall_100": {"mean": 50.0, "sd": 0.1, "low": 49.0, "high": 51.0},
                                "multi_class_map_all": 33.0, "single_class_map_all": 36.0}
    board["above_control"] = {"asen": False, "m3net": True}
    board["control_pairs"] = {"asen_vs_attribute_blind": {"delta": -5.0, "p": 0.001, "significant": True},
                              "m3net_vs_attribute_blind": {"delta": 5.0, "p": 0.002, "significant": True}}
    board["pairs"]["asen_vs_m3net"].update(detectable=2.4)
    (root / "reports" / "fashionai" / "leaderboard.json").write_text(json.dumps(board))
    report.main([])
    md = (root / "reports" / "fashionai.md").read_text()
    header, rows = report.parse_table(md, "Leaderboard")
    by = {r[0]: dict(zip(header, r)) for r in rows}
    assert by["attribute-blind (control)"]["MAP@all"] == "35.00 ± 0.20 [34.00, 36.00]"
    assert [r[0] for r in rows][:2] == ["chance", "attribute-blind (control)"]
    assert by["ASEN"]["MAP@all"].endswith("(not significantly above the control)")
    assert "control" not in by["M3-Net"]["MAP@all"]
    assert "ASEN -5.00 (p 0.0010); M3-Net 5.00 (p 0.0020)" in md
    assert "Not significantly better than the control: ASEN." in md
    assert "median 2.40 points (from 2.40 to 2.40)" in md


def test_a_model_outside_the_papers_gets_its_rows_pairs_and_plot(reports_tree, monkeypatch):
    """Issue 27: a new key of params.yaml's models (here `csn`, from outside the suite) needs no edit
    of the report: the evaluate stage's folder names it, and it gets a row in every table, its
    pairwise tests and a place in the leaderboard plot."""
    root, written = reports_tree
    d = root / "data" / "fashionai" / "eval" / "csn"
    d.mkdir(parents=True)
    m = _metrics(7)
    (d / "metrics.json").write_text(json.dumps(m))
    board = _board(("asen", "m3net", "csn"))
    board["pairs"]["csn_vs_m3net"] = {"delta": -3.0, "p": 0.02, "p_adjusted": 0.04, "significant": True, "queries": 1200}
    (root / "reports" / "fashionai" / "leaderboard.json").write_text(json.dumps(board))
    from benchmark import figures

    plotted = {}
    real = figures.leaderboard_figure
    monkeypatch.setattr(figures, "leaderboard_figure",
                        lambda boards, labels, *a: plotted.update(labels) or real(boards, labels, *a))
    assert report.main([]) == 0
    md = (root / "reports" / "fashionai.md").read_text()
    header, rows = report.parse_table(md, "MAP@all per attribute")
    by = {r[0]: dict(zip(header, r)) for r in rows}
    assert list(by)[-1] == "csn" and list(by)[:-1] == list(report.MODELS.values())  # after the paper's models
    assert float(by["csn"]["MAP@all"]) == pytest.approx(m["test"]["map_all"]["overall"], abs=0.006)
    _, lb = report.parse_table(md, "Leaderboard")
    assert "csn" in [r[0] for r in lb]
    assert "| csn − M3-Net | -3.00 | 0.0200 | 0.0400 | **yes** |" in md
    assert plotted.get("csn") == "csn"
    for section in ("Summary per model", "Checkpoint evaluated", "Co-occurring classes"):
        assert "csn" in [r[0] for r in report.parse_table(md, section)[1]], section
    # the control's folder is no model row; a dataset where csn was not evaluated has no csn row
    (root / "data" / "fashionai" / "eval" / "attribute_blind").mkdir()
    (root / "data" / "fashionai" / "eval" / "attribute_blind" / "metrics.json").write_text(json.dumps(m))
    assert "attribute_blind" not in report.page_models("fashionai") and "csn" not in report.page_models("darn")


def test_metrics_are_read_from_the_eval_folder_the_stage_depends_on(reports_tree):
    """The report stage's deps are the eval folders (dvc.yaml), so it reads the evaluate stage's copy
    there: a stale reports/<key>/<model>/metrics.json is not what the page shows."""
    root, written = reports_tree
    stale = tmp = root / "reports" / "fashionai" / "asen"
    tmp.mkdir(parents=True)
    (stale / "metrics.json").write_text(json.dumps(_metrics(99)))
    report.main([])
    _, rows = report.parse_table((root / "reports" / "fashionai.md").read_text(), "MAP@all per attribute")
    asen = {r[0]: r for r in rows}["ASEN"]
    assert float(asen[9].split()[0]) == pytest.approx(written["asen"][0]["test"]["map_all"]["overall"], abs=0.006)


def test_model_cards_page(reports_tree):
    """reports/models.md: each model's card.json (the train stage's), one table per dataset."""
    root, _ = reports_tree
    card = {"model": "csn", "reference": "Veit et al., CVPR 2017", "image_size": 64, "trunk": "shared",
            "parameters": {"head": 8768, "trunk": 294000}, "flops": {"head": 16384, "trunk": 48070656, "total": 48087040},
            "embedding_size": 64, "class_embedding_size": None, "seconds_per_seed": [12.4, 15.6], "device": "cpu"}
    for model in ("csn", "m3net"):
        (root / "data" / "fashionai" / "eval" / model).mkdir(parents=True, exist_ok=True)
        (root / "data" / "fashionai" / "eval" / model / "metrics.json").write_text(json.dumps(_metrics(1)))
        d = root / "models" / "fashionai" / model  # the train output's card: no timing (byte-reproducible)
        d.mkdir(parents=True)
        c = {**card, "model": model, "class_embedding_size": 128 if model == "m3net" else None}
        (d / "card.json").write_text(json.dumps({k: v for k, v in c.items() if k not in ("seconds_per_seed", "device")}))
        if model == "csn":  # the committed copy carries the timing
            (root / "reports" / "fashionai" / model).mkdir(parents=True)
            (root / "reports" / "fashionai" / model / "card.json").write_text(json.dumps(c))
    report.main([])
    md = (root / "reports" / "models.md").read_text()
    header, rows = report.parse_table(md, "FashionAI")
    by = {r[0]: dict(zip(header, r)) for r in rows}
    assert list(by) == ["M3-Net", "csn"]
    assert by["csn"]["parameters (head + trunk)"] == "8.77 k + 294.00 k"
    assert by["csn"]["FLOPs per image (head + trunk)"] == "16.38 k + 48.07 M at 64 px"
    assert by["csn"]["embedding size"] == "64" and by["M3-Net"]["embedding size"] == "64 (class level 128)"
    assert by["csn"]["training time per seed (s)"] == "12, 16 (cpu)" and by["M3-Net"]["training time per seed (s)"] == "–"
    assert by["csn"]["reference"] == "Veit et al., CVPR 2017"
    assert "## DARN" not in md  # no card there
