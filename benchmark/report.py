"""Report stage: one markdown page per dataset laid out like the paper's Tables 2-4, and figures.

    python -m benchmark.report

Reads every model's ``metrics.json`` (+ ``metrics_ci.json``) and example files from the evaluate
stage's ``data/<key>/eval/<model>/`` (the same bytes as ``reports/<key>/<model>/``), the
leaderboards and the train stage's model cards (``models/<key>/<model>/card.json``); writes
``reports/<key>.md``, ``reports/models.md`` and ``reports/figures/``. The paper's models are rows
in the paper's order, a model not evaluated yet a row of dashes, so the page exists after any
subset of ``dvc repro evaluate@...``; any other model evaluated (a new key of params.yaml's
``models``, one from outside the suite) follows them by name, found in the eval folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from benchmark.params import load_params
from datasets import paths
from datasets.atomic import write_text

DATASETS = {"deepfashion": "DeepFashion", "fashionai": "FashionAI", "darn": "DARN"}
# The paper's row order (Tables 2-4)
MODELS = {"asen": "ASEN", "asen_v2": "ASEN_v2", "asenpp": "ASEN++", "modc": "MODC",
          "m3net_a": "M3-Net_a", "m3net_c": "M3-Net_c", "m3net": "M3-Net",
          "m3net_eq11": "M3-Net (Eq. 11 only)"}  # L_M + L_CC + L_CI, no MODC attribute-level terms; no paper number
OVERALL = [("map_all", "MAP@all"), ("map_100", "MAP@100"), ("recall_100", "Recall@100")]
PAPER_RESULTS = Path(__file__).parent / "data" / "paper_results.json"
DASH = "–"


def norm(name: str) -> str:
    """Attribute names as the paper prints them: 'skirt_length' -> 'skirt length', 'texture-related' -> 'texture'."""
    s = name.lower().replace("_", " ").replace("-", " ").strip()
    return s[: -len(" related")] if s.endswith(" related") else s


def fmt(v) -> str:
    return DASH if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.2f}"


def cell(measured, paper) -> str:
    """'measured (paper)': the paper's number in parentheses when it has one."""
    return fmt(measured) if paper is None else f"{fmt(measured)} ({fmt(paper)})"


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def figures_dir() -> Path:
    return paths.figures_dir()


def banner(source: str, profile: str, table, *, trunk: str | None = None, recipe_edits=(),
           random_trunks: dict[str, list[str] | None] | None = None) -> list[str]:
    """The page's first lines: whether its numbers may be set beside the paper's.

    Only real data trained with the paper's recipe is comparable: profile ``paper``, params.yaml's
    paper values those of the recipe (``recipe_edits``: :func:`benchmark.paper_recipe.recipe_edits`
    of params.yaml, empty when unedited) and every trunk started from ImageNet weights
    (``random_trunks``: {model: its trunks trained from random weights, or None when the run did
    not record it}, only models with such trunks). Twin data, real data through another profile,
    an edited recipe or a trunk without ImageNet weights is not, whatever the numbers look like;
    the banner names every reason that holds. ``trunk``: the paper profile's trunk mode.
    """
    out = []
    if source == "twin":
        if profile == "paper" and trunk == "end_to_end":
            how = (f"the `{profile}` training profile: every model fine-tunes its own backbone from pixels, "
                   "see docs/PROTOCOL.md")
        else:
            how = (f"the `{profile}` training profile: one frozen trunk per dataset and training seed, pretrained on "
                   "its training split, and every model's head trained on its cached maps; see "
                   "docs/PROTOCOL.md#shared-trunk")
        out += ["> **Twin data.** These numbers come from the generated twin of the dataset (synthetic images, "
                f"{how}), not from the real release. They check that the pipeline runs "
                "end to end (whether they tell the models apart: the leaderboard's intervals and tests below); they "
                "are **not comparable with the paper's numbers** (in parentheses), which are shown only to fix the "
                "table's layout.", ""]
    elif profile != "paper":
        out += [f"> **Real data, `{profile}` training profile.** The data is the real release, but the models were "
                f"trained with the `{profile}` profile (`train.profiles.{profile}` in params.yaml), not the paper's "
                "recipe (`train.profile: paper`); under a shared trunk (`trunk: shared`) every model trains only its "
                "head, on one frozen trunk pretrained on this dataset's training split. These numbers are **not comparable with the paper's numbers** "
                "(in parentheses).", ""]
    edits = list(recipe_edits) if profile == "paper" else []
    if edits:
        shown = [f"`{k}`: {_param_value(v)} (recipe: {_param_value(r)})" for k, v, r in edits[:10]]
        more = f", and {len(edits) - 10} more" if len(edits) > 10 else ""
        out += [f"> **Edited paper recipe.** `train.profile: paper`, but params.yaml differs from the paper's recipe "
                f"(`benchmark/paper_recipe.py`) in {len(edits)} value{'s' if len(edits) > 1 else ''}: "
                f"{'; '.join(shown)}{more}. These numbers are **not comparable with the paper's numbers**.", ""]
    if random_trunks:
        named = [f"{_label(m)} ({', '.join(f'`{t}`' for t in trunks)})" if trunks else f"{_label(m)} (not recorded)"
                 for m, trunks in random_trunks.items()]
        out += ["> **No ImageNet weights.** The paper fine-tunes ImageNet-pretrained ResNets, but these models' "
                "trunks started from random weights (the profile's `pretrained: false`, or the weights were not in "
                "the torchvision cache), or the run did not record whether they loaded: "
                f"{'; '.join(named)}. These numbers are **not comparable with the paper's numbers**.", ""]
    if not out:
        out = [f"Measured on the real data with the paper's training recipe (`train.profile: paper`); the paper's "
               f"published numbers (Table {table}) in parentheses.", ""]
    return out


def _param_value(v) -> str:
    from benchmark.paper_recipe import ABSENT

    return "absent" if v is ABSENT else f"`{json.dumps(v)}`"


def random_trunks(metrics: dict[str, dict | None], profile: str) -> dict[str, list[str] | None]:
    """{model: its trunks trained without ImageNet weights} of the evaluated models (metrics.json's
    ``checkpoint.imagenet_weights``, recorded by the train stage); under the paper profile a model
    whose run did not record it maps to None (unknown, so not shown comparable)."""
    out: dict[str, list[str] | None] = {}
    for m, met in metrics.items():
        if not met:
            continue
        rec = (met.get("checkpoint") or {}).get("imagenet_weights")
        if rec is None:
            if profile == "paper":
                out[m] = None
        elif any(not v for v in rec.values()):
            out[m] = sorted(t for t, v in rec.items() if not v)
    return out


M3NET_C_NOTE = ("M3-Net_c has no attribute-conditional modules: its attribute-level embedding is the trunk's "
                "feature map mean-pooled over positions, the same vector for every attribute, so its "
                "attribute-level ranking does not depend on the attribute, and it has no attribute-level attention "
                "map (the pointing game and Figure 3 use its class-conditional map).")


CONTROL = "attribute_blind"
CONTROL_LABEL = "attribute-blind"


def _label(m: str) -> str:
    return CONTROL_LABEL if m == CONTROL else MODELS.get(m, m)


def page_models(key: str) -> dict[str, str]:
    """{model: label} of a dataset's page: the paper's models (MODELS, in its order), then every
    other model the evaluate stage scored (``data/<key>/eval/<model>/metrics.json``), by name."""
    root = paths.eval_dir(key, CONTROL).parent
    found = sorted(d.name for d in root.iterdir() if (d / "metrics.json").is_file()) if root.is_dir() else []
    return {**MODELS, **{m: m for m in found if m not in MODELS and m != CONTROL}}


def _summ(d: dict | None) -> str:
    """'mean ± sd [low, high]' of a leaderboard entry."""
    if not d or d.get("mean") is None:
        return DASH
    sd = f" ± {fmt(d['sd'])}" if d.get("sd") is not None else ""
    return f"{fmt(d['mean'])}{sd} [{fmt(d['low'])}, {fmt(d['high'])}]"


def leaderboard_section(board: dict | None, alpha: float | None = None) -> list[str]:
    """The page's leaderboard: seeds, chance, intervals, and which differences are significant."""
    if not board or not board.get("models"):
        return []
    ms = board["models"]
    seeds = sorted({len(m["seeds"]) for m in ms.values()})
    spread = ("one training seed (no seed spread measured)" if seeds == [1] else
              f"the mean over {'/'.join(map(str, seeds))} training seeds ± their standard deviation")
    out = ["## Leaderboard (test)", "",
           f"MAP@all etc.: {spread}, [95% interval with the training runs as units of replication and the "
           f"{board['queries']['test']} test queries used nested in them: a rerun with new seeds, each with its own "
           f"trunk, or another test set] ({board['queries']['test_left_out']} left out: no "
           f"relevant candidate); ranked lists hold {board['candidates']['min']} candidates at least "
           f"(median {board['candidates']['median']:.0f}). Chance: the exact expectation of a random ranking of the "
           "same lists.", "",
           "| model | MAP@all | MAP@100 | Recall@100 | MAP@all, multi-class queries | MAP@all, single-class queries "
           "| pointing game (%) |", "|---|---|---|---|---|---|---|"]
    ch = board["chance"]
    out.append(f"| chance | {fmt(ch.get('map_all'))} | {fmt(ch.get('map_100'))} | {fmt(ch.get('recall_100'))} "
               f"| {DASH} | {DASH} | {DASH} |")
    control = board.get(CONTROL)
    if control:
        out.append(f"| {CONTROL_LABEL} (control) | {_summ(control['map_all'])} | {_summ(control['map_100'])} | "
                   f"{_summ(control['recall_100'])} | {fmt(control.get('multi_class_map_all'))} | "
                   f"{fmt(control.get('single_class_map_all'))} | {DASH} |")
    order = [m for m in MODELS if m in ms] + [m for m in ms if m not in MODELS]
    not_above = [m for m in order if control and not board.get("above_control", {}).get(m, False)]  # by the paired test
    for m in order:
        e = ms[m]
        pg = e.get("pointing")
        pg_cell = (f"{fmt(pg['accuracy'])} [{fmt(pg['low'])}, {fmt(pg['high'])}], chance {fmt(pg.get('chance'))}"
                   if pg else DASH)
        below = e["map_all"].get("low") is not None and ch.get("map_all") is not None and e["map_all"]["low"] <= ch["map_all"]
        flag = " (not above chance)" if below else " (not significantly above the control)" if m in not_above else ""
        out.append(f"| {MODELS.get(m, m)} | {_summ(e['map_all'])}{flag} | "
                   f"{_summ(e['map_100'])} | {_summ(e['recall_100'])} | {fmt(e.get('multi_class_map_all'))} | "
                   f"{fmt(e.get('single_class_map_all'))} | {pg_cell} |")
    if control:
        cp = board.get("control_pairs", {})
        out += ["", f"**Control.** {CONTROL_LABEL}: each seed's trunk, average-pooled, as one embedding for every "
                "attribute, with no head and no training; the same seeds, trunks, queries and intervals as the models. "
                "A model that does not beat it has learned nothing about the queried attribute that the trunk did not "
                "already give. Each model against it (the nested t-test below, seed k against seed k, which share "
                "trunk k; each model's own check, so not adjusted): "
                + "; ".join(f"{MODELS.get(m, m)} {fmt(v['delta'])} (p {v['p']:.4f})"
                            for m in order if (v := cp.get(f"{m}_vs_{CONTROL}")) and v.get("p") is not None) + ". "
                + ("Every model is significantly better than the control." if not not_above else
                   "Not significantly better than the control: " + ", ".join(MODELS.get(m, m) for m in not_above) + ".")]
    pairs = board.get("pairs", {})
    sig = [(k, v) for k, v in pairs.items() if v.get("significant")]
    level = f" at {alpha:g}" if alpha is not None else ""
    det = [v["detectable"] for v in pairs.values() if v.get("detectable") is not None]
    out += ["", f"**Significance.** Every pair of models is compared by a t-test of the MAP@all "
            f"difference with the training seeds as units of replication (seed k of one against seed k of the other: "
            f"they share trunk k) and the shared test queries nested in them, p-values adjusted for the {len(pairs)} "
            f"comparisons by Holm's method; {len(sig)} of {len(pairs)} differences are significant{level}."
            + (f" The smallest difference a pair could call significant before the adjustment: median "
               f"{fmt(float(np.median(det)))} points (from {fmt(min(det))} to {fmt(max(det))})." if det else "")
            + (" **No pair of models differs significantly on this dataset.**"
               if pairs and not any(v.get("significant") for v in pairs.values()) else "")]
    if pairs:
        out += ["", "| pair | MAP@all difference (a − b) | p | p (Holm) | significant |", "|---|---|---|---|---|"]
        for k, v in sorted(pairs.items(), key=lambda kv: (kv[1]["p_adjusted"] is None, kv[1]["p_adjusted"] or 0)):
            a, b = k.split("_vs_")
            out.append(f"| {_label(a)} − {_label(b)} | {fmt(v['delta'])} | {v['p']:.4f} | "
                       f"{v['p_adjusted']:.4f} | {'**yes**' if v['significant'] else 'no'} |")
    out += [""]
    return out


def dataset_page(key: str, metrics: dict[str, dict | None], cis: dict[str, dict | None], paper: dict,
                 source: str, figures: list[Path], profile: str = "twin", no_relevant: str = "leave_out",
                 board: dict | None = None, alpha: float | None = None, labels: dict[str, str] | None = None,
                 trunk: str | None = None, recipe_edits=()) -> str:
    labels = MODELS if labels is None else labels  # {model: label}: the rows, in order (page_models)
    pointings = {m: e.get("pointing") for m, e in ((board or {}).get("models") or {}).items()}
    title = DATASETS.get(key, key)
    pap = paper["datasets"].get(key, {"attributes": [], "models": {}, "table": None})
    # attribute columns: the measured ones (taxonomy order), else the paper's
    attrs = next((list(k for k in m["test"]["map_all"] if k not in ("overall", "macro"))
                  for m in metrics.values() if m), None) or list(pap["attributes"])
    out = [f"# {title}: fine-grained attribute-specific retrieval (test split)", ""]
    out += banner(source, profile, pap.get("table"), trunk=trunk, recipe_edits=recipe_edits,
                  random_trunks=random_trunks(metrics, profile))
    out += leaderboard_section(board, alpha)
    out += [f"## MAP@all per attribute, overall MAP@all, MAP@100, Recall@100 (%; paper's Table {pap.get('table')} in parentheses)", ""]
    header = ["model"] + attrs + [h for _, h in OVERALL]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    paper_attr = {norm(a): a for a in pap["attributes"]}
    for model, label in labels.items():
        m = (metrics.get(model) or {}).get("test")
        p = pap["models"].get(model)
        row = [label]
        for a in attrs:
            pa = paper_attr.get(norm(a))
            row.append(cell(m["map_all"].get(a) if m else None, p["map_all"].get(pa) if p and pa else None))
        for k, _ in OVERALL:
            row.append(cell(m[k]["overall"] if m else None, p[k]["overall"] if p else None))
        out.append("| " + " | ".join(row) + " |")
    out += ["", "Overall = mean over all queries (query-weighted, as the paper); macro = mean over attributes.", ""]

    policy = ("left out of every mean" if no_relevant == "leave_out"
              else "counted as AP = 0, every mean divided by all queries (ASEN's evaluation code)")
    out += ["## Summary per model (test and validation)", "",
            "| model | ranking | test MAP@all | test macro MAP@all | attribute-level ranking MAP@all "
            "| val MAP@all | test queries | with no relevant candidate (R = 0) | left out of the means |",
            "|---|---|---|---|---|---|---|---|---|"]
    for model, label in labels.items():
        m = metrics.get(model)
        if not m:
            out.append(f"| {label} | " + " | ".join([DASH] * 8) + " |")
            continue
        ranking = "multi-granularity" if "attribute_ranking" in m else "attribute"
        t, v = m["test"], m.get("val", {})
        std = m.get("std", {}).get("test", {}).get("map_all", {}).get("overall")
        overall = fmt(t["map_all"]["overall"]) + (f" ± {fmt(std)}" if std is not None else "")
        att = m.get("attribute_ranking", {}).get("test", {}).get("map_all", {}).get("overall")
        att_cell = fmt(att) if "attribute_ranking" in m else fmt(t["map_all"]["overall"])
        if model == "m3net_c":
            att_cell += " ¹"
        q = t["queries"]
        out.append(f"| {label} | {ranking} | {overall} | {fmt(t['map_all'].get('macro'))} | {att_cell} | "
                   f"{fmt(v.get('map_all', {}).get('overall'))} | {q['used'] + q['left_out']} | "
                   f"{q.get('no_relevant', q['left_out'])} | {q['left_out']} |")
    out += ["", f"Queries with no relevant candidate are {policy} (`evaluate.no_relevant: {no_relevant}`).",
            "", "¹ " + M3NET_C_NOTE]
    if any(m and "std" in m for m in metrics.values()):
        out += ["", "± = standard deviation over `train.seeds`."]
    caps = {label: (metrics.get(model) or {}).get("class_cap") for model, label in labels.items()}
    caps = {k: c for k, c in caps.items() if c}
    if caps:
        c0 = next(iter(caps.values()))
        out += ["", f"**Class-level cap.** At most `evaluate.max_classes` = {c0['max_classes']} classes per "
                "(image, attribute) get a class-specific embedding, the most probable first; where more pass "
                f"gamma = {c0['gamma']}, the rest are dropped. Share of (image, attribute) pairs where the cap binds "
                "(val and test images; per gamma in `gamma.csv`): "
                + ", ".join(f"{k} {100 * (c['binding_share'] or 0):.2f}% ({c['binding_pairs']} of {c['pairs']})"
                            for k, c in caps.items()) + "."]
    out += [""]

    out += ["## Checkpoint evaluated", "",
            "Which epoch's weights were evaluated (`train.profiles.<profile>.checkpoint`): `last` = the final epoch; "
            "`best_val` = the epoch with the highest val MAP@all of the attribute-level ranking, as ASEN and ASEN++ "
            "keep their `model_best` (for ASEN++, among its second stage's epochs). Epochs run: each seed's run "
            "ends once its val curve levels off (`early_stop`), or at the most it may run; a run that reached that "
            "most had not levelled off (marked *).", "",
            "| model | policy | epoch (per seed) | epochs run (per seed) | at most |", "|---|---|---|---|---|"]
    for model, label in labels.items():
        ck = (metrics.get(model) or {}).get("checkpoint")
        epoch = DASH if not ck else ", ".join(str(e) for e in ck.get("epochs", [ck.get("epoch")]))
        most = (ck or {}).get("max_epochs")
        runs = (ck or {}).get("epochs_run")
        runs = [r for r in (runs if isinstance(runs, list) else [runs]) if r is not None]
        ran = ", ".join(f"{r}*" if most is not None and r >= most else str(r) for r in runs) or DASH
        out.append(f"| {label} | {ck['policy'] if ck else DASH} | {epoch} | {ran} | {most if most is not None else DASH} |")
    out += [""]

    out += ["## 95% bootstrap confidence intervals over queries (test)", "",
            "| model | MAP@all | MAP@100 | Recall@100 |", "|---|---|---|---|"]
    for model, label in labels.items():
        c = (cis.get(model) or {}).get("test")
        row = [label] + [f"{fmt(c[k]['low'])} – {fmt(c[k]['high'])}" if c and k in c else DASH for k, _ in OVERALL]
        out.append("| " + " | ".join(row) + " |")
    out += [""]

    pc = paper.get("cooccurring", {}).get(key, {}).get("m3net")
    out += ["## Co-occurring classes (the paper's section 4.3.1)", "",
            "Class pairs whose co-occurrence rate is at least `evaluate.cooccurrence_min_rate`; MAP@all over the "
            "queries whose label set holds one of their classes, beside the all-class MAP@all."
            + (f" The paper: M3-Net {pc['map_all']:.2f} on {pc['pairs']} pairs / {pc['classes']} classes (DeepFashion)." if pc else ""),
            "", "| model | pairs | classes | queries | MAP@all co-occurring | MAP@all all classes | relative |",
            "|---|---|---|---|---|---|---|"]
    for model, label in labels.items():
        t = (metrics.get(model) or {}).get("test")
        if not t:
            out.append(f"| {label} | {DASH} | {DASH} | {DASH} | {DASH} | {DASH} | {DASH} |")
            continue
        co, allc = t["cooccurring"], t["map_all"]["overall"]
        rel = (f"{100 * (co['map_all'] / allc - 1):+.2f}%" if co.get("map_all") is not None and allc else DASH)
        out.append(f"| {label} | {co['pairs']} | {co['classes']} | {co['queries']} | {fmt(co.get('map_all'))} | {fmt(allc)} | {rel} |")
    out += [""]

    out += ["## Pointing game (attention peak inside the ground-truth box)", "",
            "Query images with known regions of localised classes (`regions.json`); a hit when the "
            "peak of the model's attention map, upsampled to the stored image, lies inside the box; chance is the "
            "mean share of the image the boxes cover (a uniformly random peak). Models without a class-conditional "
            "map are scored with their attribute-level map; M3-Net_c, which has no attribute-level map, with its "
            "class-conditional one. Interval: Wilson's, 95%.", "",
            "| model | accuracy (%) | 95% interval | chance (%) | (image, class) pairs |", "|---|---|---|---|---|"]
    for model, label in labels.items():
        pg = pointings.get(model)
        out.append(f"| {label} | {fmt(pg['accuracy']) if pg else DASH} | "
                   f"{(fmt(pg.get('low')) + ' – ' + fmt(pg.get('high'))) if pg else DASH} | "
                   f"{fmt(pg.get('chance')) if pg else DASH} | {pg['n'] if pg else DASH} |")
    out += ["", "A dash: no attention map (the model has none) or no regions for this dataset.", ""]

    out += ["## Gamma sensitivity and training curves", "",
            "`reports/" + key + "/<model>/gamma.csv` (MAP@all and the share of ground-truth classes left without a "
            "class-specific embedding, per gamma) and `train_log.csv` are DVC plots: `dvc plots show`, or "
            "`dvc plots diff <rev>` to compare commits.", ""]
    if figures:
        out += ["## Figures", ""]
        out += [f"![{f.stem}](figures/{f.name})" for f in figures]
        out += [""]
    return "\n".join(out)


def _card(key: str, model: str) -> dict | None:
    """The model card the train stage wrote into ``models/<key>/<model>/`` (a dep), with the training
    time of its committed copy (``reports/<key>/<model>/card.json``): a measurement, kept out of
    the model folder so that a rerun reproducing the weights reproduces it byte for byte; it is
    written with the folder, so it is as new as the card."""
    card = _read(paths.model_dir(key, model) / "card.json")
    if card is None:
        return None
    timed = _read(paths.model_reports_dir(key, model) / "card.json") or {}
    return {**card, **{k: timed.get(k) for k in ("seconds_per_seed", "device")}}


def _count(n) -> str:
    """12345678 -> '12.35 M' (parameters, FLOPs)."""
    if n is None:
        return DASH
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def models_page(cards: dict[str, dict[str, dict | None]], labels: dict[str, str]) -> str:
    """reports/models.md: one model card per model and dataset (the train stage's card.json), the
    mmpretrain model-zoo metafile for this field."""
    out = ["# Model cards", "",
           "Per dataset and model, from `models/<key>/<model>/card.json` (committed as `reports/<key>/<model>/card.json`; "
           "written by the train stage, benchmark/train_card.py). Parameters: the model's own (the head), and the "
           "shared trunk's under a `trunk: shared` profile, where the trunk is trained once per dataset and seed and "
           "frozen (under `end_to_end` the trunk is inside the model). FLOPs per image at the profile's image size, "
           "counted by torch's FlopCounterMode on the model's `embed` of one image (every attribute's embedding, "
           "the class level of every attribute where the model has one; a multiply-add counts 2): head on the "
           "trunk's map + the trunk's forward. Training time: wall seconds of each seed's run on the device named "
           "(from the committed card: a measurement, not in the model folder).",
           ""]
    for key, by_model in cards.items():
        rows = [(m, c) for m, c in by_model.items() if c]
        if not rows:
            continue
        out += [f"## {DATASETS.get(key, key)}", "",
                "| model | parameters (head + trunk) | FLOPs per image (head + trunk) | embedding size | "
                "training time per seed (s) | reference |", "|---|---|---|---|---|---|"]
        for m, c in rows:
            p, f = c.get("parameters", {}), c.get("flops", {})
            emb = str(c.get("embedding_size", DASH)) + (f" (class level {c['class_embedding_size']})"
                                                       if c.get("class_embedding_size") else "")
            secs = ", ".join(f"{s:.0f}" for s in c.get("seconds_per_seed") or []) or DASH
            secs += f" ({c['device']})" if c.get("device") else ""
            out.append(f"| {labels.get(m, m)} | {_count(p.get('head'))} + {_count(p.get('trunk'))} | "
                       f"{_count(f.get('head'))} + {_count(f.get('trunk'))} at {c.get('image_size')} px | {emb} | "
                       f"{secs} | {c.get('reference') or DASH} |")
        out += [""]
    return "\n".join(out)


def parse_table(markdown: str, heading_prefix: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the first table after the heading starting with ``heading_prefix``."""
    lines = markdown.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("## " + heading_prefix))
    while not lines[i].startswith("|"):
        i += 1
    rows = []
    while i < len(lines) and lines[i].startswith("|"):
        rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
        i += 1
    return rows[0], [r for r in rows[2:]]


def run(params: dict) -> list[Path]:
    from benchmark import figures as figs

    paper = json.loads(PAPER_RESULTS.read_text())
    n_examples = int(params.get("report", {}).get("examples", 4))
    alpha = params.get("leaderboard", {}).get("alpha")
    boards = {key: _read(paths.leaderboard_path(key)) for key in DATASETS}
    labels = {key: page_models(key) for key in DATASETS}
    # the banner's inputs: the paper profile's trunk mode and how params.yaml departs from its recipe
    from benchmark.paper_recipe import recipe_edits

    paper_profile = params.get("train", {}).get("profiles", {}).get("paper") or {}
    edits = recipe_edits(params) if params.get("train", {}).get("profile") == "paper" else []
    overview = figs.leaderboard_figure(boards, {m: lab for key in DATASETS for m, lab in labels[key].items()},
                                       DATASETS, figures_dir() / "leaderboard.png")
    written = []
    for key in DATASETS:
        metrics = {m: _read(paths.eval_dir(key, m) / "metrics.json") for m in labels[key]}
        cis = {m: _read(paths.eval_dir(key, m) / "metrics_ci.json") for m in labels[key]}
        source = params.get("acquire", {}).get(key, {}).get("source", "twin")
        profile = params.get("train", {}).get("profile", "twin")
        no_relevant = params.get("evaluate", {}).get("no_relevant", "leave_out")
        fig_paths = [overview] if overview else []
        f = figs.attention_figure(paths.attention_dir(key, "m3net"), figures_dir() / f"{key}_attention.png", n_examples)
        if f:
            fig_paths.append(f)
        f = figs.retrieval_figure({m: paths.eval_dir(key, m) for m in ("m3net", "modc")},
                                  figures_dir() / f"{key}_retrieval.png", n_examples)
        if f:
            fig_paths.append(f)
        page = dataset_page(key, metrics, cis, paper, source, fig_paths, profile=profile, no_relevant=no_relevant,
                            board=boards[key], alpha=alpha, labels=labels[key], trunk=paper_profile.get("trunk"),
                            recipe_edits=edits)
        out = paths.report_page(key)
        write_text(out, page)
        written.append(out)
    cards = {key: {m: _card(key, m) for m in labels[key]} for key in DATASETS}
    out = paths.ROOT / "reports" / "models.md"
    write_text(out, models_page(cards, {m: lab for key in DATASETS for m, lab in labels[key].items()}))
    written.append(out)
    figures_dir().mkdir(parents=True, exist_ok=True)  # a DVC out even before any figure exists
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.report", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    for p in run(load_params(args.params)):
        print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
