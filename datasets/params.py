"""Reading params.yaml: the one source of every size, seed and hyperparameter.

It lives in ``datasets`` because every stage reads it, and nothing in ``datasets`` may import
``benchmark`` (the data flows one way); ``benchmark.params`` adds what only training needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ParamsError(SystemExit):
    """params.yaml is missing, is not a YAML mapping, or holds a key or value the schema
    (``datasets.params_schema``) refuses: the message names the file (and line, or key path).

    A SystemExit, so that a stage given a broken params file stops with this one line on stderr
    and exit status 1, never a traceback."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The whole document, validated against ``datasets.params_schema`` before it is returned:
    every stage checks every section present before any work."""
    from datasets.params_schema import SchemaError, validate

    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the repository root (where dvc.yaml is)")
    try:
        with open(path) as f:
            params = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of sections (twins, acquire, ...), got {type(params).__name__}")
    try:
        validate(params)
    except SchemaError as e:
        raise ParamsError(f"{path}: {e}") from None
    return params
