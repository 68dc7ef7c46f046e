"""The pointing game: does a model's attention peak fall inside the ground-truth region of a class?

For every (query image, localised class) with a known box (``regions.json``: ``{"<image path>":
[{"attribute", "class", "box": [x0, y0, x1, y1]}]}`` in stored-image pixels), the model's
class-conditional attention map (its attribute-level map where it has no class-conditional one)
is upsampled bilinearly to the stored image; a hit when its peak lies inside the box. Chance is
the mean share of the image the boxes cover: the hit rate of a uniformly random peak.
"""

from __future__ import annotations

import json

import polars as pl
import torch

from benchmark.inference import ImageSource
from datasets import paths
from model.base import RetrievalModel


def load_regions(key: str) -> dict | None:
    """Ground-truth regions of localised classes: ``raw/regions.json`` (the twins' acquisition puts
    the generator's regions there; a real release has none unless its user adds one), else None."""
    p = paths.raw_dir(key) / "regions.json"
    return json.loads(p.read_text()) if p.exists() else None


def match_region_paths(region_paths, image_paths: dict[int, str]) -> dict[str, int]:
    """regions.json key -> image id. The keys are annotation-file paths; the images table's paths
    are relative to the raw folder, which may add a leading folder (an extracted archive): a key
    matches the image path equal to it or ending in '/' + key."""
    by_path = {p: i for i, p in image_paths.items()}
    by_name: dict[str, list[tuple[str, int]]] = {}
    for p, i in by_path.items():
        by_name.setdefault(p.rsplit("/", 1)[-1], []).append((p, i))
    out = {}
    for k in region_paths:
        if k in by_path:
            out[k] = by_path[k]
            continue
        hits = [i for p, i in by_name.get(k.rsplit("/", 1)[-1], []) if p.endswith("/" + k) or k.endswith("/" + p)]
        if len(hits) == 1:
            out[k] = hits[0]
    return out


@torch.no_grad()
def pointing_game(model: RetrievalModel, source: ImageSource, regions: dict, images: pl.DataFrame,
                  taxonomy: pl.DataFrame, query_ids: set[int], device, batch_size: int = 32) -> dict | None:
    """Share of (query image, localised class) whose attention peak, upsampled to the stored image,
    falls inside the ground-truth box."""
    id_of = match_region_paths(regions, dict(zip(images["image_id"].to_list(), images["path"].to_list())))
    size_of = {i: (w, h) for i, w, h in zip(images["image_id"].to_list(), images["width"].to_list(), images["height"].to_list())}
    # regions name attributes as the twin draws them ("part"); a parser may name them as ASEN does
    # ("part-related"): compare names without that suffix
    def norm(a: str) -> str:
        return a.removesuffix("-related")

    attr_id = {norm(a): i for i, a in zip(taxonomy["attribute_id"].to_list(), taxonomy["attribute"].to_list())}
    cls_id = {(norm(a), c): (i, j) for a, c, i, j in zip(taxonomy["attribute"].to_list(), taxonomy["class_name"].to_list(),
                                                         taxonomy["attribute_id"].to_list(), taxonomy["class_id"].to_list())}
    items = []  # (image id, attribute id, class id, box)
    for k, regs in regions.items():
        i = id_of.get(k)
        if i is None or i not in query_ids or size_of.get(i, (None, None))[0] is None:
            continue
        for r in regs:
            a, c = r["attribute"], r["class"]
            a = norm(a) if isinstance(a, str) else a
            if isinstance(a, int) and isinstance(c, int):
                ac = (a, c)
            else:
                ac = cls_id.get((a, c)) or ((attr_id[a], int(c)) if a in attr_id and isinstance(c, int) else None)
            if ac is not None:
                items.append((i, ac[0], ac[1], r["box"]))
    if not items:
        return None
    hits, area = 0, 0.0
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        x = source.tensor([it[0] for it in chunk], device)
        attribute = torch.tensor([it[1] for it in chunk], device=device)
        attn = model.attention_map(x, attribute, torch.tensor([it[2] for it in chunk], device=device))
        if attn is None:  # no class-conditional map (M3-Net_a, the ASEN family): the attribute's map
            attn = model.attention_map(x, attribute)
        if attn is None:
            return None
        for it, a in zip(chunk, attn.float().cpu()):
            w, h = size_of[it[0]]
            area += (it[3][2] - it[3][0]) * (it[3][3] - it[3][1]) / (w * h)
            up = torch.nn.functional.interpolate(a[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            y, x_ = divmod(int(up.argmax()), w)
            x0, y0, x1, y1 = it[3]
            hits += int(x0 <= x_ + 0.5 <= x1 and y0 <= y + 0.5 <= y1)
    # chance: the mean share of the image that the boxes cover (a uniformly random peak's hit rate)
    return {"accuracy": round(100.0 * hits / len(items), 4), "n": len(items),
            "chance": round(100.0 * area / len(items), 4)}
