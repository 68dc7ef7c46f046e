"""DVC stage: `python -m datasets.twins <key>` writes data/twins/<key>/ and reports/twins/<key>.png."""

from __future__ import annotations

import argparse
import sys

from . import KEYS, generate, load_params, sheet_path, twin_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m datasets.twins", description=__doc__)
    p.add_argument("key", choices=KEYS)
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args(argv)
    params = load_params(args.params)
    res = generate(args.key, params, twin_dir(args.key), sheet_path(args.key))
    c = res["manifest"]["counts"]
    print(f"twin {args.key}: {c['images']} images, {c['files']} files, {c['image_bytes']} image bytes, "
          f"{len(res['manifest']['defects'])} planted defects, {res['seconds']:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
