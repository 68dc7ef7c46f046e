"""Contact sheet of a twin: a grid of images with their labels written under each."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from datasets.atomic import write_bytes

from . import darn as DA
from . import deepfashion as DF
from . import fashionai as FA


def _wrap(lines, width):
    out = []
    for line in lines:
        while len(line) > width:
            cut = line.rfind(",", 0, width)
            cut = width if cut <= 0 else cut + 1
            out.append(line[:cut])
            line = " " + line[cut:]
        out.append(line)
    return out


def contact_sheet(key: str, result: dict, path: Path, count: int = 24, cols: int = 6) -> Path:
    recs = [r for r in result["records"] if "dup_of" not in r][:count]
    cell, scale, font = 168, 0.33, cv2.FONT_HERSHEY_SIMPLEX
    blocks = []
    for r in recs:
        img = cv2.imdecode(np.frombuffer(result["clean_images"][r["index"]], np.uint8), cv2.IMREAD_COLOR)
        img = cv2.resize(img, (cell, cell), interpolation=cv2.INTER_NEAREST)
        if key == "deepfashion":
            lines = DF.show(r)
        elif key == "fashionai":
            lines = FA.show(r)
        else:
            lines = DA.show(r, result["names"])
        blocks.append((img, _wrap(lines, 30)))
    nlines = max(len(b[1]) for b in blocks)
    h = cell + 12 * nlines + 6
    rows = (len(blocks) + cols - 1) // cols
    sheet = np.full((rows * h, cols * cell, 3), 255, np.uint8)
    for k, (img, lines) in enumerate(blocks):
        y, x = (k // cols) * h, (k % cols) * cell
        sheet[y:y + cell, x:x + cell] = img
        for j, t in enumerate(lines):
            cv2.putText(sheet, t, (x + 2, y + cell + 11 + 12 * j), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.rectangle(sheet, (x, y), (x + cell - 1, y + h - 1), (200, 200, 200), 1)
    ok, buf = cv2.imencode(".png", sheet)
    write_bytes(path, buf.tobytes())
    return path
