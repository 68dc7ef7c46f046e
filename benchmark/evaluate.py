"""Evaluate stage: one trained model on one dataset's val and test splits (SPEC section 2).

    python -m benchmark.evaluate <dataset> <model>

Reads the validated tables, the splits, the co-occurrence pairs and the checkpoint(s); writes
``reports/<key>/<model>/{metrics.json, metrics_ci.json, gamma.csv}`` and, for the report stage,
``data/<key>/eval/<model>/`` (embeddings, per-query scores, retrieval and attention examples).

Protocol choices made here (docs/REPORTS.md repeats them):
- Images are embedded once, at the smallest gamma of ``evaluate.gamma`` and ``evaluate.gamma_sweep``.
  The classes a larger gamma keeps are a subset of those (P > gamma, else the top-1 class; the
  ``max_classes`` cap keeps the most probable), so every gamma is a filter over one extraction
  instead of one forward pass per gamma.
- ``excluded_share`` (gamma.csv) is the share of the ground-truth positive labels of the
  evaluated images whose class has no class-specific embedding at that gamma, i.e. labels the
  class level cannot match.
- Several seeds (``train.seeds``): metrics.json holds the mean over seeds and a ``std`` section;
  the bootstrap runs over queries on the per-query AP averaged over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmark.loaders import normalize
from benchmark.params import load_params, training_profile
from benchmark.train import read_selection, selected_checkpoint_path
from datasets import paths
from datasets.schemas import (
    CooccurrencePairsSchema,
    ImagesSchema,
    LabelsSchema,
    SplitsSchema,
    TaxonomySchema,
    read_table,
    write_json,
    PerQuerySchema,
    write_table,
)
from model.base import Embeddings, RetrievalModel

EVAL_SPLITS = ("val", "test")


def eval_dir(key: str, model: str) -> Path:
    return paths.ROOT / "data" / key / "eval" / model


# ----------------------------------------------------------------------------- retrieval API

def _api(name: str):
    """A function of the retrieval/metrics modules, wherever of the two it lives."""
    import importlib

    for mod in ("benchmark.retrieval", "benchmark.metrics"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        if hasattr(m, name):
            return getattr(m, name)
    raise ImportError(f"neither benchmark.retrieval nor benchmark.metrics defines {name}")


def metric_name(key: str) -> str:
    """Per-query key of benchmark.metrics -> metrics.json key: ap_all -> map_all, ap@100 -> map_100,
    recall@100 -> recall_100 (dvc-friendly names)."""
    return key.replace("ap_all", "map_all").replace("ap@", "map_").replace("@", "_")


# ----------------------------------------------------------------------------- model and images

def load_trained_model(path: str | Path, device="cpu") -> RetrievalModel:
    """The trainer's checkpoint (models/<key>/<model>/seed<k>/checkpoint.pt) as a model in eval mode."""
    from benchmark.train import load_trained_model as load

    model, _ = load(path, map_location="cpu")
    return model.to(device).eval()


class ImageSource:
    """Images by id through the loaders' decoding (the same resize and normalisation as training)."""

    def __init__(self, root: Path, images: pl.DataFrame, size: int, workers: int = 0, preprocess: str = "squash"):
        from benchmark.loaders import ImageFolderTable

        self.table = ImageFolderTable(images, root, size, preprocess=preprocess)
        self.size = int(size)
        self.workers = int(workers)
        self.row_of = {int(i): r for r, i in enumerate(self.table.image_ids.tolist())}

    def pixels(self, ids) -> np.ndarray:
        """(B, S, S, 3) uint8 RGB."""
        return np.stack([self.table.pixels(self.row_of[int(i)]) for i in ids])

    def tensor(self, ids, device="cpu") -> torch.Tensor:
        """(B, 3, S, S) normalised, on ``device``."""
        return normalize(torch.stack([self.table.load(self.row_of[int(i)]) for i in ids]).to(device))

    def batches(self, ids, batch_size: int):
        """(images (B, 3, S, S) uint8, image_ids (B,)) in the order of ``ids``."""
        from benchmark.loaders import ImageFolderTable, image_loader

        sub = ImageFolderTable(pl.DataFrame({"image_id": self.table.image_ids, "path": self.table.paths}),
                               self.table.raw_root, self.size, image_ids=ids, preprocess=self.table.preprocess)
        return image_loader(sub, batch_size=batch_size, workers=self.workers)


@torch.no_grad()
def extract_embeddings(model: RetrievalModel, source: ImageSource, ids: np.ndarray, *, gamma: float,
                       max_classes: int, batch_size: int, device) -> Embeddings:
    """Embeddings of images ``ids`` in that order, on the CPU; class_index rows index ``ids``."""
    att, probs, cidx, cemb = [], [], [], []
    start = 0
    for x, _ in source.batches(ids, batch_size):
        e = model.embed(normalize(x.to(device, non_blocking=True)), gamma=gamma, max_classes=max_classes).to("cpu")
        att.append(e.attribute.float())
        if e.probs is not None:
            probs.append(e.probs.float())
        if e.class_index is not None:
            ci = e.class_index.clone()
            ci[:, 0] += start
            cidx.append(ci)
            cemb.append(e.class_emb.float())
        start += len(x)
    return Embeddings(
        attribute=torch.cat(att),  # (n, N, D)
        probs=torch.cat(probs) if probs else None,  # (n, C)
        class_index=torch.cat(cidx) if cidx else None,  # (P, 3)
        class_emb=torch.cat(cemb) if cemb else None,  # (P, D)
    )


def class_keep(emb: Embeddings, gamma: float, classes_per_attribute: list[int]) -> torch.Tensor:
    """(P,) bool: class-specific embeddings that embed(gamma=gamma) would have produced."""
    idx = emb.class_index
    if emb.probs is None:  # the class level does not depend on gamma (e.g. nearest prototype)
        return torch.ones(len(idx), dtype=torch.bool)
    offsets = torch.tensor([0] + list(classes_per_attribute[:-1])).cumsum(0)
    p = emb.probs[idx[:, 0], offsets[idx[:, 1]] + idx[:, 2]]
    top1 = torch.stack([emb.probs[r, offsets[a]:offsets[a] + classes_per_attribute[a]].argmax()
                        for r, a in zip(idx[:, 0].tolist(), idx[:, 1].tolist())]) if len(idx) else idx[:, 2]
    return (p > gamma) | (idx[:, 2] == top1)


# ----------------------------------------------------------------------------- labels

def positive_matrix(labels: pl.DataFrame, taxonomy: pl.DataFrame, image_ids: np.ndarray,
                    maybe_policy: str = "negative", dense: bool = False) -> np.ndarray:
    """(n, C) bool multi-hot over global class ids: the positive labels of ``image_ids``."""
    from benchmark.loaders import label_matrix

    multi_hot, _ = label_matrix(labels, taxonomy, image_ids, maybe_policy, dense=dense)
    return np.asarray(multi_hot, dtype=bool)


def attribute_layout(taxonomy: pl.DataFrame) -> tuple[list[str], list[int]]:
    """Attribute names and classes per attribute, attributes in id order."""
    from benchmark.loaders import classes_per_attribute

    t = taxonomy.group_by("attribute_id").agg(pl.col("attribute").first()).sort("attribute_id")
    return t["attribute"].to_list(), classes_per_attribute(taxonomy)


# ----------------------------------------------------------------------------- retrieval

def evaluate_split(emb: Embeddings, rows_q: np.ndarray, rows_c: np.ndarray, labels: np.ndarray,
                   classes_per_attribute: list[int], *, relevance: str, ks: list[int], ranking: str,
                   keep: torch.Tensor | None = None, device="cpu", chunk: int = 2048,
                   top: int = 0) -> dict:
    """Per-query metrics of one split. ``rows_q``/``rows_c``: rows of ``emb``/``labels`` of its query
    and candidate images. Returns numpy arrays: query_row, attribute_id, one per metric, and
    ``top`` (Q, top) ranked candidate rows with ``top_relevant`` when top > 0."""
    retrieval_metrics = _api("retrieval_metrics")
    relevance_fn = _api("relevance")
    attribute_similarity = _api("attribute_similarity")
    offsets = np.cumsum([0] + list(classes_per_attribute))
    out: dict[str, list] = {"query_row": [], "attribute_id": []}
    tops, top_rel = [], []
    for n, m_n in enumerate(classes_per_attribute):
        sl = slice(offsets[n], offsets[n + 1])
        qn = rows_q[labels[rows_q, sl].any(1)]  # queries: positive in n
        cn = rows_c[labels[rows_c, sl].any(1)]  # ranked list: every candidate positive in n
        if len(qn) == 0:
            continue
        c_att = emb.attribute[cn, n].to(device)
        c_lab = torch.from_numpy(labels[cn, sl]).to(device)
        if ranking == "multi-granularity":
            c_idx, c_emb = _class_rows(emb, cn, n, keep)
            c_idx, c_emb = c_idx.to(device), c_emb.to(device)
        for s in range(0, len(qn), chunk):
            q = qn[s:s + chunk]
            sim = attribute_similarity(emb.attribute[q, n].to(device), c_att)  # (Q, C)
            if ranking == "multi-granularity":
                q_idx, q_emb = _class_rows(emb, q, n, keep)
                class_sim, shared = _api("class_level_similarity")(
                    q_idx.to(device), q_emb.to(device), c_idx, c_emb, len(q), len(cn), m_n)
                sim = _api("multi_granularity_scores")(sim, class_sim, shared)
            rel = relevance_fn(torch.from_numpy(labels[q, sl]).to(device), c_lab, relevance)  # (Q, C) bool
            per_q = retrieval_metrics(sim, rel, ks=tuple(ks))
            for k, v in per_q.items():
                out.setdefault(k, []).append(torch.as_tensor(v).double().cpu().numpy())
            out["query_row"].append(q)
            out["attribute_id"].append(np.full(len(q), n))
            if top:
                t = min(top, len(cn))
                # ties by candidate index, as the metrics do: a stable sort of -score
                order = torch.sort(-sim.double(), dim=1, stable=True).indices[:, :t]
                rank_rows = np.full((len(q), top), -1)
                rank_rows[:, :t] = cn[order.cpu().numpy()]
                rel_top = np.zeros((len(q), top), dtype=bool)
                rel_top[:, :t] = torch.gather(rel, 1, order).cpu().numpy()
                tops.append(rank_rows)
                top_rel.append(rel_top)
    res = {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}
    if top:
        res["top"] = np.concatenate(tops) if tops else np.zeros((0, top), dtype=int)
        res["top_relevant"] = np.concatenate(top_rel) if top_rel else np.zeros((0, top), dtype=bool)
    return res


def _class_rows(emb: Embeddings, rows: np.ndarray, attribute: int, keep: torch.Tensor | None):
    """(P, 2) (position in ``rows``, class id) and (P, D) class embeddings of attribute ``attribute``."""
    idx = emb.class_index
    pos = torch.full((len(emb.attribute),), -1, dtype=torch.long)
    pos[torch.from_numpy(np.asarray(rows))] = torch.arange(len(rows))
    sel = (idx[:, 1] == attribute) & (pos[idx[:, 0]] >= 0)
    if keep is not None:
        sel &= keep
    return torch.stack([pos[idx[sel, 0]], idx[sel, 2]], 1), emb.class_emb[sel]


def cooccurring_classes(pairs: pl.DataFrame, min_rate: float) -> tuple[set[int], int]:
    sel = pairs.filter(pl.col("rate") >= min_rate)
    return set(sel["class_a"].to_list()) | set(sel["class_b"].to_list()), sel.height


def summarise(per_query: dict, labels: np.ndarray, classes_per_attribute: list[int], names: list[str],
              ks: list[int], cooc: set[int], n_pairs: int) -> dict:
    """metrics.json's section of one split, in percent."""
    aggregate = _api("aggregate")
    metric_keys = [k for k in per_query if k not in ("query_row", "attribute_id", "top", "top_relevant")]
    agg = aggregate({k: torch.as_tensor(per_query[k]) for k in metric_keys},
                    torch.as_tensor(per_query["attribute_id"]), names)
    section = {}
    for k in metric_keys:
        section[metric_name(k)] = {a: _num(v) for a, v in agg[k].items()}
    section["queries"] = {a: int(v) for a, v in agg["queries"].items()}
    flags = cooccurring_flags(per_query, labels, classes_per_attribute, cooc)
    ap = per_query["ap_all"][flags]
    ap = ap[~np.isnan(ap)]
    section["cooccurring"] = {
        "map_all": _num(100 * ap.mean()) if len(ap) else None,
        "queries": int(len(ap)),
        "classes": len(cooc),
        "pairs": int(n_pairs),
    }
    return section


def cooccurring_flags(per_query, labels, classes_per_attribute, cooc: set[int]) -> np.ndarray:
    """(Q,) bool: the query's label set S_q holds a class of a co-occurring pair."""
    offsets = np.cumsum([0] + list(classes_per_attribute))
    mask = np.zeros(labels.shape[1], dtype=bool)
    mask[list(cooc)] = True
    flags = np.zeros(len(per_query["query_row"]), dtype=bool)
    for i, (r, n) in enumerate(zip(per_query["query_row"], per_query["attribute_id"])):
        sl = slice(offsets[n], offsets[n + 1])
        flags[i] = (labels[r, sl] & mask[sl]).any()
    return flags


def _num(v):
    v = float(v)
    return None if math.isnan(v) else round(v, 4)


# ----------------------------------------------------------------------------- pointing game

def load_regions(key: str) -> dict | None:
    """Ground-truth regions of localised classes: raw/regions.json, else the twin's regions.json."""
    for p in (paths.raw_dir(key) / "regions.json", paths.twin_dir(key) / "regions.json"):
        if p.exists():
            return json.loads(p.read_text())
    return None


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


# ----------------------------------------------------------------------------- examples for the report

def pick_example_queries(per_query: dict, labels: np.ndarray, classes_per_attribute, n: int, seed: int) -> np.ndarray:
    """Indices into per_query of ``n`` test queries, the same for every model (they depend only on
    labels, splits and the seed): half single-label, half multi-label where multi-label ones exist."""
    offsets = np.cumsum([0] + list(classes_per_attribute))
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
    offsets = np.cumsum([0] + list(classes_per_attribute))
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


# ----------------------------------------------------------------------------- stage

def _mean_std(sections: list[dict]) -> tuple[dict, dict]:
    """Element-wise mean and sample std of nested dicts of numbers (None where any is None)."""
    if isinstance(sections[0], dict):
        pairs = {k: _mean_std([s[k] for s in sections]) for k in sections[0]}
        return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}
    if any(v is None for v in sections):
        return None, None
    arr = np.array(sections, dtype=float)
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    if all(isinstance(v, int) for v in sections):
        return int(round(mean)), round(std, 4)
    return round(mean, 4), round(std, 4)


def _write_json(path: Path, obj) -> None:
    write_json(path, obj)


def run(key: str, model_name: str, params: dict, device=None) -> dict:
    ev = params["evaluate"]
    prof = training_profile(params)
    seeds = list(params.get("train", {}).get("seeds", [0]) or [0])
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vdir = paths.validated_dir(key)
    images = read_table(vdir / "images.parquet", ImagesSchema)
    labels = read_table(vdir / "labels.parquet", LabelsSchema)
    taxonomy = read_table(vdir / "taxonomy.parquet", TaxonomySchema).sort("global_class_id")
    splits = read_table(paths.splits_path(key), SplitsSchema)
    pairs = read_table(paths.cooccurrence_dir(key) / "pairs.parquet", CooccurrencePairsSchema)
    names, classes_per_attribute = attribute_layout(taxonomy)
    maybe_policy = params.get("validate", {}).get("maybe_policy", "negative")

    ev_rows = splits.filter(pl.col("split").is_in(list(EVAL_SPLITS))).sort("image_id")
    ids = ev_rows["image_id"].to_numpy()
    from benchmark.loaders import dense_annotation

    labels_m = positive_matrix(labels, taxonomy, ids, maybe_policy, dense_annotation(key))  # (n, C)
    role_rows = {(s, r): np.flatnonzero(((ev_rows["split"] == s) & (ev_rows["role"] == r)).to_numpy())
                 for s in EVAL_SPLITS for r in ("query", "candidate")}
    cooc, n_pairs = cooccurring_classes(pairs, ev["cooccurrence_min_rate"])
    ks = list(ev.get("ks", [100]))
    gammas = [float(g) for g in ev["gamma_sweep"]]
    source = ImageSource(paths.raw_dir(key), images, prof["image_size"], prof.get("workers", 0),
                         preprocess=prof.get("preprocess", "squash"))
    out_dir = eval_dir(key, model_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_examples = int(ev.get("examples", 4))
    top = int(ev.get("example_top", 8))

    per_seed, per_query_tables, gamma_rows, selections = [], [], [], []
    pointing, examples = None, {}
    for si, seed in enumerate(seeds):
        selection = read_selection(key, model_name, seed)  # train's checkpoint policy: last | best_val
        selections.append(selection)
        model = load_trained_model(selected_checkpoint_path(key, model_name, seed), device)
        class_level = bool(model.has_class_level)
        emb = extract_embeddings(model, source, ids, gamma=min(gammas + [ev["gamma"]]),
                                 max_classes=ev["max_classes"], batch_size=int(ev.get("batch_size", 64)),
                                 device=device)
        class_level = class_level and emb.class_index is not None
        ranking = "multi-granularity" if class_level else "attribute"
        keep = class_keep(emb, ev["gamma"], classes_per_attribute) if class_level else None
        metrics: dict = {}
        for split in EVAL_SPLITS:
            pq = evaluate_split(emb, role_rows[(split, "query")], role_rows[(split, "candidate")], labels_m,
                                classes_per_attribute, relevance=ev["relevance"], ks=ks, ranking=ranking,
                                keep=keep, device=device, top=top if (split == "test" and si == 0) else 0)
            metrics[split] = summarise(pq, labels_m, classes_per_attribute, names, ks, cooc, n_pairs)
            per_query_tables.append(_per_query_frame(pq, ids, seed, split, ranking, labels_m, classes_per_attribute, cooc))
            if split == "test" and si == 0:
                examples["retrieval"] = _retrieval_example(pq, ids, labels_m, classes_per_attribute, n_examples,
                                                          int(ev["bootstrap_seed"]), ranking)
            if split == "test" and class_level:
                apq = evaluate_split(emb, role_rows[(split, "query")], role_rows[(split, "candidate")], labels_m,
                                     classes_per_attribute, relevance=ev["relevance"], ks=ks, ranking="attribute",
                                     device=device)
                s = summarise(apq, labels_m, classes_per_attribute, names, ks, cooc, n_pairs)
                metrics["attribute_ranking"] = {"test": {k: {"overall": s[k]["overall"]} for k in s
                                                         if k not in ("queries", "cooccurring")}}
        gamma_rows.append(_gamma_sweep(emb, role_rows, labels_m, classes_per_attribute, ev, ks, gammas,
                                       class_level, device, names, metrics))
        if si == 0:
            regions = load_regions(key)
            q_ids = set(ids[role_rows[("test", "query")]].tolist()) | set(ids[role_rows[("val", "query")]].tolist())
            if regions is not None:
                pointing = pointing_game(model, source, regions, images, taxonomy, q_ids, device)
            test_q = role_rows[("test", "query")]
            att = attention_examples(model, source, ids[test_q], labels_m[test_q], classes_per_attribute, device,
                                     int(ev["bootstrap_seed"]), n_examples)
            if att is not None:
                examples["attention"] = att
            _save_embeddings(out_dir, emb, ids)
        per_seed.append(metrics)

    mean, std = _mean_std(per_seed) if len(per_seed) > 1 else (per_seed[0], None)
    result = dict(mean)
    if std is not None:
        result["std"] = std
        result["seeds"] = {"count": len(seeds)}
    if pointing is not None:
        result["pointing_game"] = pointing
    result["checkpoint"] = {"policy": selections[0]["policy"], "epoch": selections[0]["epoch"]}
    if len(selections) > 1:
        result["checkpoint"]["epochs"] = [sel["epoch"] for sel in selections]

    per_query = pl.concat(per_query_tables)
    write_table(per_query, out_dir / "per_query.parquet", PerQuerySchema)
    ci = _confidence_intervals(per_query, ev)
    _save_examples(out_dir, examples, source, names, taxonomy)
    (out_dir / "info.json").write_text(json.dumps({"dataset": key, "model": model_name, "ranking": per_query["ranking"][0],
                                                   "attributes": names, "classes_per_attribute": classes_per_attribute,
                                                   "seeds": seeds}, indent=2))

    rdir = paths.model_reports_dir(key, model_name)
    _write_json(rdir / "metrics.json", result)
    _write_json(rdir / "metrics_ci.json", ci)
    g = pl.DataFrame(gamma_rows[0]).with_columns(pl.col("map_all").cast(pl.Float64), pl.col("excluded_share").cast(pl.Float64))
    if len(gamma_rows) > 1:
        g = g.with_columns(pl.Series("map_all", np.mean([[r["map_all"] for r in gr] for gr in gamma_rows], 0)))
    rdir.mkdir(parents=True, exist_ok=True)
    g.write_csv(rdir / "gamma.csv", float_precision=4)
    return result


def _per_query_frame(pq, ids, seed, split, ranking, labels_m, classes_per_attribute, cooc) -> pl.DataFrame:
    flags = cooccurring_flags(pq, labels_m, classes_per_attribute, cooc)
    cols = {"seed": np.full(len(pq["query_row"]), seed, dtype=np.int64), "split": [split] * len(pq["query_row"]),
            "ranking": [ranking] * len(pq["query_row"]),
            "image_id": ids[pq["query_row"]].astype(np.int64), "attribute_id": pq["attribute_id"].astype(np.int64),
            "cooccurring": flags}
    for k in pq:
        if k not in ("query_row", "attribute_id", "top", "top_relevant"):
            cols[metric_name(k)] = pq[k].astype(np.float64)
    return pl.DataFrame(cols)


def _confidence_intervals(per_query: pl.DataFrame, ev: dict) -> dict:
    """95% (evaluate.ci_level) bootstrap intervals over queries of every overall figure, in percent;
    per-query values averaged over seeds first."""
    bootstrap_ci = _api("bootstrap_ci")
    level = float(ev.get("ci_level", 0.95))
    metric_cols = [c for c in per_query.columns if c not in ("seed", "split", "ranking", "image_id", "attribute_id", "cooccurring")]
    mean_q = per_query.group_by(["split", "image_id", "attribute_id"], maintain_order=True).agg(
        [pl.col(c).mean() for c in metric_cols] + [pl.col("cooccurring").first()])
    out = {}
    for split in EVAL_SPLITS:
        part = mean_q.filter(pl.col("split") == split)
        sec = {}
        for c in metric_cols:
            v = part[c].drop_nans().drop_nulls().to_numpy()
            sec[c] = _ci(bootstrap_ci, v, ev, level)
        v = part.filter(pl.col("cooccurring"))["map_all"].drop_nans().drop_nulls().to_numpy()
        sec["cooccurring_map_all"] = _ci(bootstrap_ci, v, ev, level)
        out[split] = sec
    return out


def _ci(bootstrap_ci, v: np.ndarray, ev: dict, level: float) -> dict:
    if len(v) == 0:
        return {"overall": None, "low": None, "high": None}
    lo, hi = bootstrap_ci(torch.tensor(v, dtype=torch.float64), int(ev["bootstrap"]), int(ev["bootstrap_seed"]), level)
    lo, hi = float(lo), float(hi)
    if hi <= 1.0 + 1e-9:  # per-query values are fractions: report percent like metrics.json
        lo, hi = 100 * lo, 100 * hi
    return {"overall": _num(100 * v.mean()), "low": _num(lo), "high": _num(hi)}


def _gamma_sweep(emb, role_rows, labels_m, classes_per_attribute, ev, ks, gammas, class_level, device, names, metrics):
    rows = []
    q, c = role_rows[("test", "query")], role_rows[("test", "candidate")]
    if not class_level:
        flat = metrics["test"]["map_all"]["overall"]
        return [{"gamma": g, "map_all": flat, "excluded_share": None} for g in gammas]
    offsets = np.cumsum([0] + list(classes_per_attribute))
    ev_rows = np.concatenate([q, c])
    pos_r, pos_g = np.nonzero(labels_m[ev_rows])
    for g in gammas:
        keep = class_keep(emb, g, classes_per_attribute)
        pq = evaluate_split(emb, q, c, labels_m, classes_per_attribute, relevance=ev["relevance"], ks=ks,
                            ranking="multi-granularity", keep=keep, device=device)
        ap = pq["ap_all"][~np.isnan(pq["ap_all"])]
        kept = emb.class_index[keep]
        gid = (torch.as_tensor(offsets)[kept[:, 1]] + kept[:, 2]).numpy()
        have = set(zip(kept[:, 0].tolist(), gid.tolist()))
        covered = sum((int(ev_rows[r]), int(gg)) in have for r, gg in zip(pos_r, pos_g))
        rows.append({"gamma": g, "map_all": _num(100 * ap.mean()) if len(ap) else None,
                     "excluded_share": _num(1 - covered / len(pos_r)) if len(pos_r) else None})
    return rows


def _retrieval_example(pq, ids, labels_m, classes_per_attribute, n, seed, ranking) -> dict:
    pick = pick_example_queries(pq, labels_m, classes_per_attribute, n, seed)
    top = pq["top"][pick]
    return {"query_image_id": ids[pq["query_row"][pick]], "attribute_id": pq["attribute_id"][pick],
            "top_image_id": np.where(top >= 0, ids[np.maximum(top, 0)], -1), "top_relevant": pq["top_relevant"][pick],
            "ap_all": pq["ap_all"][pick], "ranking": ranking}


def _save_embeddings(out_dir: Path, emb: Embeddings, ids: np.ndarray) -> None:
    arrays = {"image_id": ids, "attribute": emb.attribute.numpy().astype(np.float16)}
    if emb.probs is not None:
        arrays["probs"] = emb.probs.numpy().astype(np.float16)
    if emb.class_index is not None:
        arrays["class_index"] = emb.class_index.numpy()
        arrays["class_emb"] = emb.class_emb.numpy().astype(np.float16)
    np.savez_compressed(out_dir / "embeddings.npz", **arrays)


def _save_examples(out_dir: Path, examples: dict, source: ImageSource, names, taxonomy) -> None:
    """retrieval.npz (Figure 4) and attention.npz (Figure 3), with the pixels they show, so the
    report stage needs nothing but this folder."""
    if "retrieval" in examples:
        r = examples["retrieval"]
        shown = sorted({int(i) for i in np.concatenate([r["query_image_id"], r["top_image_id"].ravel()]) if i >= 0})
        np.savez_compressed(out_dir / "retrieval.npz", query_image_id=r["query_image_id"], attribute_id=r["attribute_id"],
                            top_image_id=r["top_image_id"], top_relevant=r["top_relevant"], ap_all=r["ap_all"],
                            shown_image_id=np.array(shown, dtype=np.int64),
                            pixels=source.pixels(shown) if shown else np.zeros((0, source.size, source.size, 3), np.uint8))
    if "attention" in examples:
        np.savez_compressed(out_dir / "attention.npz", **examples["attention"])
    class_names = {f"{a}/{c}": n for a, c, n in zip(taxonomy["attribute_id"].to_list(), taxonomy["class_id"].to_list(),
                                                   taxonomy["class_name"].to_list())}
    (out_dir / "names.json").write_text(json.dumps({"attributes": names, "classes": class_names}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("model")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    args = ap.parse_args(argv)
    result = run(args.dataset, args.model, load_params(args.params), device=args.device)
    t = result["test"]
    print(f"{args.dataset}/{args.model}: test MAP@all {t['map_all']['overall']}, MAP@100 {t['map_100']['overall']}, "
          f"Recall@100 {t['recall_100']['overall']} ({t['queries']['used']} queries)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
