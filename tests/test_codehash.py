"""The code stage: each model depends on its own files only, so an edit reruns only its stages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.codehash import code_closure, code_record

ROOT = Path(__file__).resolve().parents[1]
MODELS = list(yaml.safe_load((ROOT / "params.yaml").read_text())["models"])  # the one list of models


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


def test_stage_writes_a_stable_record(tmp_path):
    shutil.copytree(ROOT / "model", tmp_path / "model")
    run = lambda: subprocess.run([sys.executable, "-m", "benchmark.codehash", "modc"], cwd=tmp_path,  # noqa: E731
                                 env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert run().returncode == 0
    out = tmp_path / "data" / "code" / "modc.json"
    first = out.read_bytes()
    assert run().returncode == 0 and out.read_bytes() == first
    assert json.loads(first)["defined_in"] == "model/modc.py"
