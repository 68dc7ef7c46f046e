"""Fixtures that several test files share.

Test files import nothing from one another. What they share is here, as fixtures, or in the
helper modules tests/tiny_training.py (tiny registered models and a tiny dataset),
tests/references.py (slow reference losses) and tests/fixtures_data.py (raw release layouts),
imported as ``tests.<module>``: pyproject.toml's ``[tool.pytest.ini_options] pythonpath``
puts the repository root on the import path, whatever the current folder.

Heavy modules (torch, the trainer) are imported inside the fixtures, so collecting a test file
that needs none of them stays cheap.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_workdir(tmp_path, monkeypatch):
    """tests/tiny_training.py's synthetic dataset in ``tmp_path``, which is the current folder
    for the test (the stages' mains read and write relative paths), with its simulated-kill
    counters reset before and after."""
    from tests import tiny_training

    tiny_training.make_dataset(tmp_path)
    monkeypatch.chdir(tmp_path)
    tiny_training.CRASH_AT[0], tiny_training.CALLS[0] = None, 0
    yield tmp_path
    tiny_training.CRASH_AT[0] = None


@pytest.fixture
def repo_params():
    """A fresh copy of the repository's params.yaml (read from the repository root whatever the
    current folder; tests may change their copy)."""
    from datasets.params import load_params

    return load_params(ROOT / "params.yaml")


@pytest.fixture
def acquire_params(repo_params):
    """params.yaml's ``acquire`` section: the extraction caps and download settings the acquire
    stage runs with."""
    return repo_params["acquire"]
