"""dvc.yaml's code deps are exactly each stage's import closure (no more, no fewer).

For every stage (foreach and matrix expanded), the code a command ``python -m <module> ...`` runs
is the module's import closure inside the repository (``benchmark.codehash.stage_files``: ast,
function-level imports, packages' ``__init__.py``, relative imports and ``from pkg import
submodule`` included; a file holding only a docstring is not code). The rules:

- A ``.py`` dep must be in the closure; a file of the closure must be listed, or lie in a listed
  folder, or be one of the model's files covered by ``data/code/<model>.json``.
- A folder dep (``datasets/parsers``) stands for every ``.py`` with code inside it, so it is
  listed only when the stage imports all of them; otherwise the files are listed one by one.
- Models built by name: ``model/registry.py`` imports model files at run time, which no import
  statement shows. The stages that build a model by name are declared in ``BUILDS`` (checked
  against their code); they need the model's files (``benchmark.codehash.code_closure``), which
  the per-model stages get from ``data/code/<model>.json``, the output of ``code@<model>``, and
  the control lists directly. A ``data/code/<model>.json`` dep of a stage that does not build
  that model is an extra.
- Package data read with ``resources.files(pkg).joinpath("<path>")`` is a dep like code.
- Paths under ``data/`` and other non-code entries are not checked here, except ``READS``: code
  folders a stage reads as its data (the code stage hashes ``model/``).

Pure ast and yaml: nothing of torch is imported.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
from pathlib import Path

import pytest
import yaml

from benchmark import codehash
from benchmark.codehash import ALWAYS, code_record, has_code, import_closure

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())  # DVC loads params.yaml as variables
MODELS = list(PARAMS["models"])

# stage -> the model it builds by name through the registry (a template over the stage's variables)
BUILDS = {"train": "${item.model}", "embed": "${item.model}", "control": "attribute_blind"}
# stage -> code folders it reads as data, not as imports
READS = {"code": {"model"}}

_VAR = re.compile(r"\$\{([^}]+)\}")


def _lookup(ctx: dict, name: str):
    v = ctx
    for part in name.split("."):
        v = v[part]
    return v


def _sub(x, ctx: dict):
    if isinstance(x, str):
        return _VAR.sub(lambda m: str(_lookup(ctx, m.group(1))), x)
    if isinstance(x, list):
        return [_sub(v, ctx) for v in x]
    if isinstance(x, dict):
        return {_sub(k, ctx): _sub(v, ctx) for k, v in x.items()}
    return x


def _resolve(value, ctx: dict):
    m = _VAR.fullmatch(value) if isinstance(value, str) else None
    return _lookup(ctx, m.group(1)) if m else value


def expanded_stages() -> dict[str, tuple[str, dict]]:
    """``{"train@darn-asen": ("train", {"cmd", "deps", "outs", "builds"})}``: every stage of dvc.yaml."""
    ctx = dict(PARAMS)
    for v in DVC.get("vars", []):
        ctx.update(v)
    out = {}
    for name, st in DVC["stages"].items():
        if "foreach" in st:
            items = _resolve(st["foreach"], ctx)
            pairs = items.items() if isinstance(items, dict) else ((i, i) for i in items)
            variants = [(str(k), {**ctx, "item": v, "key": k}, st["do"]) for k, v in pairs]
        elif "matrix" in st:
            axes = {k: _resolve(v, ctx) for k, v in st["matrix"].items()}
            variants = [("-".join(map(str, combo)), {**ctx, "item": dict(zip(axes, combo))}, st)
                        for combo in itertools.product(*(list(v) for v in axes.values()))]
        else:
            variants = [(None, ctx, st)]
        for suffix, c, body in variants:
            full = f"{name}@{suffix}" if suffix is not None else name
            out[full] = (name, {
                "cmd": _sub(body["cmd"], c),
                "deps": [d if isinstance(d, str) else next(iter(d)) for d in _sub(body.get("deps", []), c)],
                "outs": [o if isinstance(o, str) else next(iter(o)) for o in _sub(body.get("outs", []), c)],
                "builds": _sub(BUILDS[name], c) if name in BUILDS else None,
            })
    return out


STAGES = expanded_stages()


@functools.cache
def stage_files(root: Path, module: str) -> list[Path]:  # 126 stages, 15 modules: parse each once
    return codehash.stage_files(root, module)


@functools.cache
def package_data(root: Path, files: tuple[Path, ...]) -> list[Path]:
    return codehash.package_data(root, files)


@functools.cache
def code_closure(root: Path, model: str) -> list[Path]:
    return codehash.code_closure(root, model)


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def _modules(cmd) -> list[str]:
    mods = []
    for c in [cmd] if isinstance(cmd, str) else cmd:
        words = c.split()
        assert words[:2] == ["python", "-m"], f"command {c!r} is not `python -m <module> ...`"
        mods.append(words[2])
    return mods


@functools.cache
def _code_files_in(folder: Path) -> set[str]:
    return {_rel(p) for p in folder.rglob("*.py") if "__pycache__" not in p.parts and has_code(p)}


def check_stage(full: str) -> list[str]:
    """What is wrong with the stage's code deps, one line each (empty: exact)."""
    name, st = STAGES[full]
    required: set[Path] = set()
    for mod in _modules(st["cmd"]):
        required.update(stage_files(ROOT, mod))
    model_files: set[str] = set()
    if st["builds"]:
        model_files = {_rel(p) for p in code_closure(ROOT, st["builds"])}
        required.update(ROOT / f for f in model_files)
    need = {_rel(p) for p in required} | {_rel(p) for p in package_data(ROOT, tuple(sorted(required)))}

    covered: dict[str, str] = {}  # file -> the dep that covers it
    problems = []
    for d in st["deps"]:
        m = re.fullmatch(r"data/code/(.+)\.json", d)
        p = ROOT / d
        if m:
            if m.group(1) != st["builds"]:
                problems.append(f"{d}: listed, but the stage does not build model {m.group(1)!r} "
                                f"(it builds {st['builds'] or 'none'})")
                continue
            files = {_rel(f) for f in code_closure(ROOT, m.group(1))}
        elif d.endswith(".py"):
            files = {d}
            if d not in need:
                problems.append(f"{d}: listed, but the stage does not import it")
        elif not d.startswith("data/") and p.is_dir() and any(p.rglob("*.py")):
            files = _code_files_in(p)
            if d in READS.get(name, ()):
                continue
            unused = files - need
            if unused == files:
                problems.append(f"{d}: folder listed, but the stage imports nothing in it")
            elif unused:
                problems.append(f"{d}: folder listed, but the stage does not import {sorted(unused)}: "
                                f"list the files it imports ({sorted(files & need)})")
        elif p.is_file() and _rel(p) in need:
            files = {d}  # package data
        else:
            continue  # data
        for f in files:
            if f in covered and f in need:
                problems.append(f"{f}: listed twice ({covered[f]} and {d})")
            covered.setdefault(f, d)
    missing = sorted(need - set(covered))
    if missing:
        problems.append(f"not listed, but the stage imports or reads them: {missing}")
    return problems


@pytest.mark.parametrize("full", sorted(STAGES))
def test_code_deps_are_the_import_closure(full):
    problems = check_stage(full)
    assert not problems, f"dvc.yaml stage {full}:\n  " + "\n  ".join(problems)


def test_every_stage_is_checked():
    assert set(BUILDS) <= set(DVC["stages"]) and set(READS) <= set(DVC["stages"])
    assert {f"train@darn-{m}" for m in MODELS} <= set(STAGES) and "report" in STAGES
    assert {"code@" + m for m in MODELS} <= set(STAGES)


@functools.cache
def _calls_build_model(f: Path) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "build_model"
               for n in ast.walk(ast.parse(f.read_text())))


def test_builds_declares_the_stages_that_build_a_model_by_name():
    """A stage module that builds a model (``build_model``, directly or through
    ``checkpoint.load_trained_model``) is declared in BUILDS, so its model's files are required."""
    builders = {"train": "benchmark/train.py", "embed": "benchmark/checkpoint.py", "control": "benchmark/control.py"}
    for name, f in builders.items():
        assert _calls_build_model(ROOT / f), f
        assert name in BUILDS
    for full, (name, st) in STAGES.items():
        for mod in _modules(st["cmd"]):
            own = ROOT / (mod.replace(".", "/") + ".py")
            if own.is_file() and _calls_build_model(own):
                assert st["builds"], f"stage {full}: {mod} calls build_model; declare its model in BUILDS"
    control = ast.parse((ROOT / "benchmark" / "control.py").read_text())
    names = {n.targets[0].id: n.value.value for n in control.body
             if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Constant)}
    assert names.get("NAME") == BUILDS["control"]


def _registry_modules() -> set[str]:
    tree = ast.parse((ROOT / "model" / "registry.py").read_text())
    for n in tree.body:
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "_MODULES":
            return {e.value for e in n.value.elts}
    raise AssertionError("model/registry.py: no _MODULES")


@pytest.mark.parametrize("model", MODELS)
def test_code_stage_hashes_the_model_import_closure(model):
    """code@<model> hashes exactly the model's import closure (its registering module, which the
    registry imports, and ALWAYS), and writes the data/code/<model>.json the model's stages list."""
    _, st = STAGES[f"code@{model}"]
    assert st["cmd"].split()[2:] == ["benchmark.codehash", model]
    assert f"data/code/{model}.json" in st["outs"]
    rec = code_record(ROOT, model)
    module = rec["defined_in"][: -len(".py")].replace("/", ".")
    assert module in _registry_modules(), f"{module} registers {model} but the registry does not import it"
    closure = import_closure(ROOT, [ROOT / rec["defined_in"]] + [ROOT / a for a in ALWAYS])
    assert set(rec["files"]) == {_rel(p) for p in closure}
    for stage in ("train", "embed"):
        _, s = STAGES[f"{stage}@darn-{model}"]
        static_model = {_rel(p) for mod in _modules(s["cmd"]) for p in stage_files(ROOT, mod)
                        if _rel(p).startswith("model/")}
        assert static_model <= set(rec["files"]), f"{stage}@darn-{model}: imports {static_model - set(rec['files'])}"


def test_the_checker_finds_what_is_missing_and_extra(monkeypatch):
    """evaluate's labels come from benchmark/loaders.py through evalsets.py: dropping it is found,
    and so are a file the stage does not import and a folder it imports only part of."""
    full = f"evaluate@darn-{MODELS[0]}"
    name, st = STAGES[full]
    deps = [d for d in st["deps"] if d != "benchmark/loaders.py"] + ["benchmark/stats.py", "datasets/parsers"]
    monkeypatch.setitem(STAGES, full, (name, {**st, "deps": deps}))
    text = "\n".join(check_stage(full))
    assert "benchmark/loaders.py" in text and "benchmark/stats.py: listed" in text
    assert "datasets/parsers: folder listed, but the stage imports nothing" in text
    _, acq = STAGES["acquire@darn"]
    monkeypatch.setitem(STAGES, "acquire@darn", ("acquire", {**acq, "deps": acq["deps"] + ["datasets/parsers"]}))
    assert any("datasets/parsers: folder listed, but the stage does not import" in p for p in check_stage("acquire@darn"))
