"""Example selection for the report's figures: which queries and images are shown, and their files.

The same queries and images for every model (they depend on labels, splits and a seed only), so
that Figure 4 compares two rankings of one query and Figure 3 the same images' attention.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark.inference import ImageSource, write_npz
from datasets.schemas import write_json
from datasets.taxonomy import class_offsets


def pick_example_queries(per_query: dict, labels: np.ndarray, classes_per_attribute, n: int, seed: int) -> np.ndarray:
    """Indices into per_query of ``n`` test queries, the same for every model (they depend only on
    labels, splits and the seed): half single-label, half multi-label where multi-label ones exist."""
    offsets = class_offsets(classes_per_attribute)
    order = np.lexsort((per_query["query_row"], per_query["attribute_id"]))
    n_labels = np.array([labels[per_query["query_row"][i], offsets[a]:offsets[a + 1]].sum()
                         for i, a in enumerate(per_query["attribute_id"])])
    valid = order[~np.isnan(per_query["ap_all"][order])]
    rng = np.random.default_rng(seed)
    multi = valid[n_labels[valid] > 1]
    single = valid[n_labels[valid] <= 1]
    k_multi = min(len(multi), n // 2)
    pick = list(rng.choice(multi, k_multi, replace=False)) if k_multi else []
    pick += list(rng.choice(single, min(len(single), n - k_multi), replace=False)) if len(single) else []
    return np.array(sorted(pick, key=lambda i: (per_query["attribute_id"][i], per_query["query_row"][i])), dtype=int)


@torch.no_grad()
def attention_examples(model, source, ids, labels_rows, classes_per_attribute, device, seed, n):
    """Attribute-level and class-level attention maps of ``n`` images (Figure 3), or None."""
    offsets = class_offsets(classes_per_attribute)
    rng = np.random.default_rng(seed)
    cand = [(r, a) for r in range(len(ids)) for a in range(len(classes_per_attribute))
            if labels_rows[r, offsets[a]:offsets[a + 1]].any()]
    if not cand:
        return None
    pick = [cand[i] for i in sorted(rng.choice(len(cand), min(n, len(cand)), replace=False))]
    rows = [p[0] for p in pick]
    attrs = torch.tensor([p[1] for p in pick], device=device)
    classes = torch.tensor([int(np.flatnonzero(labels_rows[r, offsets[a]:offsets[a + 1]])[0]) for r, a in pick], device=device)
    pix = source.pixels(ids[rows])
    x = source.tensor(ids[rows], device)
    a_map = model.attention_map(x, attrs)
    c_map = model.attention_map(x, attrs, classes)
    if a_map is None:
        return None
    return {"image_id": ids[rows], "pixels": pix, "attribute_id": attrs.cpu().numpy(), "class_id": classes.cpu().numpy(),
            "attribute_map": a_map.float().cpu().numpy(),
            "class_map": (c_map if c_map is not None else a_map).float().cpu().numpy()}



def retrieval_example(pq, ids, labels_m, classes_per_attribute, n, seed, ranking) -> dict:
    pick = pick_example_queries(pq, labels_m, classes_per_attribute, n, seed)
    top = pq["top"][pick]
    return {"query_image_id": ids[pq["query_row"][pick]], "attribute_id": pq["attribute_id"][pick],
            "top_image_id": np.where(top >= 0, ids[np.maximum(top, 0)], -1), "top_relevant": pq["top_relevant"][pick],
            "ap_all": pq["ap_all"][pick], "ranking": ranking}


def save_examples(out_dir: Path, examples: dict, source: ImageSource, names, taxonomy) -> None:
    """retrieval.npz (Figure 4) and/or attention.npz (Figure 3), with the pixels they show, and
    names.json, so that the report stage needs nothing but this folder."""
    if "retrieval" in examples:
        r = examples["retrieval"]
        shown = sorted({int(i) for i in np.concatenate([r["query_image_id"], r["top_image_id"].ravel()]) if i >= 0})
        write_npz(out_dir / "retrieval.npz", dict(
            query_image_id=r["query_image_id"], attribute_id=r["attribute_id"], top_image_id=r["top_image_id"],
            top_relevant=r["top_relevant"], ap_all=r["ap_all"], shown_image_id=np.array(shown, dtype=np.int64),
            pixels=source.pixels(shown) if shown else np.zeros((0, source.size, source.size, 3), np.uint8)))
    if "attention" in examples:
        write_npz(out_dir / "attention.npz", examples["attention"])
    class_names = {f"{a}/{c}": n for a, c, n in zip(taxonomy["attribute_id"].to_list(), taxonomy["class_id"].to_list(),
                                                   taxonomy["class_name"].to_list())}
    write_json(out_dir / "names.json", {"attributes": names, "classes": class_names})
