"""`fashionbench twins {generate,preview}`: write twins, or only their contact sheets."""

from __future__ import annotations

import sys
from pathlib import Path

from . import KEYS, generate, load_params, sheet_path, twin_dir


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["generate", "preview"],
                        help="generate: write data/twins/<key>/ and the sheet; preview: only the contact sheet")
    parser.add_argument("keys", nargs="*", choices=[[], *KEYS], default=[], metavar="KEY",
                        help=f"twins to do ({', '.join(KEYS)}; default all)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="folder for the contact sheets (default reports/twins)")


def run(args) -> int:
    params = load_params(args.params)
    for key in args.keys or KEYS:
        sheet = Path(args.out) / f"{key}.png" if args.out else sheet_path(key)
        out = twin_dir(key) if args.action == "generate" else None
        res = generate(key, params, out, sheet)
        print(f"{key}: {sheet} ({res['manifest']['counts']['images']} images, {res['seconds']:.2f} s)", file=sys.stderr)
    return 0
