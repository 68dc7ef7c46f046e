"""The code stage: each stage module and each model depends on its own files only, so an edit
reruns only the stages whose code holds it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.codehash import STAGE_MODULES, code_closure, code_record, stage_record

ROOT = Path(__file__).resolve().parents[1]
# the one list of models, those of the model package (the example from outside, `module:`, is tests/test_external_model.py's)
MODELS = [m for m, v in yaml.safe_load((ROOT / "params.yaml").read_text())["models"].items() if "module" not in v]


def _files(name, root=ROOT):
    return {str(p.relative_to(root)) for p in code_closure(root, name)}


def test_closures_follow_the_imports():
    assert "model/asen.py" in _files("asen_v2")  # ASEN_v2 subclasses ASEN
    assert "model/asen.py" not in _files("asenpp") and "model/m3net.py" not in _files("asenpp")
    assert "model/attention.py" in _files("m3net_c") and "model/blocks.py" not in _files("m3net")
    for m in MODELS:
        assert {"model/__init__.py", "model/registry.py", "model/base.py"} <= _files(m)


def test_a_comment_in_one_model_file_changes_only_its_models(tmp_path):
    shutil.copytree(ROOT / "model", tmp_path / "model")
    before = {m: code_record(tmp_path, m) for m in MODELS}
    f = tmp_path / "model" / "asenpp.py"
    f.write_text(f.read_text() + "\n# a comment\n")
    changed = {m for m in MODELS if code_record(tmp_path, m) != before[m]}
    assert changed == {"asenpp"}
    f = tmp_path / "model" / "m3net.py"
    f.write_text(f.read_text() + "\n# a comment\n")
    changed = {m for m in MODELS if code_record(tmp_path, m) != before[m]}
    assert changed == {"asenpp", "m3net", "m3net_eq11", "m3net_a", "m3net_c"}


def test_unknown_model_is_a_clear_error():
    with pytest.raises(SystemExit, match="registered in 0 files"):
        code_record(ROOT, "no_such_model")


def test_stage_writes_a_stable_record_per_stage_module_and_model(tmp_path):
    for d in ("benchmark", "datasets", "model"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "data" / "code"
    (out / "model").mkdir(parents=True)
    (out / "modc.json").write_text("{}")  # the layout of the per-model stages: removed
    (out / "model" / "gone.json").write_text("{}")  # a model no longer registered: removed
    run = lambda: subprocess.run([sys.executable, "-m", "benchmark.codehash"], cwd=tmp_path,  # noqa: E731
                                 env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert run().returncode == 0
    written = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.json"))}
    assert set(written) == ({f"stage/{m}.json" for m in STAGE_MODULES}
                            | {f"model/{m}.json" for m in MODELS + ["attribute_blind"]})
    assert run().returncode == 0
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.json"))} == written
    assert json.loads(written["model/modc.json"])["defined_in"] == "model/modc.py"
    train = json.loads(written["stage/benchmark.train.json"])
    assert train["module"] == "benchmark.train" and "benchmark/codehash.py" in train["files"]
    assert "benchmark/data/paper_results.json" in json.loads(written["stage/benchmark.report.json"])["files"]


def test_a_comment_in_one_library_file_changes_only_the_stages_importing_it(tmp_path):
    for d in ("benchmark", "datasets", "model"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    before = {m: stage_record(tmp_path, m) for m in STAGE_MODULES}
    f = tmp_path / "benchmark" / "stats.py"
    f.write_text(f.read_text() + "\n# a comment\n")
    assert {m for m in STAGE_MODULES if stage_record(tmp_path, m) != before[m]} == {"benchmark.leaderboard"}
