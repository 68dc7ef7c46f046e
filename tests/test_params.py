"""params.yaml reading: one loader for every stage, a clear message for a broken file."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from datasets.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_loads_a_mapping(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("splits:\n  seed: 7\n")
    assert load_params(p) == {"splits": {"seed": 7}}


@pytest.mark.parametrize("text, match", [
    ("splits:\n  seed: [7\n", r"params.yaml:\d+: not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
    ("", "expected a mapping"),
])
def test_broken_params_name_the_file(tmp_path, text, match):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    with pytest.raises(ParamsError, match=match):
        load_params(p)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")


@pytest.mark.parametrize("module", ["datasets.splits", "benchmark.leaderboard"])
def test_a_stage_given_broken_params_exits_with_one_line(tmp_path, module):
    p = tmp_path / "params.yaml"
    p.write_text("splits: {seed: 7\n")
    out = subprocess.run([sys.executable, "-m", module, "darn", "--params", str(p)], cwd=tmp_path,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and f"{p}:" in out.stderr and "not valid YAML" in out.stderr


def _imported_packages(f: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a file, function-level ones included."""
    out = []
    for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def test_nothing_in_datasets_or_model_imports_benchmark():
    """The packages import in one direction (docs/ARCHITECTURE.md): benchmark -> datasets, model;
    datasets and model import neither benchmark nor each other."""
    forbidden = {"datasets": {"benchmark", "model"}, "model": {"benchmark", "datasets"}}
    offenders = []
    for pkg, banned in forbidden.items():
        for f in sorted((ROOT / pkg).rglob("*.py")):
            offenders += [f"{f.relative_to(ROOT)}:{line} imports {top}"
                          for line, top in _imported_packages(f) if top in banned]
    assert not offenders, offenders


# ------------------------------------------------------------------------------------ the schema

def _suite_params() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _write(tmp_path, params) -> Path:
    import yaml

    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


def test_the_suites_params_validate():
    from datasets.params_schema import MODEL_SCHEMAS, validate

    params = _suite_params()
    validate(params)
    assert {m for m, body in params["models"].items() if "module" not in body} <= set(MODEL_SCHEMAS)
    assert not any("variant" in m for m in params["models"].values())  # the registry name fixes the branch


@pytest.mark.parametrize("edit, match", [
    (lambda p: p["models"]["m3net"].update(lambda_ccc=0.5),
     r"params.yaml: models\.m3net\.lambda_ccc: unknown key; did you mean `lambda_cc`\?"),
    (lambda p: p["validate"].update(max_bad_fracton=0.1),
     r"validate\.max_bad_fracton: unknown key; did you mean `max_bad_fraction`\?"),
    (lambda p: p["train"].update(seeds="zero"), r"train\.seeds: expected a non-empty list.*got 'zero'"),
    (lambda p: p["train"].update(seeds=[0, 0]), r"train\.seeds: expected distinct values"),
    (lambda p: p["validate"].update(max_bad_fraction=5), r"validate\.max_bad_fraction: expected a number in \[0, 1\], got 5"),
    (lambda p: p["splits"].update(query_fraction=-0.1), r"splits\.query_fraction: expected a number in \[0, 1\]"),
    (lambda p: p["twins"]["defects"].update(darn_404=1.5), r"twins\.defects\.darn_404: expected"),
    (lambda p: p["train"].update(profile="twn"), r"train\.profile: expected one of .*twin.*did you mean `twin`"),
    (lambda p: p["train"]["profiles"]["twin"].update(checkpoint="best"), r"checkpoint: expected one of last \| best_val"),
    (lambda p: p["evaluate"].update(relevance="some"), r"evaluate\.relevance: expected one of all \| any"),
    (lambda p: p["acquire"]["darn"].update(source="web"), r"acquire\.darn\.source: expected one of twin \| local \| url \| asen"),
    (lambda p: p["train"]["profiles"]["paper"].update(epochs=0), r"train\.profiles\.paper\.epochs: expected an integer >= 1"),
    (lambda p: p["models"]["m3net"]["lr"].update(papr=1e-4), r"models\.m3net\.lr\.papr: unknown key; did you mean `paper`"),
    (lambda p: p["models"].update(m3nte={}), r"models\.m3nte: unknown key; did you mean `m3net`"),
    # a model from outside model/ (issue 27): `module` is what admits an unknown name
    (lambda p: p["models"].update(csn={"embed_dim": 64}),
     r"models\.csn: unknown key.*; a model from outside the suite names the module that registers it: `module: "),
    (lambda p: p["models"].update(csn={"module": "fashionbench_example/csn.py"}),
     r"models\.csn\.module: expected a Python import path \(mypkg\.mymodel\), got 'fashionbench_example/csn.py'"),
    (lambda p: p["models"].update(csn={"module": "fashionbench_example.csn", "lr": {"twin": -1.0}}),
     r"models\.csn\.lr\.twin: expected a number > 0"),
    (lambda p: p["models"].update({"my-model": {"module": "x.y"}}), r"models\.my-model: a model name is letters"),
])
def test_the_schema_refuses_with_the_key_path(tmp_path, edit, match):
    params = _suite_params()
    edit(params)
    with pytest.raises(ParamsError, match=match):
        load_params(_write(tmp_path, params))


def test_a_partial_file_is_checked_section_by_section(tmp_path):
    assert load_params(_write(tmp_path, {"evaluate": {"bootstrap": 10}}))["evaluate"]["bootstrap"] == 10
    with pytest.raises(ParamsError, match=r"evaluate\.bootstrap: expected an integer >= 1, got 0"):
        load_params(_write(tmp_path, {"evaluate": {"bootstrap": 0}}))


def test_the_m3net_family_is_written_once():
    """YAML merge keys (<<: *m3net): the family's shared numbers once, each model as before."""
    text = (ROOT / "params.yaml").read_text()
    assert text.count("prototype_momentum: 0.9") == 2  # the M3-Net family's and MODC's
    m = _suite_params()["models"]
    assert m["m3net_a"] == m["m3net_c"] == m["m3net"]
    assert m["m3net_eq11"] == {**m["m3net"], "lambda_ac": 0.0, "lambda_ai": 0.0}


def test_keyed_values_resolve_in_one_place():
    from datasets.params_schema import resolve, resolve_model_params, split_model_params

    params = _suite_params()
    mp = resolve_model_params(params, "m3net", "deepfashion")
    assert (mp["lr"], mp["embed_dim"], mp["w_p"]) == (3.0e-3, 128, 100)
    params["train"]["profile"] = "paper"
    pp = resolve_model_params(params, "asenpp", "darn")
    assert (pp["lr"], pp["local_backbone"], pp["phase_epochs"]) == (1.0e-4, "resnet34_layer3", [50, 20])
    assert resolve({"deepfashion": 10, "fashionai": 1, "darn": 1}, dataset="deepfashion") == 10
    with pytest.raises(KeyError, match="no value for the dataset 'darn'"):
        resolve({"deepfashion": 10}, dataset="darn")
    model_kw, trainer = split_model_params(mp)
    assert set(trainer) == {"lr", "lr_decay"} and "lr" not in model_kw and model_kw["lambda_cc"] == 1.0


def test_model_constructors_refuse_an_unknown_keyword():
    torch = pytest.importorskip("torch")  # noqa: F841
    from model import build_model

    with pytest.raises(TypeError, match="lambda_ccc"):
        build_model("m3net", classes_per_attribute=[2, 3], backbone="plain8", pretrained=False, lambda_ccc=0.5)
    with pytest.raises(TypeError, match="lr"):
        build_model("asen", classes_per_attribute=[2, 3], backbone="plain8", pretrained=False, lr=1e-4)


@pytest.mark.parametrize("module, args", [("benchmark.train", ["fashionai", "m3net"]), ("datasets.twins", ["darn"])])
def test_a_stage_given_a_misspelt_key_exits_with_one_line(tmp_path, module, args):
    import time

    params = _suite_params()
    params["models"]["m3net"]["lambda_ccc"] = 0.5
    _write(tmp_path, params)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 1 and time.monotonic() - t0 < 30
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == ["params.yaml: models.m3net.lambda_ccc: unknown key; did you mean `lambda_cc`?"]


DVC = Path(sys.executable).with_name("dvc")


@pytest.mark.skipif(__import__("shutil").which("git") is None or not DVC.exists(), reason="needs git and dvc")
def test_dvc_exp_run_with_a_misspelt_key_fails_and_names_it(tmp_path):
    """`dvc exp run -S models.m3net.lambda_ccc=0.5` in a copy of the repository (tracked and new
    files, no results): DVC refuses a key params.yaml lacks, and with `+` (DVC adds it) the
    cheapest stage that reads params (twins@darn) refuses it before any work; both name the key."""
    import os
    import shutil
    import time

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    work = tmp_path / "repo"
    for f in files:
        if f and not f.startswith(("reports/", "dvc.lock")) and (ROOT / f).is_file():
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, work / f)
    env = dict(os.environ, PATH=f"{DVC.parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")

    def run(*cmd):
        return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=120)

    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        assert run(*cmd).returncode == 0, cmd
    for setting in ("models.m3net.lambda_ccc=0.5", "+models.m3net.lambda_ccc=0.5"):
        t0 = time.monotonic()
        out = run(str(DVC), "exp", "run", "-S", setting, "twins@darn")
        assert out.returncode != 0 and time.monotonic() - t0 < 60, out.stdout + out.stderr
        assert "models.m3net.lambda_ccc" in out.stdout + out.stderr, out.stdout + out.stderr
    assert "did you mean `lambda_cc`?" in out.stdout + out.stderr  # the stage's schema, not DVC's parser
    assert "Traceback" not in out.stdout + out.stderr
    assert not (work / "data" / "twins" / "darn").exists()


def test_a_model_from_outside_the_suite_is_declared_by_its_module(tmp_path):
    """Issue 27: ``models.<name>.module`` admits a model no schema of the suite knows; its trainer
    keys are checked as any model's, its other keys (keyed by profile or dataset as any) go to its
    constructor with ``module``, which ``model.build_model`` imports; the profile's per-model
    triplets may name it."""
    from datasets.params_schema import resolve_model_params, split_model_params

    params = _suite_params()
    params["models"]["csn"] = {"module": "fashionbench_example.csn", "embed_dim": {"paper": 512, "twin": 64},
                               "lr": {"paper": 1.0e-4, "twin": 3.0e-3}, "lr_decay": 0.98, "mask_l1": 5.0e-4}
    params["train"]["profiles"]["paper"]["triplets_per_epoch"]["csn"] = 1000
    loaded = load_params(_write(tmp_path, params))
    kw, trainer = split_model_params(resolve_model_params(loaded, "csn", "fashionai"))
    assert kw == {"module": "fashionbench_example.csn", "embed_dim": 64, "mask_l1": 5.0e-4}
    assert trainer == {"lr": 3.0e-3, "lr_decay": 0.98}
