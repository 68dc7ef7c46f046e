"""Make `tests` this folder for `from tests.fixtures_data import ...`, even when an installed
distribution ships a top-level `tests` package (iterative-stratification does): a regular package
on sys.path would otherwise win over this namespace folder."""

from __future__ import annotations

import sys
import types
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_mod = sys.modules.get("tests")
if _mod is None or str(_HERE) not in [str(Path(p).resolve()) for p in getattr(_mod, "__path__", [])]:
    _pkg = types.ModuleType("tests")
    _pkg.__path__ = [str(_HERE)]
    sys.modules["tests"] = _pkg
