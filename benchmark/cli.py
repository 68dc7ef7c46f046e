"""`fashionbench`: the suite's command line. Subcommands live beside the code they drive and are
registered here lazily, so `fashionbench --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). Each module has `add_arguments(parser)` and `run(args) -> int`.
SUBCOMMANDS = {
    "twins": ("datasets.twins.cli", "generate or preview the twin datasets"),
    "check": ("datasets.check", "validate a user's own download of a benchmark without DVC"),
    "perf": ("benchmark.perf", "measure the training step, extraction, loader and metrics side by side"),
    "compare": ("benchmark.compare", "compare two revisions' committed per-query results, with significance"),
    "score": ("benchmark.score", "score precomputed embeddings under the protocol, as a trained model"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fashionbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    loaded = {}
    argv = sys.argv[1:] if argv is None else argv
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_)
        # only import the module of the subcommand being run
        if argv and argv[0] == name:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            loaded[name] = mod
    args = parser.parse_args(argv)
    try:
        return int(loaded[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print(f"fashionbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
