"""Evaluate stage: one trained model over a dataset's val and test splits, then its rankings and metrics.

    python -m benchmark.evaluate <dataset> <model>

First the network: every seed's selected checkpoint embeds the val and test images
(``benchmark.embed``: ``data/<key>/embeddings/<model>/seed<k>.npz``), and the first seed's attention
maps give the pointing game (``benchmark.attention``: ``data/<key>/attention/<model>/``,
``reports/<key>/<model>/pointing.json``). Then the scoring (``run``), which reads those embeddings, the validated
tables, the splits and the co-occurrence pairs; writes ``reports/<key>/<model>/{metrics.json,
metrics_ci.json, gamma.csv, per_query.parquet}`` (the last: each seed's per-query test metrics in
float32, committed with the reports for ``fashionbench compare``) and, for the leaderboard and
report stages, ``data/<key>/eval/<model>/`` (per-query scores, retrieval examples, and the same
metrics.json and metrics_ci.json, which the report stage reads). ``run`` runs no network, so
``fashionbench score`` scores a user's own embeddings through it. The protocol: docs/PROTOCOL.md.

Choices made here (docs/REPORTS.md repeats them):
- Every gamma is a filter over the one extraction of the embeddings (at the smallest gamma).
- ``excluded_share`` (gamma.csv) is the share of the ground-truth positive labels of the
  evaluated images whose class has no class-specific embedding at that gamma, i.e. labels the
  class level cannot match.
- ``max_classes`` caps the class-specific embeddings per (image, attribute); ``class_cap`` in
  metrics.json (and ``cap_binding_share`` in gamma.csv, per gamma) says how often it binds, so a
  low-gamma row of gamma.csv reads "the top ``max_classes`` above gamma" where it does.
- ``no_relevant``: queries with no relevant candidate are left out of the means (default) or
  count as AP = 0 (ASEN's code); ``queries.no_relevant`` counts them either way.
- Several seeds (``train.seeds``): metrics.json holds the mean over seeds and a ``std`` section;
  the bootstrap runs over queries on the per-query AP averaged over seeds.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import polars as pl
import torch

from benchmark.evalsets import EVAL_SPLITS, load_eval_set
from benchmark.examples import retrieval_example, save_examples
from benchmark.inference import (ImageSource, embeddings_checkpoint, embeddings_path, load_embeddings,
                                 model_stage_arguments, resolve_device)
from benchmark.params import load_params, training_profile
from datasets import paths
from datasets.atomic import atomic_path
from datasets.taxonomy import class_offsets
from benchmark.query_report import ReportPerQuerySchema, report_path, report_per_query
from datasets.schemas import CooccurrencePairsSchema, PerQuerySchema, read_table, write_json, write_table
from model.base import Embeddings, gamma_keep

# evaluate_split's per-query arrays that are not metrics: rows, sizes of the ranked list
QUERY_FIELDS = ("query_row", "attribute_id", "top", "top_relevant", "n_relevant", "n_candidates", "n_labels")
# per_query.parquet's columns that are not metrics
QUERY_COLUMNS = ("seed", "split", "ranking", "image_id", "attribute_id", "cooccurring", "n_relevant", "n_candidates",
                 "n_labels")


def metric_name(key: str) -> str:
    """Per-query key of benchmark.metrics -> metrics.json key: ap_all -> map_all, ap@100 -> map_100,
    recall@100 -> recall_100 (dvc-friendly names)."""
    return key.replace("ap_all", "map_all").replace("ap@", "map_").replace("@", "_")


def class_keep(emb: Embeddings, gamma: float, classes_per_attribute: list[int]) -> torch.Tensor:
    """(P,) bool: class-specific embeddings that embed(gamma=gamma) would have produced."""
    idx = emb.class_index
    if emb.probs is None:  # the class level does not depend on gamma (e.g. nearest prototype)
        return torch.ones(len(idx), dtype=torch.bool)
    offsets = torch.from_numpy(class_offsets(classes_per_attribute)[:-1])
    p = emb.probs[idx[:, 0], offsets[idx[:, 1]] + idx[:, 2]]
    # the most probable class of every (image, attribute), then looked up per row (argmax: first maximum)
    top1_bn = torch.stack([emb.probs[:, int(offsets[a]):int(offsets[a]) + m].argmax(1)
                           for a, m in enumerate(classes_per_attribute)], dim=1)  # (B, N)
    top1 = top1_bn[idx[:, 0], idx[:, 1]] if len(idx) else idx[:, 2]
    return gamma_keep(p, gamma, idx[:, 2] == top1)


# ----------------------------------------------------------------------------- retrieval

CHUNK_ELEMENTS = 1 << 23  # (query, candidate) cells ranked at once by evaluate_split


def evaluate_split(emb: Embeddings, rows_q: np.ndarray, rows_c: np.ndarray, labels: np.ndarray,
                   classes_per_attribute: list[int], *, relevance: str, ks: list[int], ranking: str,
                   keep: torch.Tensor | None = None, device="cpu", chunk: int = 2048,
                   top: int = 0) -> dict:
    """Per-query metrics of one split. ``rows_q``/``rows_c``: rows of ``emb``/``labels`` of its query
    and candidate images. Returns numpy arrays: query_row, attribute_id, one per metric, and
    ``top`` (Q, top) ranked candidate rows with ``top_relevant`` when top > 0."""
    from benchmark.metrics import retrieval_metrics
    from benchmark.retrieval import (attribute_lists, attribute_similarity, class_level_similarity,
                                     multi_granularity_scores)
    from benchmark.retrieval import relevance as relevance_fn

    out: dict[str, list] = {"query_row": [], "attribute_id": []}
    tops, top_rel = [], []
    # per attribute n: the queries positive in n against the ranked list, every candidate positive in n
    for n, sl, qn, cn in attribute_lists(rows_q, rows_c, labels, classes_per_attribute):
        m_n = classes_per_attribute[n]
        c_att = emb.attribute[cn, n].to(device)
        c_lab = torch.from_numpy(labels[cn, sl]).to(device)
        if ranking == "multi-granularity":
            c_idx, c_emb = _class_rows(emb, cn, n, keep)
            c_idx, c_emb = c_idx.to(device), c_emb.to(device)
        # at most CHUNK_ELEMENTS (query, candidate) cells at once: at DeepFashion's full test size
        # (32,000 candidates) 2,048 queries at a time held several (Q, C) float64 and index
        # matrices, over 6 GB; a twin's lists (~1,000) keep the 2,048
        step = max(1, min(int(chunk), CHUNK_ELEMENTS // max(1, len(cn))))
        for s in range(0, len(qn), step):
            q = qn[s:s + step]
            sim = attribute_similarity(emb.attribute[q, n].to(device), c_att)  # (Q, C)
            if ranking == "multi-granularity":
                q_idx, q_emb = _class_rows(emb, q, n, keep)
                class_sim, shared = class_level_similarity(
                    q_idx.to(device), q_emb.to(device), c_idx, c_emb, len(q), len(cn), m_n)
                sim = multi_granularity_scores(sim, class_sim, shared)
            rel = relevance_fn(torch.from_numpy(labels[q, sl]).to(device), c_lab, relevance)  # (Q, C) bool
            per_q = retrieval_metrics(sim, rel, ks=tuple(ks))
            for k, v in per_q.items():
                out.setdefault(k, []).append(torch.as_tensor(v).double().cpu().numpy())
            out["query_row"].append(q)
            out["attribute_id"].append(np.full(len(q), n))
            out.setdefault("n_relevant", []).append(rel.sum(1).cpu().numpy().astype(np.int64))  # R
            out.setdefault("n_candidates", []).append(np.full(len(q), len(cn), dtype=np.int64))  # L
            out.setdefault("n_labels", []).append(labels[q, sl].sum(1).astype(np.int64))  # |S_q|
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


def cap_binding(probs: torch.Tensor | None, gamma: float, classes_per_attribute: list[int],
                max_classes: int) -> dict | None:
    """How often the ``max_classes`` cap drops classes above ``gamma``: over every (image, attribute)
    pair of ``probs`` (n, C), the pairs with more than ``max_classes`` classes whose P_n > gamma.

    The class level embeds at most ``max_classes`` classes per (image, attribute), the most
    probable first; where more pass gamma, the rest have no class-specific embedding. None for
    models without class probabilities (MODC's class is the nearest prototype: one per pair).
    """
    if probs is None:
        return None
    offsets = class_offsets(classes_per_attribute)
    binding = 0
    for a in range(len(classes_per_attribute)):
        block = probs[:, offsets[a]:offsets[a + 1]]
        top1 = torch.zeros_like(block, dtype=torch.bool)
        top1[torch.arange(len(block)), block.argmax(1)] = True
        # the top-1 the rule adds is never more than the cap (max_classes >= 1): same count as P_n > gamma's
        binding += int((gamma_keep(block, gamma, top1).sum(1) > max_classes).sum())
    pairs = int(probs.shape[0]) * len(classes_per_attribute)
    return {"max_classes": int(max_classes), "gamma": float(gamma), "binding_pairs": binding, "pairs": pairs,
            "binding_share": _num(binding / pairs) if pairs else None}


def cooccurring_classes(pairs: pl.DataFrame, min_rate: float) -> tuple[set[int], int]:
    sel = pairs.filter(pl.col("rate") >= min_rate)
    return set(sel["class_a"].to_list()) | set(sel["class_b"].to_list()), sel.height


def summarise(per_query: dict, labels: np.ndarray, classes_per_attribute: list[int], names: list[str],
              ks: list[int], cooc: set[int], n_pairs: int, no_relevant: str = "leave_out") -> dict:
    """metrics.json's section of one split, in percent; ``no_relevant``: what a query with no
    relevant candidate counts as (``leave_out`` | ``zero``, benchmark.metrics.apply_no_relevant)."""
    from benchmark.metrics import aggregate, apply_no_relevant

    metric_keys = [k for k in per_query if k not in QUERY_FIELDS]
    agg = aggregate({k: torch.as_tensor(per_query[k]) for k in metric_keys},
                    torch.as_tensor(per_query["attribute_id"]), names, no_relevant=no_relevant)
    section = {}
    for k in metric_keys:
        section[metric_name(k)] = {a: _num(v) for a, v in agg[k].items()}
    section["queries"] = {a: int(v) for a, v in agg["queries"].items()}
    flags = cooccurring_flags(per_query, labels, classes_per_attribute, cooc)
    ap = apply_no_relevant(torch.as_tensor(per_query["ap_all"][flags]), no_relevant).numpy()
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
    offsets = class_offsets(classes_per_attribute)
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


def stage_embeddings(key: str, model_name: str, seeds: list[int]) -> dict:
    """seed -> loader of the stage's embeddings file of that seed: (image ids, Embeddings, class level,
    checkpoint {policy, epoch, epochs_run, max_epochs})."""
    emb_dir = paths.embeddings_dir(key, model_name)

    def loader(seed: int):
        def load():
            path = embeddings_path(emb_dir, seed)
            emb_ids, emb, class_level = load_embeddings(path)
            return emb_ids, emb, class_level, embeddings_checkpoint(path)
        return load

    return {int(s): loader(int(s)) for s in seeds}


def run(key: str, model_name: str, params: dict, device=None, embeddings: dict | None = None,
        source: dict | None = None) -> dict:
    """Score one model's embeddings and write its reports (the module docstring's outputs).

    ``embeddings``: seed -> a loader returning (image ids, Embeddings, class level, checkpoint), the
    ids those of the split's val and test images in ascending order; default: ``benchmark.embed``'s
    files of ``train.seeds`` (:func:`stage_embeddings`). ``fashionbench score`` (benchmark/score.py)
    passes a user's validated files through the same function, with ``source`` (its files) for
    metrics.json."""
    ev = params["evaluate"]
    no_relevant = ev.get("no_relevant", "leave_out")
    prof = training_profile(params)
    if embeddings is None:
        embeddings = stage_embeddings(key, model_name, list(params["train"].get("seeds") or [0]))
    seeds = list(embeddings)
    device = resolve_device(device)
    es = load_eval_set(key, params.get("validate", {}).get("maybe_policy", "negative"))
    ids, labels_m, role_rows = es.ids, es.labels, es.role_rows
    names, classes_per_attribute = es.names, es.classes_per_attribute
    pairs = read_table(paths.cooccurrence_dir(key) / "pairs.parquet", CooccurrencePairsSchema)
    cooc, n_pairs = cooccurring_classes(pairs, ev["cooccurrence_min_rate"])
    ks = list(ev.get("ks", [100]))
    gammas = [float(g) for g in ev["gamma_sweep"]]
    out_dir = paths.eval_dir(key, model_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_examples = int(ev.get("examples", 4))
    top = int(ev.get("example_top", 8))
    emb_dir = paths.embeddings_dir(key, model_name)

    per_seed, per_query_tables, gamma_rows, checkpoints = [], [], [], []
    examples = {}
    for si, seed in enumerate(seeds):
        emb_ids, emb, class_level, checkpoint = embeddings[seed]()
        checkpoints.append(checkpoint)
        if not np.array_equal(emb_ids, ids):
            raise SystemExit(f"{embeddings_path(emb_dir, seed)}: its images are not this split's val and test "
                             f"images: rerun the evaluate stage (dvc repro evaluate@{key}-{model_name})")
        ranking = "multi-granularity" if class_level else "attribute"
        keep = class_keep(emb, ev["gamma"], classes_per_attribute) if class_level else None
        metrics: dict = {}
        for split in EVAL_SPLITS:
            first_test = split == "test" and si == 0
            pq = evaluate_split(emb, role_rows[(split, "query")], role_rows[(split, "candidate")], labels_m,
                                classes_per_attribute, relevance=ev["relevance"], ks=ks, ranking=ranking,
                                keep=keep, device=device, top=top if first_test else 0)
            metrics[split] = summarise(pq, labels_m, classes_per_attribute, names, ks, cooc, n_pairs, no_relevant)
            per_query_tables.append(_per_query_frame(pq, ids, seed, split, ranking, labels_m, classes_per_attribute, cooc))
            if first_test:
                examples["retrieval"] = retrieval_example(pq, ids, labels_m, classes_per_attribute, n_examples,
                                                          int(ev["bootstrap_seed"]), ranking)
            if split == "test" and class_level:
                apq = evaluate_split(emb, role_rows[(split, "query")], role_rows[(split, "candidate")], labels_m,
                                     classes_per_attribute, relevance=ev["relevance"], ks=ks, ranking="attribute",
                                     device=device)
                s = summarise(apq, labels_m, classes_per_attribute, names, ks, cooc, n_pairs, no_relevant)
                metrics["attribute_ranking"] = {"test": {k: {"overall": s[k]["overall"]} for k in s
                                                         if k not in ("queries", "cooccurring")}}
        cap = cap_binding(emb.probs, ev["gamma"], classes_per_attribute, ev["max_classes"]) if class_level else None
        if cap is not None:
            metrics["class_cap"] = cap
        if si == 0:  # a sensitivity plot: the first seed's model (10 more rankings per seed otherwise)
            gamma_rows.append(_gamma_sweep(emb, role_rows, labels_m, classes_per_attribute, ev, ks, gammas,
                                           class_level, device, names, metrics))
        per_seed.append(metrics)

    mean, std = _mean_std(per_seed) if len(per_seed) > 1 else (per_seed[0], None)
    result = dict(mean)
    if std is not None:
        result["std"] = std
        result["seeds"] = {"count": len(seeds)}
    result["checkpoint"] = dict(checkpoints[0])  # the train stage's policy (last | best_val) and the epoch
    if len(checkpoints) > 1:
        result["checkpoint"]["epochs"] = [c["epoch"] for c in checkpoints]
        result["checkpoint"]["epochs_run"] = [c["epochs_run"] for c in checkpoints]
    if any("imagenet_weights" in c for c in checkpoints):  # a trunk counts as pretrained when it was in every seed
        trunks = sorted({t for c in checkpoints for t in c.get("imagenet_weights") or {}})
        result["checkpoint"]["imagenet_weights"] = {
            t: all((c.get("imagenet_weights") or {}).get(t, False) for c in checkpoints) for t in trunks}
    if source is not None:
        result["source"] = source

    per_query = pl.concat(per_query_tables)
    write_table(per_query, out_dir / "per_query.parquet", PerQuerySchema)
    rdir = paths.model_reports_dir(key, model_name)
    write_table(report_per_query(per_query), report_path(key, model_name), ReportPerQuerySchema)
    ci = _confidence_intervals(per_query, ev, no_relevant)
    source = ImageSource.for_profile(key, es.images, prof, model_input=False)  # pixels for the figures
    save_examples(out_dir, examples, source, names, es.taxonomy)
    write_json(out_dir / "info.json", {"dataset": key, "model": model_name, "ranking": per_query["ranking"][0],
                                       "attributes": names, "classes_per_attribute": classes_per_attribute,
                                       "seeds": seeds})

    for d in (rdir, out_dir):  # out_dir's copies: what the report stage reads (its deps are the eval folders)
        write_json(d / "metrics.json", result)
        write_json(d / "metrics_ci.json", ci)
    g = pl.DataFrame(gamma_rows[0]).with_columns(pl.col("map_all").cast(pl.Float64), pl.col("excluded_share").cast(pl.Float64),
                                                 pl.col("cap_binding_share").cast(pl.Float64))
    if len(gamma_rows) > 1:
        g = g.with_columns(pl.Series("map_all", np.mean([[r["map_all"] for r in gr] for gr in gamma_rows], 0)))
    with atomic_path(rdir / "gamma.csv") as tmp:
        g.write_csv(tmp, float_precision=4)
    return result


def _per_query_frame(pq, ids, seed, split, ranking, labels_m, classes_per_attribute, cooc) -> pl.DataFrame:
    flags = cooccurring_flags(pq, labels_m, classes_per_attribute, cooc)
    cols = {"seed": np.full(len(pq["query_row"]), seed, dtype=np.int64), "split": [split] * len(pq["query_row"]),
            "ranking": [ranking] * len(pq["query_row"]),
            "image_id": ids[pq["query_row"]].astype(np.int64), "attribute_id": pq["attribute_id"].astype(np.int64),
            "cooccurring": flags, "n_relevant": pq["n_relevant"], "n_candidates": pq["n_candidates"],
            "n_labels": pq["n_labels"]}
    for k in pq:
        if k not in QUERY_FIELDS:
            cols[metric_name(k)] = pq[k].astype(np.float64)
    return pl.DataFrame(cols)


def _confidence_intervals(per_query: pl.DataFrame, ev: dict, no_relevant: str = "leave_out") -> dict:
    """95% (evaluate.ci_level) bootstrap intervals over queries of every overall figure, in percent;
    per-query values averaged over seeds first; queries without a relevant candidate as
    ``no_relevant`` says (left out, or 0)."""
    from benchmark.metrics import bootstrap_ci

    zero = no_relevant == "zero"
    level = float(ev.get("ci_level", 0.95))
    metric_cols = [c for c in per_query.columns if c not in QUERY_COLUMNS]
    mean_q = per_query.group_by(["split", "image_id", "attribute_id"], maintain_order=True).agg(
        [pl.col(c).mean() for c in metric_cols] + [pl.col("cooccurring").first()])
    out = {}
    for split in EVAL_SPLITS:
        part = mean_q.filter(pl.col("split") == split)
        sec = {}
        if zero:
            part = part.with_columns([pl.col(c).fill_nan(0.0) for c in metric_cols])
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
    from benchmark.metrics import apply_no_relevant

    rows = []
    q, c = role_rows[("test", "query")], role_rows[("test", "candidate")]
    if not class_level:
        flat = metrics["test"]["map_all"]["overall"]
        return [{"gamma": g, "map_all": flat, "excluded_share": None, "cap_binding_share": None} for g in gammas]
    offsets = class_offsets(classes_per_attribute)
    ev_rows = np.concatenate([q, c])
    pos_r, pos_g = np.nonzero(labels_m[ev_rows])
    for g in gammas:
        keep = class_keep(emb, g, classes_per_attribute)
        pq = evaluate_split(emb, q, c, labels_m, classes_per_attribute, relevance=ev["relevance"], ks=ks,
                            ranking="multi-granularity", keep=keep, device=device)
        ap = apply_no_relevant(torch.as_tensor(pq["ap_all"]), ev.get("no_relevant", "leave_out")).numpy()
        ap = ap[~np.isnan(ap)]
        kept = emb.class_index[keep]
        gid = (torch.as_tensor(offsets)[kept[:, 1]] + kept[:, 2]).numpy()
        have = set(zip(kept[:, 0].tolist(), gid.tolist()))
        covered = sum((int(ev_rows[r]), int(gg)) in have for r, gg in zip(pos_r, pos_g))
        rows.append({"gamma": g, "map_all": _num(100 * ap.mean()) if len(ap) else None,
                     "excluded_share": _num(1 - covered / len(pos_r)) if len(pos_r) else None,
                     "cap_binding_share": (cap_binding(emb.probs, g, classes_per_attribute, ev["max_classes"])
                                           or {}).get("binding_share")})
    return rows


def main(argv: list[str] | None = None) -> int:
    from benchmark import attention, embed

    args = model_stage_arguments("python -m benchmark.evaluate", __doc__, argv, "cpu | cuda")
    params = load_params(args.params)
    for p in embed.run(args.dataset, args.model, params, device=args.device):
        print(f"wrote {p}", file=sys.stderr)
    pg = attention.run(args.dataset, args.model, params, device=args.device)["pointing_game"]
    print(f"{args.dataset}/{args.model}: pointing game "
          + (f"{pg['accuracy']}% (chance {pg['chance']}%, {pg['n']} pairs)" if pg else "n/a"), file=sys.stderr)
    report(args.dataset, args.model, run(args.dataset, args.model, params, device=args.device))
    return 0


def report(key: str, model_name: str, result: dict) -> None:
    """One line on stderr: the test metrics just written."""
    t = result["test"]
    print(f"{key}/{model_name}: test MAP@all {t['map_all']['overall']}, MAP@100 {t['map_100']['overall']}, "
          f"Recall@100 {t['recall_100']['overall']} ({t['queries']['used']} queries)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
