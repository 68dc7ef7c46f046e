"""Every commit carries its metrics: `dvc metrics diff` between two commits of a tiny pipeline
(real git and dvc) reports the changed nested values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DVC = Path(sys.executable).with_name("dvc")

STAGE = """\
import json, yaml
p = yaml.safe_load(open("params.yaml"))["evaluate"]
json.dump({"test": {"map_all": {"overall": p["score"], "texture": p["score"] / 2}, "queries": {"used": 7}}},
          open("metrics.json", "w"))
"""


def _run(cmd, cwd):
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not DVC.exists(), reason="needs git and dvc")
def test_metrics_diff_between_two_commits(tmp_path):
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "params.yaml").write_text("evaluate:\n  score: 40.0\n")
    (tmp_path / "dvc.yaml").write_text(
        f"stages:\n  evaluate:\n    cmd: {sys.executable} stage.py\n    deps: [stage.py]\n"
        "    params: [evaluate.score]\n    metrics:\n      - metrics.json:\n          cache: false\n")
    _run(["git", "init", "-q"], tmp_path)
    _run([str(DVC), "init", "-q"], tmp_path)
    _run([str(DVC), "config", "core.analytics", "false"], tmp_path)
    _run([str(DVC), "repro", "-q"], tmp_path)
    _run(["git", "add", "-A"], tmp_path)
    _run(["git", "commit", "-q", "-m", "first"], tmp_path)

    (tmp_path / "params.yaml").write_text("evaluate:\n  score: 45.5\n")
    _run([str(DVC), "repro", "-q"], tmp_path)
    _run(["git", "add", "-A"], tmp_path)
    _run(["git", "commit", "-q", "-m", "second"], tmp_path)

    diff = json.loads(_run([str(DVC), "metrics", "diff", "--json", "HEAD~1"], tmp_path))
    m = diff["metrics.json"]
    assert m["test.map_all.overall"] == {"old": 40.0, "new": 45.5, "diff": 5.5}
    assert m["test.map_all.texture"]["diff"] == pytest.approx(2.75)
    assert "test.queries.used" not in m  # unchanged values are not listed without --all
    params = json.loads(_run([str(DVC), "params", "diff", "--json", "HEAD~1"], tmp_path))
    assert params["params.yaml"]["evaluate.score"]["old"] == 40.0
    assert params["params.yaml"]["evaluate.score"]["new"] == 45.5
