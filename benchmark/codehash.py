"""Code stage: the source files that one model's weights depend on, by content.

    python -m benchmark.codehash <model>

Writes ``data/code/<model>.json``: the file of ``model/`` that registers the model
(``@register_model("<model>")``) and, transitively, every ``model`` module it imports, each with
its sha256. The train, embed and attention stages of a model depend on this file instead of the
whole ``model/`` folder: DVC reruns this cheap stage after any edit there, and since its output
changes only when one of the model's own files does, a comment in ``model/asenpp.py`` retrains
ASEN++ and nothing else. Static (``ast``): nothing is imported, so it runs without torch.
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
    hits = []
    for f in sorted((root / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                for d in node.decorator_list:
                    if (isinstance(d, ast.Call) and getattr(d.func, "id", getattr(d.func, "attr", None)) == "register_model"
                            and d.args and isinstance(d.args[0], ast.Constant) and d.args[0].value == name):
                        hits.append(f)
    if len(hits) != 1:
        raise SystemExit(f"model {name!r}: registered in {len(hits)} files of {root / PACKAGE} (expected one)")
    return hits[0]


def imported_files(root: Path, f: Path) -> set[Path]:
    """Files of the package that ``f`` imports (absolute ``model.x`` and relative imports)."""
    out = set()
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
            if m == PACKAGE or m.startswith(PACKAGE + "."):
                p = _module_file(root, m)
                if p is not None:
                    out.add(p)
    return out


def code_closure(root: Path, name: str, defined_in: Path | None = None) -> list[Path]:
    """The registering file, everything it imports from the package, transitively, and ALWAYS."""
    todo = [defined_in or registering_file(root, name)] + [root / a for a in ALWAYS]
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(imported_files(root, f) - seen)
    return sorted(seen)


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
