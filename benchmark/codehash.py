"""Code stage: the source files that one model's weights depend on, by content.

    python -m benchmark.codehash <model>

Writes ``data/code/<model>.json``: the file of ``model/`` that registers the model
(``@register_model("<model>")``) and, transitively, every ``model`` module it imports, each with
its sha256. The train and embed stages of a model depend on this file instead of the
whole ``model/`` folder: DVC reruns this cheap stage after any edit there, and since its output
changes only when one of the model's own files does, a comment in ``model/asenpp.py`` retrains
ASEN++ and nothing else. Static (``ast``): nothing is imported, so it runs without torch.

The import closure here is the one change detector of the pipeline's code: the code stage hashes
a model's closure (:func:`code_closure`), train's ``run_fingerprint`` hashes the train stage's
closure (:func:`stage_files`) and the model's, and tests/test_dvc_deps.py checks that every
stage's code deps in dvc.yaml are its closure, no more and no fewer.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import sys
from pathlib import Path

from datasets import paths
from datasets.schemas import write_json

PACKAGE = "model"
# every model is built through these (build_model), so they belong to every model's code
ALWAYS = ("model/__init__.py", "model/registry.py")


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


def registered_in(root: Path, name: str) -> list[Path]:
    """The files of the ``model`` package that register ``name`` (one, for a model of the package)."""
    hits = []
    for f in sorted((root / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                for d in node.decorator_list:
                    if (isinstance(d, ast.Call) and getattr(d.func, "id", getattr(d.func, "attr", None)) == "register_model"
                            and d.args and isinstance(d.args[0], ast.Constant) and d.args[0].value == name):
                        hits.append(f)
    return hits


def module_files(root: Path, module: str) -> list[Path]:
    """The files of the repository that ``import <module>`` runs: each enclosing package's
    ``__init__.py`` and the module's own file; [] when the module is not in the repository."""
    parts = module.split(".")
    files = [_module_file(root, ".".join(parts[: i + 1])) for i in range(len(parts))]
    return [] if None in files else files


def has_code(f: Path) -> bool:
    """False for a file holding at most a docstring (an empty ``__init__.py``): no edit of it can
    change what a stage computes, so no change detector counts it."""
    body = ast.parse(f.read_text(), filename=str(f)).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


def imported_files(root: Path, f: Path) -> set[Path]:
    """Files of the repository that ``f`` imports: ``import x.y``, ``from x import y`` (y a name
    or a submodule) and relative imports, function-level ones included, with their packages'
    ``__init__.py``."""
    out: set[Path] = set()
    tree = ast.parse(f.read_text(), filename=str(f))
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
    left out). The one rule behind every change detector: the code stage's record, train's
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


def package_data(root: Path, files) -> list[Path]:
    """Data files of the repository that ``files`` read as package resources
    (``resources.files("<package>").joinpath("<literal path>")``): dependencies like code."""
    out = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "joinpath"
                    and isinstance(node.func.value, ast.Call) and getattr(node.func.value.func, "attr", None) == "files"
                    and node.func.value.args and isinstance(node.func.value.args[0], ast.Constant)
                    and node.args and isinstance(node.args[0], ast.Constant)):
                out.add(root / Path(*node.func.value.args[0].value.split(".")) / node.args[0].value)
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


def code_record(root: Path, name: str) -> dict:
    defined_in = registering_file(root, name)  # parses every file of the package: once
    files = code_closure(root, name, defined_in)
    return {"model": name, "defined_in": str(defined_in.relative_to(root)),
            "files": {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.codehash", description=__doc__.split("\n")[0])
    ap.add_argument("model")
    args = ap.parse_args(argv)
    rec = code_record(paths.ROOT, args.model)
    write_json(paths.ROOT / "data" / "code" / f"{args.model}.json", rec, sort_keys=True)
    print(f"{args.model}: {len(rec['files'])} files ({', '.join(rec['files'])})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
