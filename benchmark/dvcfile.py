"""dvc.yaml's stages, expanded as DVC expands them: the one reading of the pipeline's commands.

``expanded_stages(root)`` gives every stage by the name DVC gives it (``twins@darn``,
``train@darn-m3net``, ``report``): its command(s), deps, outs, metrics and plots, with every
``${...}`` substituted from the variables DVC has (params.yaml's keys, then dvc.yaml's ``vars``,
then the stage's ``item``/``key``). ``foreach`` over a list or a mapping and ``matrix`` are
expanded in DVC's order and naming (checked against ``dvc.repo.Repo`` for every stage when this
expansion was written). The harnesses (``benchmark.scale``) run a stage through ``argv``, the
checks (``tests/test_dvc_deps.py``) read its deps: neither restates dvc.yaml.

Pure yaml and the standard library; no stage imports it.
"""

from __future__ import annotations

import itertools
import re
import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

_VAR = re.compile(r"\$\{([^}]+)\}")


def _lookup(ctx: dict, name: str):
    v = ctx
    for part in name.split("."):
        v = v[part]
    return v


def substitute(x, ctx: dict):
    """``x`` (a string, or lists and mappings of them) with every ``${a.b}`` replaced by ``ctx``'s value."""
    if isinstance(x, str):
        return _VAR.sub(lambda m: str(_lookup(ctx, m.group(1))), x)
    if isinstance(x, list):
        return [substitute(v, ctx) for v in x]
    if isinstance(x, dict):
        return {substitute(k, ctx): substitute(v, ctx) for k, v in x.items()}
    return x


def _resolve(value, ctx: dict):
    """A whole-value ``${name}`` keeps its type (a list to iterate over); anything else stays as it is."""
    m = _VAR.fullmatch(value) if isinstance(value, str) else None
    return _lookup(ctx, m.group(1)) if m else value


def _names(entries: list) -> list[str]:
    """Deps/outs/metrics/plots as paths: an entry with options (``{path: {cache: false}}``) by its path."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def load(root: Path = ROOT, params: Path | None = None) -> tuple[dict, dict]:
    """(dvc.yaml, the variables DVC has: ``params`` (default root/params.yaml) updated by dvc.yaml's vars)."""
    root = Path(root)
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    ctx = dict(yaml.safe_load(Path(params or root / "params.yaml").read_text()))
    for v in dvc.get("vars", []):
        ctx.update(v)
    return dvc, ctx


def expanded_stages(root: Path = ROOT, params: Path | None = None) -> dict[str, dict]:
    """``{"train@darn-asen": {"stage": "train", "item": {...}, "cmd": [...], "deps": [...], "outs": [...],
    "metrics": [...], "plots": [...]}}``: every stage of root/dvc.yaml, foreach and matrix expanded.
    ``cmd`` is always a list of command lines (DVC runs them in order); ``item`` is the variant's
    ``${item}`` (None for a plain stage)."""
    dvc, ctx = load(root, params)
    out = {}
    for name, st in dvc["stages"].items():
        if "foreach" in st:
            items = _resolve(st["foreach"], ctx)
            pairs = items.items() if isinstance(items, dict) else ((i, i) for i in items)
            variants = [(str(k), v, {**ctx, "item": v, "key": k}, st["do"]) for k, v in pairs]
        elif "matrix" in st:
            axes = {k: _resolve(v, ctx) for k, v in st["matrix"].items()}
            variants = []
            for combo in itertools.product(*(list(v) for v in axes.values())):
                item = dict(zip(axes, combo))
                variants.append(("-".join(map(str, combo)), item, {**ctx, "item": item}, st))
        else:
            variants = [(None, None, ctx, st)]
        for suffix, item, c, body in variants:
            cmd = substitute(body["cmd"], c)
            out[f"{name}@{suffix}" if suffix is not None else name] = {
                "stage": name, "item": item, "cmd": [cmd] if isinstance(cmd, str) else list(cmd),
                **{f: _names(substitute(body.get(f, []), c)) for f in ("deps", "outs", "metrics", "plots")},
            }
    return out


def modules(cmd: list[str]) -> list[str]:
    """The module of each ``python -m <module> ...`` line of a stage's command (any other line: ValueError)."""
    mods = []
    for line in cmd:
        words = shlex.split(line)
        if words[:2] != ["python", "-m"] or len(words) < 3:
            raise ValueError(f"command {line!r} is not `python -m <module> ...`")
        mods.append(words[2])
    return mods


def argv(line: str, python: str = sys.executable) -> list[str]:
    """One command line of a stage as a process's argv, ``python`` replaced by this interpreter."""
    words = shlex.split(line)
    return [python] + words[1:] if words[:1] == ["python"] else words
