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
