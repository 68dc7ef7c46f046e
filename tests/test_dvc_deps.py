"""dvc.yaml's code deps: every stage depends on exactly the code records of what it runs.

The ``code`` stage (``python -m benchmark.codehash``) is the one stage that depends on the source
folders. It writes ``data/code/stage/<module>.json`` for every stage module (the import closure of
``python -m <module>`` inside the repository and the package data it reads, each file's sha256)
and ``data/code/model/<name>.json`` for every registered model (the closure of the file that
registers it; the registry imports that file at run time, which no import statement shows). The
rules, for every stage (foreach and matrix expanded):

- its code deps are exactly ``data/code/stage/<module>.json`` for each ``python -m <module>`` of
  its command and ``data/code/model/<model>.json`` for the model it builds by name (``BUILDS``,
  checked against the code): none missing, none extra;
- no other dep is code: no ``.py`` file, nothing in the code stage's folders (package data
  included: it is in the records), no folder holding ``.py`` files;
- the code stage writes a record for every stage module dvc.yaml runs and every registered model,
  and each record's files are the module's import closure, computed here independently (the
  standard library's ``modulefinder``, over bytecode) from ``benchmark.codehash``'s ast walk;
- the code stage's deps hold every file of every record, so an edit anywhere in a closure reruns
  it, and then (DVC compares each record by md5) exactly the stages whose closure holds the file.

Pure ast, bytecode and yaml (dvc.yaml expanded by ``benchmark.dvcfile``, as the scale run reads it):
nothing of torch is imported.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import modulefinder
import shutil
from pathlib import Path

import pytest
import yaml

from benchmark import codehash, dvcfile
from benchmark.codehash import ALWAYS, has_code, model_json, stage_json
from benchmark.dvcfile import substitute

ROOT = Path(__file__).resolve().parents[1]
DVC, VARS = dvcfile.load(ROOT)  # dvc.yaml, and its variables: params.yaml's keys and dvc.yaml's vars
MODELS = list(VARS["models"])
CODE_STAGE = "code"
CODE_DIRS = tuple(DVC["stages"][CODE_STAGE]["deps"])  # the source folders: the code stage's deps

# stage -> the model it builds by name through the registry (a template over the stage's variables)
BUILDS = {"train": "${item.model}", "evaluate": "${item.model}", "control": "attribute_blind"}

def expanded_stages() -> dict[str, tuple[str, dict]]:
    """``{"train@darn-asen": ("train", {"cmd", "deps", "outs", ..., "builds"})}``: every stage of
    dvc.yaml as ``benchmark.dvcfile`` expands it, with the model it builds."""
    return {full: (st["stage"], {**st, "builds": substitute(BUILDS[st["stage"]], {"item": st["item"]})
                                 if st["stage"] in BUILDS else None})
            for full, st in dvcfile.expanded_stages(ROOT).items()}


STAGES = expanded_stages()


def _rel(p: Path) -> str:
    return Path(p).resolve().relative_to(ROOT).as_posix()


def _in_code_dirs(path: str) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in CODE_DIRS)


def code_deps(full: str) -> set[str]:
    """The records a stage must depend on: its modules' and the model's it builds."""
    _, st = STAGES[full]
    need = {stage_json(m) for m in dvcfile.modules(st["cmd"])}
    return need | ({model_json(st["builds"])} if st["builds"] else set())


def check_stage(full: str) -> list[str]:
    """What is wrong with a stage's code deps, one line each (empty: exact)."""
    name, st = STAGES[full]
    need, problems = code_deps(full), []
    listed = [d for d in st["deps"] if d.startswith(codehash.OUT.as_posix() + "/")]
    for d in st["deps"]:
        p = ROOT / d
        if d in listed:
            if d not in need:
                problems.append(f"{d}: listed, but the stage neither runs that module nor builds that model "
                                f"(its records: {sorted(need)})")
        elif _in_code_dirs(d):
            problems.append(f"{d}: in the code folders {list(CODE_DIRS)}, which only the code stage depends on "
                            f"(the stage's code is in {sorted(need)})")
        elif d.endswith(".py") or (not d.startswith("data/") and p.is_dir() and any(p.rglob("*.py"))):
            problems.append(f"{d}: code listed as a dep (depend on the code stage's records instead)")
    dup = sorted(d for d in set(listed) if listed.count(d) > 1)
    if dup:
        problems.append(f"listed twice: {dup}")
    missing = sorted(need - set(listed))
    if missing:
        problems.append(f"not listed, but the stage runs that code: {missing}")
    return problems


def describe(full: str) -> str:
    problems = check_stage(full)
    return f"dvc.yaml stage {full}:\n  " + "\n  ".join(problems) if problems else ""


@pytest.mark.parametrize("full", sorted(s for s in STAGES if s != CODE_STAGE))
def test_code_deps_are_the_records_of_what_the_stage_runs(full):
    assert not describe(full)


def test_every_stage_is_checked():
    assert set(BUILDS) <= set(DVC["stages"]) and "foreach" not in DVC["stages"][CODE_STAGE]
    assert {f"train@darn-{m}" for m in MODELS} <= set(STAGES) and "report" in STAGES
    assert not [s for s in STAGES if s.startswith(CODE_STAGE + "@")]


def test_the_expansion_is_dvcs_own():
    """benchmark.dvcfile expands dvc.yaml as DVC itself does: the same stage names, commands, deps,
    outs, metrics and plots (the scale run runs these commands; the checks here read these deps)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        theirs = {s.addressing: s for s in repo.index.stages if Path(s.path).resolve() == ROOT / "dvc.yaml"}
    ours = dvcfile.expanded_stages(ROOT)
    assert set(ours) == set(theirs)
    for full, st in ours.items():
        t = theirs[full]
        assert st["cmd"] == ([t.cmd] if isinstance(t.cmd, str) else list(t.cmd)), full
        assert st["deps"] == [d.def_path for d in t.deps if not isinstance(d, ParamsDependency)], full
        assert sorted(st["outs"] + st["metrics"] + st["plots"]) == sorted(o.def_path for o in t.outs), full
        assert sorted(st["metrics"]) == sorted(o.def_path for o in t.outs if o.metric), full
        assert sorted(st["plots"]) == sorted(o.def_path for o in t.outs if o.plot), full


# ---------------------------------------------------------------- the code stage and its records


def stage_modules() -> set[str]:
    """Every module dvc.yaml's stages run, the code stage's own left out."""
    return {m for full, (name, st) in STAGES.items() if name != CODE_STAGE for m in dvcfile.modules(st["cmd"])}


def _registry_modules() -> set[str]:
    tree = ast.parse((ROOT / "model" / "registry.py").read_text())
    for n in tree.body:
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "_MODULES":
            return {e.value for e in n.value.elts}
    raise AssertionError("model/registry.py: no _MODULES")


def _registered_names(f: Path) -> set[str]:
    return {d.args[0].value for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, (ast.FunctionDef, ast.ClassDef))
            for d in n.decorator_list
            if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "register_model" and d.args}


def registered_models() -> dict[str, str]:
    """name -> the registry module that registers it (the registry imports each of _MODULES)."""
    out = {}
    for mod in _registry_modules():
        for name in _registered_names(ROOT / (mod.replace(".", "/") + ".py")):
            assert name not in out, f"model {name!r} registered in {out[name]} and {mod}"
            out[name] = mod
    # and the models from outside model/ that params.yaml names by module (the default's example)
    from datasets.params_schema import model_modules

    for name, mod in model_modules(yaml.safe_load((ROOT / "params.yaml").read_text())).items():
        assert name not in out, f"model {name!r} registered in {out[name]} and {mod}"
        out[name] = mod
    return out


@functools.cache
def finder_closure(*modules: str) -> frozenset[str]:
    """The repository files that importing ``modules`` runs, transitively, by the standard
    library's modulefinder (bytecode, function-level imports included): independent of
    benchmark.codehash's ast walk. Files holding only a docstring are not code."""
    path, hooks = [str(ROOT)], []
    for m in modules:
        parts = m.split(".")
        # modulefinder knows no namespace packages: a module under folders without __init__.py
        # (examples.mymodel.fashionbench_example.csn) is looked up from the innermost such folder
        i = 0
        while i < len(parts) - 1 and (ROOT.joinpath(*parts[: i + 1])).is_dir() \
                and not (ROOT.joinpath(*parts[: i + 1]) / "__init__.py").is_file():
            i += 1
        if i:
            path.insert(0, str(ROOT.joinpath(*parts[:i])))
        hooks.append(".".join(parts[i:]))
    f = modulefinder.ModuleFinder(path=path)
    for m, hook in zip(modules, hooks):
        f.import_hook(hook)
        if (ROOT / m.replace(".", "/") / "__main__.py").is_file():  # python -m <package>
            f.import_hook(m + ".__main__")
    files = {Path(mod.__file__).resolve() for mod in f.modules.values() if mod.__file__}
    return frozenset(_rel(p) for p in files if p.is_relative_to(ROOT) and has_code(p))


def expected_files(modules: tuple[str, ...]) -> set[str]:
    code = finder_closure(*modules)
    return set(code) | {_rel(p) for p in codehash.package_data(ROOT, sorted(ROOT / c for c in code))}


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, dict]:
    """The code stage's output, written by its own function into a temporary folder."""
    out = tmp_path_factory.mktemp("code")
    codehash.write_records(ROOT, out)
    return {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))}


def test_code_stage_is_the_one_that_reads_the_source():
    _, st = STAGES[CODE_STAGE]
    assert st["cmd"] == ["python -m benchmark.codehash"] and st["outs"] == [codehash.OUT.as_posix()]
    assert set(CODE_DIRS) >= {"benchmark", "datasets", "model"}
    assert all((ROOT / d).is_dir() for d in CODE_DIRS)
    # the code stage's own code is in its deps too
    assert all(_in_code_dirs(f) for f in finder_closure("benchmark.codehash")), "the code stage's code"


def test_code_stage_writes_a_record_per_stage_module_and_model(records):
    assert set(codehash.STAGE_MODULES) == stage_modules(), "benchmark.codehash.STAGE_MODULES: dvc.yaml's modules"
    models = registered_models()
    assert set(MODELS) | {BUILDS["control"]} <= set(models)
    assert set(records) == ({f"stage/{m}.json" for m in stage_modules()} | {f"model/{m}.json" for m in models})
    for full in STAGES:  # every record a stage lists is written
        for d in STAGES[full][1]["deps"]:
            if d.startswith(codehash.OUT.as_posix() + "/"):
                assert d[len(codehash.OUT.as_posix()) + 1:] in records, f"{full}: {d} is not written"


@pytest.mark.parametrize("module", sorted(stage_modules()))
def test_stage_record_is_the_module_import_closure(records, module):
    rec = records[f"stage/{module}.json"]
    assert rec["module"] == module
    assert set(rec["files"]) == expected_files((module,))
    for f, h in rec["files"].items():
        assert hashlib.sha256((ROOT / f).read_bytes()).hexdigest() == h, f


@pytest.mark.parametrize("model", sorted(registered_models()))
def test_model_record_is_the_registering_module_closure(records, model):
    """The model's record: the module that registers it (which the registry imports), ALWAYS and,
    transitively, what they import; a stage that builds the model imports none of the model's
    files statically beyond it."""
    rec = records[f"model/{model}.json"]
    module = registered_models()[model]
    assert rec["model"] == model and rec["defined_in"] == module.replace(".", "/") + ".py"
    always = tuple(a[: -len(".py")].replace("/", ".") for a in ALWAYS)
    assert set(rec["files"]) == expected_files((module,) + always)
    for f, h in rec["files"].items():
        assert hashlib.sha256((ROOT / f).read_bytes()).hexdigest() == h, f


def test_code_stage_deps_hold_every_recorded_file(records):
    files = {f for rec in records.values() for f in rec["files"]}
    outside = sorted(f for f in files if not _in_code_dirs(f))
    assert not outside, f"recorded, but not under the code stage's deps {list(CODE_DIRS)}: {outside}"
    assert {"benchmark/data/paper_results.json", "datasets/data/asen_meta.json"} <= files  # package data


def test_records_are_byte_stable(tmp_path):
    codehash.write_records(ROOT, tmp_path / "a")
    codehash.write_records(ROOT, tmp_path / "b")
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*.json")}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*.json")}
    assert a == b and len(a) == len(stage_modules()) + len(registered_models())


def _stage_code(records: dict, full: str) -> set[str]:
    return {f for d in code_deps(full) for f in records[d[len(codehash.OUT.as_posix()) + 1:]]["files"]}


@pytest.mark.parametrize("edited", ["benchmark/stats.py", "model/asenpp.py", "model/base.py", "benchmark/codehash.py",
                                    "datasets/data/fashionai_meta.json", "datasets/paths.py"])
def test_an_edit_changes_exactly_the_records_of_the_stages_whose_closure_holds_it(tmp_path, edited):
    """DVC reruns a stage when a dep's md5 changes: after an edit, the stages with a changed
    record are exactly those whose code holds the edited file."""
    for d in CODE_DIRS:
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")  # which models come from outside model/
    before = codehash.write_records(tmp_path, tmp_path / "out")
    f = tmp_path / edited
    f.write_text(f.read_text().rstrip("\n") + ("\n# an edit\n" if f.suffix == ".py" else "\n\n"))
    after = codehash.write_records(tmp_path, tmp_path / "out")
    changed_records = {k for k in before if before[k] != after[k]}
    rerun = {full for full in STAGES if full != CODE_STAGE
             and any(d[len(codehash.OUT.as_posix()) + 1:] in changed_records for d in code_deps(full))}
    holding = {full for full in STAGES if full != CODE_STAGE and edited in _stage_code(before, full)}
    assert rerun == holding and rerun
    if edited == "benchmark/stats.py":
        assert rerun == {f"leaderboard@{k}" for k in DVC["vars"][0]["dataset_keys"]}
    if edited == "model/asenpp.py":
        assert rerun == {f"{s}@{k}-asenpp" for s in ("train", "evaluate") for k in DVC["vars"][0]["dataset_keys"]}


# ---------------------------------------------------------------- models built by name


@functools.cache
def _calls_build_model(f: Path) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "build_model"
               for n in ast.walk(ast.parse(f.read_text())))


def test_builds_declares_the_stages_that_build_a_model_by_name():
    """A stage module that builds a model (``build_model``, directly or through
    ``checkpoint.load_trained_model``) is declared in BUILDS, so its model's record is required."""
    builders = {"train": "benchmark/train_loop.py", "evaluate": "benchmark/checkpoint.py", "control": "benchmark/control.py"}
    for name, f in builders.items():
        assert _calls_build_model(ROOT / f), f
        assert name in BUILDS
    for full, (name, st) in STAGES.items():
        for mod in dvcfile.modules(st["cmd"]):
            own = ROOT / (mod.replace(".", "/") + ".py")
            if own.is_file() and _calls_build_model(own):
                assert st["builds"], f"stage {full}: {mod} calls build_model; declare its model in BUILDS"
    control = ast.parse((ROOT / "benchmark" / "control.py").read_text())
    names = {n.targets[0].id: n.value.value for n in control.body
             if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Constant)}
    assert names.get("NAME") == BUILDS["control"]


@pytest.mark.parametrize("model", MODELS)
def test_train_and_evaluate_import_no_model_file_beyond_the_record(records, model):
    rec = records[f"model/{model}.json"]
    for stage in ("train", "evaluate"):
        _, s = STAGES[f"{stage}@darn-{model}"]
        static_model = {f for mod in dvcfile.modules(s["cmd"]) for f in finder_closure(mod) if f.startswith("model/")}
        assert static_model <= set(rec["files"]), f"{stage}@darn-{model}: imports {static_model - set(rec['files'])}"


# ---------------------------------------------------------------- the checker itself


def test_the_checker_reports_a_broken_stage_by_name(monkeypatch):
    """A missing record, another stage's record, a .py file, a code folder and package data listed
    as deps are each found, with the stage named."""
    full = f"train@darn-{MODELS[0]}"
    name, st = STAGES[full]
    deps = [d for d in st["deps"] if d != model_json(MODELS[0])] + [
        stage_json("benchmark.report"), "benchmark/stats.py", "datasets/parsers", "datasets/data/asen_meta.json",
        model_json(MODELS[1])]
    monkeypatch.setitem(STAGES, full, (name, {**st, "deps": deps}))
    text = describe(full)
    assert text.startswith(f"dvc.yaml stage {full}:")
    assert f"not listed, but the stage runs that code: ['{model_json(MODELS[0])}']" in text
    assert f"{stage_json('benchmark.report')}: listed, but" in text and f"{model_json(MODELS[1])}: listed, but" in text
    for d in ("benchmark/stats.py", "datasets/parsers", "datasets/data/asen_meta.json"):
        assert f"{d}: in the code folders" in text
    _, ev = STAGES["evaluate@darn-asen"]
    monkeypatch.setitem(STAGES, "evaluate@darn-asen", ("evaluate", {**ev, "deps": ev["deps"] + ["scripts/x.py"]}))
    assert "scripts/x.py: code listed as a dep" in describe("evaluate@darn-asen")
