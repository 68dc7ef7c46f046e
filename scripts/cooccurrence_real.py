"""Class co-occurrence (paper section 4.3.1) on the real DeepFashion labels of ASEN's valid split.

    python scripts/cooccurrence_real.py [--labels <ASEN splits>/DeepFashion/label_valid.txt]
                                        [--min-rate 0.002] [--out reports/real_cooccurrence.json]

``label_valid.txt`` is tab separated, ``<fidx> <type 1-5> <global id 0-999> [<type> <id> ...]``,
with trailing tabs (and CRLF line ends in the copy we have). Every line is one image; an image with
no pair still counts in N. Uses the stage's own computation (``datasets.cooccurrence``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets.cooccurrence import cooccurrence, summary  # noqa: E402
from datasets.errors import FormatError  # noqa: E402

DEFAULT = ROOT.parent / "shared" / "real" / "asen_splits" / "DeepFashion" / "label_valid.txt"


def read_label_file(path) -> tuple[pl.DataFrame, int]:
    """(image_id, global_class_id) positives and the number of images (lines) of an ASEN
    DeepFashion label file. The image id is the file index ``<fidx>``."""
    img, cls, seen = [], [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            tok = line.split()
            if not tok:
                continue
            if len(tok) % 2 != 1 or not all(t.isdigit() for t in tok):
                raise FormatError(path, lineno, "<fidx> followed by <type 1-5> <global id 0-999> pairs", line.strip())
            fidx = int(tok[0])
            if fidx in seen:
                raise FormatError(path, lineno, "each <fidx> once", line.strip())
            seen.add(fidx)
            for t, g in zip(tok[1::2], tok[2::2]):
                t, g = int(t), int(g)
                if not (1 <= t <= 5 and 0 <= g <= 999):
                    raise FormatError(path, lineno, "type in 1-5 and global id in 0-999", f"{t} {g}")
                img.append(fidx)
                cls.append(g)
    pos = pl.DataFrame({"image_id": img, "global_class_id": cls},
                       schema={"image_id": pl.Int64, "global_class_id": pl.Int32}).unique()
    return pos, len(seen)


def analyse(path, min_rate: float = 0.002, n_classes: int = 1000) -> dict:
    pos, n = read_label_file(path)
    pairs, classes = cooccurrence(pos, n, range(n_classes), min_rate)
    out = summary(pairs, classes, n, min_rate)
    out["labels_per_image"] = pos.height / n
    out["source"] = str(path)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", default=str(DEFAULT))
    ap.add_argument("--min-rate", type=float, default=0.002)
    ap.add_argument("--out", default=None, help="also write the summary here as JSON")
    args = ap.parse_args(argv)
    res = analyse(args.labels, args.min_rate)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
