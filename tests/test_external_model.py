"""A model from outside the suite (issue 27): params.yaml's ``models.<name>.module`` names the
Python module that registers it, found on the python path (PYTHONPATH, or an installed package),
and nothing of the suite is edited. The worked example: examples/mymodel (a Conditional Similarity
Network, ``fashionbench_example.csn``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from benchmark import codehash
from tests.checkout import copy_checkout, run_in, tiny_fashionai

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mymodel"  # the folder README.md puts on PYTHONPATH
MODULE = "fashionbench_example.csn"


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))  # the module stays imported: the registry holds its class


def test_build_model_imports_the_module_that_registers_it(on_path):
    from model import build_model

    torch.manual_seed(0)
    m = build_model("csn", module=MODULE, classes_per_attribute=[3, 4, 2], backbone="features:plain8",
                    pretrained=False, embed_dim=16)
    x = torch.randn(6, 128, 4, 4)  # 2 triplets of the shared trunk's maps
    out = m({"images": x, "attribute": torch.tensor([0, 2])})
    assert out["loss"].requires_grad and set(out) == {"loss", "loss_triplet", "loss_mask"}
    emb = m.embed(x[:2]).attribute
    assert emb.shape == (2, 3, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(2, 3))
    assert "Veit" in type(m).reference


def test_a_module_that_is_not_found_or_registers_another_name_is_a_clear_error(on_path):
    from model import build_model

    with pytest.raises(ModuleNotFoundError, match=r"params.yaml models\.mine\.module: cannot import 'mypkg\.mine'.*PYTHONPATH"):
        build_model("mine", module="mypkg.mine", classes_per_attribute=[2])
    with pytest.raises(KeyError, match=r"models\.csn2\.module: 'fashionbench_example\.csn' does not register a model named 'csn2'"):
        build_model("csn2", module=MODULE, classes_per_attribute=[2])


def test_code_record_of_a_model_from_outside(tmp_path, on_path):
    """data/code/model/csn.json: the example's file and the suite's files it imports, each under the
    code stage's deps (dvc.yaml's `examples`), so an edit of the example reruns its stages only."""
    recs = codehash.write_records(ROOT, tmp_path, modules={"csn": MODULE})
    rec = recs["model/csn.json"]
    assert rec["defined_in"] == "examples/mymodel/fashionbench_example/csn.py" and rec["module"] == MODULE
    assert set(rec["files"]) == {"examples/mymodel/fashionbench_example/csn.py", "model/__init__.py",
                                 "model/registry.py", "model/base.py", "model/backbone.py", "model/losses.py"}
    code_dirs = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["code"]["deps"]
    assert all(any(f.startswith(d + "/") for d in code_dirs) for f in rec["files"])
    assert json.loads((tmp_path / "model" / "csn.json").read_text()) == rec
    # the train stage's fingerprint hashes the same files: a checkpoint of other code is not resumed
    from benchmark.train_fingerprint import code_files

    assert {p.relative_to(ROOT).as_posix() for p in code_files("csn", MODULE)} >= set(rec["files"])


def test_the_default_params_example_is_recorded_through_its_namespace_path(tmp_path, on_path):
    """params.yaml's csn names the example by its path from the repository root
    (examples.mymodel.fashionbench_example.csn; `examples` and `examples/mymodel` are folders
    without __init__.py): its record holds the same files, and the one file imported under both
    names is one registered model, not a double registration."""
    import importlib

    from model.registry import build_model

    module = yaml.safe_load((ROOT / "params.yaml").read_text())["models"]["csn"]["module"]
    assert module == "examples.mymodel.fashionbench_example.csn"
    assert [p.relative_to(ROOT).as_posix() for p in codehash.module_files(ROOT, module)] == [
        "examples/mymodel/fashionbench_example/__init__.py", "examples/mymodel/fashionbench_example/csn.py"]
    rec = codehash.write_records(ROOT, tmp_path, modules={"csn": module})["model/csn.json"]
    assert rec["defined_in"] == "examples/mymodel/fashionbench_example/csn.py"
    assert {"examples/mymodel/fashionbench_example/csn.py", "model/base.py", "model/losses.py"} <= set(rec["files"])
    importlib.import_module(MODULE)
    importlib.import_module(module)
    m = build_model("csn", module=module, classes_per_attribute=[2, 3], backbone="features:plain8", pretrained=False)
    assert type(m).__name__ == "CSN"
    from model.registry import register_model

    with pytest.raises(ValueError, match="registered twice"):
        register_model("csn")(type("CSN", (), {}))  # another definition of the name


def test_a_module_outside_the_repository_is_recorded_by_its_import_path(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "outpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("SCALE = 2\n")
    (pkg / "net.py").write_text("from outpkg.helper import SCALE\nfrom model.registry import register_model\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    rec = codehash.external_record(ROOT, "outnet", "outpkg.net")
    assert rec["defined_in"] == "outpkg/net.py"
    assert set(rec["files"]) == {"outpkg/net.py", "outpkg/helper.py", "model/__init__.py", "model/registry.py"}
    with pytest.raises(SystemExit, match="cannot find 'outpkg.nope'"):
        codehash.external_record(ROOT, "x", "outpkg.nope")


def test_model_card_of_the_example(on_path):
    """The card's numbers, checked by hand: CSN's head on the shared trunk's pooled map is one FC
    (c = 128 -> D): 2 c D FLOPs (the masks are elementwise: torch counts no FLOPs for them)."""
    from benchmark.train_card import model_card

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"] = {"csn": {"module": MODULE, "embed_dim": 32, "lr": 3e-3}}
    card = model_card("csn", [3, 4], params, params["models"]["csn"])
    assert card["parameters"]["head"] == 128 * 32 + 32 + 2 * 32 and card["parameters"]["trunk"] > 0
    assert card["flops"]["head"] == 2 * 128 * 32 and card["flops"]["trunk"] > 100 * card["flops"]["head"]
    assert card["flops"]["total"] == card["flops"]["head"] + card["flops"]["trunk"]
    assert card["embedding_size"] == 32 and card["class_embedding_size"] is None
    assert card["image_size"] == params["train"]["profiles"]["twin"]["image_size"] and "Veit" in card["reference"]


def test_no_stage_names_a_model_by_hand(tmp_path):
    """Every stage that reads a model's files gets them from the matrix over params.yaml's
    `models` or from a folder: with a model added to params.yaml, dvc.yaml (unedited) gives it its
    train and evaluate stages, and no stage outside that matrix names it or any other model
    (the report's deps were once a hand list of 24 metrics files)."""
    from benchmark import dvcfile

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"]["csn"] = {"module": MODULE, "embed_dim": 64}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stages = dvcfile.expanded_stages(ROOT, tmp_path / "params.yaml")
    for st in ("train", "evaluate"):
        assert f"{st}@fashionai-csn" in stages, st
    assert "data/code/model/csn.json" in stages["train@fashionai-csn"]["deps"]
    models = set(params["models"])
    for full, st in stages.items():
        if isinstance(st["item"], dict) and "model" in st["item"]:
            continue
        named = {d for d in st["deps"] for m in models if f"/{m}/" in f"/{d}/" or d.endswith(f"/{m}.json")}
        assert not named, (full, sorted(named))
    report = stages["report"]["deps"]
    for key in ("deepfashion", "fashionai", "darn"):
        assert {f"data/{key}/eval", f"models/{key}", f"data/{key}/attention"} <= set(report)


def _run(args, cwd, **env):
    return run_in(args, cwd, timeout=900, **env)


@pytest.mark.slow
def test_the_example_through_dvc_repro_onto_the_page(tmp_path):
    """examples/mymodel/README.md, followed on a tiny FashionAI twin: the model added to params.yaml
    with its `module`, its folder on PYTHONPATH, `dvc repro report`: it is trained, embedded,
    evaluated, on the leaderboard and the page with its card. One dataset (the twin's dvc.yaml
    keeps fashionai alone), two models, one seed, one epoch."""
    work = copy_checkout(tmp_path / "repo")
    params = tiny_fashionai(yaml.safe_load((work / "params.yaml").read_text()))
    # README's entry, beside one of the suite's models
    params["models"] = {"asen": params["models"]["asen"],
                        "csn": {"module": MODULE, "embed_dim": {"paper": 512, "twin": 64},
                                "lr": {"paper": 1.0e-4, "twin": 3.0e-3}, "lr_decay": 0.985, "margin": 0.2}}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = yaml.safe_load((work / "dvc.yaml").read_text())  # the tiny twin: one dataset
    dvc["vars"] = [{"dataset_keys": ["fashionai"]}]
    dvc["stages"]["report"]["deps"] = [d for d in dvc["stages"]["report"]["deps"]
                                       if "deepfashion" not in d and "darn" not in d]
    (work / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))
    assert _run(["git", "init", "-q"], work).returncode == 0
    pythonpath = str(work / "examples" / "mymodel")  # README: PYTHONPATH=$PWD/examples/mymodel

    out = _run(["dvc", "repro", "report"], work, PYTHONPATH=pythonpath)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for name in ("train@fashionai-csn", "evaluate@fashionai-csn", "leaderboard@fashionai"):
        assert f"Running stage '{name}'" in out.stdout, name
    assert json.loads((work / "data/code/model/csn.json").read_text())["defined_in"] == \
        "examples/mymodel/fashionbench_example/csn.py"
    md = (work / "reports/fashionai.md").read_text()
    from benchmark.report import parse_table

    header, rows = parse_table(md, "MAP@all per attribute")
    row = {r[0]: dict(zip(header, r)) for r in rows}["csn"]
    metrics = json.loads((work / "reports/fashionai/csn/metrics.json").read_text())
    assert float(row["MAP@all"]) == pytest.approx(metrics["test"]["map_all"]["overall"], abs=0.006)
    assert "csn" in [r[0] for r in parse_table(md, "Leaderboard")[1]]
    assert "| ASEN − csn |" in md or "| csn − ASEN |" in md
    card = json.loads((work / "reports/fashionai/csn/card.json").read_text())
    assert card["embedding_size"] == 64 and card["flops"]["head"] == 2 * 128 * 64 and len(card["seconds_per_seed"]) == 1
    cards = {r[0]: r for r in parse_table((work / "reports/models.md").read_text(), "FashionAI")[1]}
    assert set(cards) == {"ASEN", "csn"} and "Veit" in cards["csn"][-1]

    # a metrics file that changes reruns the report (its deps are the eval folders, which hold it)
    status = _run(["dvc", "status", "report"], work, PYTHONPATH=pythonpath)
    assert status.returncode == 0 and "changed" not in status.stdout, status.stdout
    f = work / "data/fashionai/eval/csn/metrics.json"
    f.write_text(f.read_text().replace("{", "{\"edited\": 1, ", 1))
    status = _run(["dvc", "status", "report"], work, PYTHONPATH=pythonpath)
    assert "data/fashionai/eval" in status.stdout, status.stdout
    # an edit of the example reruns its own stages, not the suite's model's
    src = work / "examples/mymodel/fashionbench_example/csn.py"
    src.write_text(src.read_text() + "# an edit\n")
    status = _run(["dvc", "status", "code"], work, PYTHONPATH=pythonpath)
    assert "modified:" in status.stdout and "examples" in status.stdout, status.stdout  # DVC watches the example
    assert _run(["dvc", "repro", "code"], work, PYTHONPATH=pythonpath).returncode == 0  # the cheap code stage
    status = _run(["dvc", "status"], work, PYTHONPATH=pythonpath)
    assert "data/code/model/csn.json" in status.stdout, status.stdout
    assert "train@fashionai-csn" in status.stdout and "train@fashionai-asen" not in status.stdout, status.stdout
