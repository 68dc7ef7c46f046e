"""Code stage: every stage's and every model's source files, by content.

    python -m benchmark.codehash

Writes ``data/code/`` (one DVC output, the only place a stage's code is hashed):

- ``stage/<module>.json`` for each stage module (``STAGE_MODULES``: every ``python -m <module>``
  of dvc.yaml): ``{"module", "files": {path: sha256}}``, the module's import closure inside the
  repository (:func:`stage_files`) and the package data it reads (:func:`package_data`);
- ``model/<name>.json`` for each model registered in ``model/`` (``@register_model("<name>")``):
  ``{"model", "defined_in", "files"}``, the registering file and, transitively, every module it
  imports, with ``ALWAYS`` (:func:`code_closure`; the registry imports model files at run time,
  which no import statement of a stage shows);
- ``model/<name>.json`` for each model registered from outside ``model/`` (params.yaml's
  ``models.<name>.module``, found on ``sys.path`` as the stages find it: PYTHONPATH or an
  installed package): the same record of that module's closure, its own package's files and the
  repository's it imports (:func:`external_record`), ``"module"`` added.

Each stage of dvc.yaml depends on the JSONs of its command's modules (and of the model it builds)
instead of the ``.py`` files themselves, and this stage alone depends on the code folders: DVC
reruns this cheap stage after any edit there, and since a record changes only when one of its own
files does, a comment in ``model/asenpp.py`` retrains ASEN++ and nothing else, and one in
``benchmark/stats.py`` reruns the leaderboards only. The records are sorted and hold no time, so an
unchanged closure gives the same bytes. Static (``ast``): nothing is imported, so it runs without
torch (a model module from outside ``model/`` is located by ``importlib.util.find_spec``, which
imports the packages above it, never the module).

The import closure here is the one change detector of the pipeline's code: this stage records
it, train's ``run_fingerprint`` hashes the train stage's closure (:func:`stage_files`) and the
model's, and tests/test_dvc_deps.py checks that every stage depends on exactly its records and
that each record's files are the closure.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import sys
from pathlib import Path

from datasets import paths
from datasets.schemas import write_json

PACKAGE = "model"
# every model is built through these (build_model), so they belong to every model's code
ALWAYS = ("model/__init__.py", "model/registry.py")
# the modules dvc.yaml's stages run (`python -m <module>`; tests/test_dvc_deps.py checks the list)
STAGE_MODULES = (
    "datasets.twins", "datasets.acquire", "datasets.parse", "datasets.validate", "datasets.splits",
    "datasets.cooccurrence", "benchmark.pretrain", "benchmark.features", "benchmark.control",
    "benchmark.train", "benchmark.evaluate", "benchmark.leaderboard", "benchmark.report",
)
OUT = Path("data") / "code"  # under the repository root


def stage_json(module: str) -> str:
    """The record of a stage module, as dvc.yaml's deps name it."""
    return f"{OUT.as_posix()}/stage/{module}.json"


def model_json(name: str) -> str:
    """The record of a model, as dvc.yaml's deps name it."""
    return f"{OUT.as_posix()}/model/{name}.json"


@functools.lru_cache(maxsize=1024)
def _parse_text(text: str, filename: str) -> ast.Module:
    return ast.parse(text, filename=filename)


def _parse(f: Path) -> ast.Module:
    """The file's syntax tree (cached by content: the stage parses each file once)."""
    return _parse_text(f.read_text(), str(f))


def _module_file(root: Path, module: str) -> Path | None:
    rel = Path(*module.split("."))
    for p in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
        if p.is_file():
            return p
    return None


def registering_file(root: Path, name: str) -> Path:
    """The file of the ``model`` package whose ``@register_model(name)`` defines the model."""
    hits = registered_in(root, name)
    if len(hits) != 1:
        raise SystemExit(f"model {name!r}: registered in {len(hits)} files of {root / PACKAGE} (expected one)")
    return hits[0]


def registrations(root: Path) -> dict[str, list[Path]]:
    """Every model registered in the ``model`` package: name -> the files that register it."""
    out: dict[str, list[Path]] = {}
    for f in sorted((root / PACKAGE).rglob("*.py")):
        for node in ast.walk(_parse(f)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                for d in node.decorator_list:
                    if (isinstance(d, ast.Call) and getattr(d.func, "id", getattr(d.func, "attr", None)) == "register_model"
                            and d.args and isinstance(d.args[0], ast.Constant) and isinstance(d.args[0].value, str)):
                        out.setdefault(d.args[0].value, []).append(f)
    return out


def registered_in(root: Path, name: str) -> list[Path]:
    """The files of the ``model`` package that register ``name`` (one, for a model of the package)."""
    return registrations(root).get(name, [])


def module_files(root: Path, module: str) -> list[Path]:
    """The files of the repository that ``import <module>`` runs: each enclosing package's
    ``__init__.py`` (none for a namespace package's folder) and the module's own file; [] when the
    module is not in the repository."""
    parts = module.split(".")
    files = []
    for i in range(len(parts)):
        f = _module_file(root, ".".join(parts[: i + 1]))
        if f is None and i < len(parts) - 1 and (root / Path(*parts[: i + 1])).is_dir():
            continue  # a namespace package (a folder without __init__.py, e.g. examples/): no file of its own
        if f is None:
            return []
        files.append(f)
    return files


def has_code(f: Path) -> bool:
    """False for a file holding at most a docstring (an empty ``__init__.py``): no edit of it can
    change what a stage computes, so no change detector counts it."""
    body = _parse(f).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


def imported_files(root: Path, f: Path) -> set[Path]:
    """Files of the repository that ``f`` imports: ``import x.y``, ``from x import y`` (y a name
    or a submodule) and relative imports, function-level ones included, with their packages'
    ``__init__.py``."""
    out: set[Path] = set()
    tree = _parse(f)
    here = ".".join(f.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        mods = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(p for p in parent + ([base] if base else []) if p)
            mods = [base] + [f"{base}.{a.name}" for a in node.names]
        for m in mods:
            if m:
                out.update(module_files(root, m))
    return out


def import_closure(root: Path, files) -> list[Path]:
    """``files`` and everything they import from the repository, transitively (files without code
    left out). The one rule behind every change detector: the code stage's records, train's
    ``run_fingerprint`` and dvc.yaml's code deps (tests/test_dvc_deps.py)."""
    todo = list(files)
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(imported_files(root, f) - seen)
    return sorted(f for f in seen if has_code(f))


def _beside(f: Path, node: ast.AST) -> Path | None:
    """The path ``node`` spells relative to the file ``f``: ``Path(__file__)`` with ``.parent``,
    ``.resolve()`` and ``/ "<literal>"`` steps (None for anything else)."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Path" and len(node.args) == 1:
        return f if getattr(node.args[0], "id", None) == "__file__" else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "resolve" and not node.args:
        return _beside(f, node.func.value)
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        base = _beside(f, node.value)
        return base.parent if base is not None else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
            and isinstance(node.right.value, str):
        base = _beside(f, node.left)
        return base / node.right.value if base is not None else None
    return None


def package_data(root: Path, files) -> list[Path]:
    """Data files of the repository that ``files`` read as package resources: dependencies like
    code. ``resources.files("<package>").joinpath("<literal path>")``, and a file named beside the
    module (``Path(__file__).parent / "data" / "<name>"``)."""
    out = set()
    for f in files:
        for node in ast.walk(_parse(f)):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "joinpath"
                    and isinstance(node.func.value, ast.Call) and getattr(node.func.value.func, "attr", None) == "files"
                    and node.func.value.args and isinstance(node.func.value.args[0], ast.Constant)
                    and node.args and isinstance(node.args[0], ast.Constant)):
                out.add(root / Path(*node.func.value.args[0].value.split(".")) / node.args[0].value)
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                p = _beside(f, node)
                if p is not None and p.is_file() and p.suffix != ".py":
                    out.add(p)
    return sorted(out)


def stage_files(root: Path, module: str) -> list[Path]:
    """The code ``python -m <module>`` runs, statically: the module (a package's ``__main__.py``)
    and its import closure. A model built by name through the registry is not in it (the registry
    imports model files at run time): that model's files are :func:`code_closure`."""
    files = module_files(root, module)
    if not files:
        raise SystemExit(f"module {module!r}: not a module of {root}")
    if files[-1].name == "__init__.py":
        files.append(files[-1].parent / "__main__.py")
    return import_closure(root, files)


def code_closure(root: Path, name: str, defined_in: Path | None = None) -> list[Path]:
    """The model's files: the registering file, everything it imports, transitively, and ALWAYS."""
    return import_closure(root, [defined_in or registering_file(root, name)] + [root / a for a in ALWAYS])


def _hashes(root: Path, files) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}


def code_record(root: Path, name: str, defined_in: Path | None = None) -> dict:
    """``data/code/model/<name>.json``: the model's files (:func:`code_closure`, with any package data)."""
    defined_in = defined_in or registering_file(root, name)
    files = code_closure(root, name, defined_in)
    return {"model": name, "defined_in": defined_in.relative_to(root).as_posix(),
            "files": _hashes(root, set(files) | set(package_data(root, files)))}


def stage_record(root: Path, module: str) -> dict:
    """``data/code/stage/<module>.json``: the module's import closure and the package data it reads."""
    files = stage_files(root, module)
    return {"module": module, "files": _hashes(root, set(files) | set(package_data(root, files)))}


def external_modules(root: Path) -> dict[str, str]:
    """{name: import path} of the models ``root/params.yaml`` registers from outside ``model/``
    (``models.<name>.module``; the code stage's one param)."""
    import yaml

    from datasets.params_schema import model_modules

    f = root / "params.yaml"
    return model_modules(yaml.safe_load(f.read_text()) or {}) if f.is_file() else {}


def module_origin(module: str) -> tuple[Path, Path]:
    """(the file of ``module``, the ``sys.path`` folder it is found under), as the stages' python
    finds it (``importlib.util.find_spec``: PYTHONPATH, an installed or editable package; its
    parent packages are imported, the module itself not)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise SystemExit(f"params.yaml models.<name>.module: cannot find {module!r} on the python path "
                         "(PYTHONPATH, or pip install -e the package; examples/mymodel/README.md)")
    f = Path(spec.origin).resolve()
    depth = len(module.split(".")) - (0 if f.name == "__init__.py" else 1)
    return f, f.parents[depth]


def _key(root: Path, ext_root: Path, f: Path) -> str:
    """A recorded file's name: relative to the repository when inside it, else to its sys.path folder."""
    return (f.relative_to(root) if f.is_relative_to(root) else f.relative_to(ext_root)).as_posix()


def external_closure(root: Path, module: str) -> tuple[Path, Path, list[Path]]:
    """(file, sys.path folder, closure) of a model module from outside ``model/``: the module,
    its packages' ``__init__.py``, everything they import from their own folder or from the
    repository, transitively, and ALWAYS."""
    f, ext_root = module_origin(module)
    root = root.resolve()
    todo = module_files(ext_root, module) + [root / a for a in ALWAYS]
    seen: set[Path] = set()
    while todo:
        g = todo.pop()
        if g in seen:
            continue
        seen.add(g)
        base = ext_root if g.is_relative_to(ext_root) and not g.is_relative_to(root / PACKAGE) else root
        todo.extend(imported_files(base, g) - seen)
        if base == ext_root:  # an absolute import of the suite (model.base) from the external file
            todo.extend(_suite_imports(root, g) - seen)
    return f, ext_root, sorted(g for g in seen if has_code(g))


def _suite_imports(root: Path, f: Path) -> set[Path]:
    out: set[Path] = set()
    for node in ast.walk(_parse(f)):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for m in mods:
            out.update(module_files(root, m))
    return out


def external_record(root: Path, name: str, module: str) -> dict:
    """``data/code/model/<name>.json`` of a model from outside ``model/``: :func:`code_record`'s
    fields for the module's closure (:func:`external_closure`) and ``module``."""
    f, ext_root, files = external_closure(root, module)
    root = root.resolve()
    files = set(files) | set(package_data(root, files))
    return {"model": name, "module": module, "defined_in": _key(root, ext_root, f),
            "files": {_key(root, ext_root, p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}}


def write_records(root: Path, out: Path | None = None, modules: dict[str, str] | None = None) -> dict[str, dict]:
    """Write every stage module's and every registered model's record under ``out`` (default
    ``root/data/code``), removing any other ``.json`` there; {path relative to ``out``: record}.
    ``modules``: the models from outside ``model/`` (default: ``root/params.yaml``'s)."""
    out = root / OUT if out is None else out
    records = {f"stage/{m}.json": stage_record(root, m) for m in STAGE_MODULES}
    for name, hits in sorted(registrations(root).items()):
        if len(hits) != 1:
            raise SystemExit(f"model {name!r}: registered in {len(hits)} files of {root / PACKAGE} (expected one)")
        records[f"model/{name}.json"] = code_record(root, name, hits[0])
    for name, module in sorted((external_modules(root) if modules is None else modules).items()):
        records[f"model/{name}.json"] = external_record(root, name, module)
    if out.is_dir():
        for p in out.rglob("*.json"):
            if p.relative_to(out).as_posix() not in records:
                p.unlink()
    for rel, rec in records.items():
        write_json(out / rel, rec, sort_keys=True)
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.codehash", description=__doc__.split("\n")[0])
    ap.parse_args(argv)
    records = write_records(paths.ROOT)
    n = len({f for r in records.values() for f in r["files"]})
    print(f"{paths.ROOT / OUT}: {len(records)} records over {n} files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
