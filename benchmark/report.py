"""Report stage: one markdown page per dataset laid out like the paper's Tables 2-4, and figures.

    python -m benchmark.report

Reads every ``reports/<key>/<model>/metrics.json`` (+ ``metrics_ci.json``) and the evaluate stage's
example files; writes ``reports/<key>.md`` and ``reports/figures/``. A model not evaluated yet is
a row of dashes, so the page exists after any subset of ``dvc repro evaluate@...``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from benchmark.params import load_params
from datasets import paths

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
    return paths.ROOT / "reports" / "figures"


def dataset_page(key: str, metrics: dict[str, dict | None], cis: dict[str, dict | None], paper: dict,
                 is_twin: bool, figures: list[Path]) -> str:
    title = DATASETS.get(key, key)
    pap = paper["datasets"].get(key, {"attributes": [], "models": {}, "table": None})
    # attribute columns: the measured ones (taxonomy order), else the paper's
    attrs = next((list(k for k in m["test"]["map_all"] if k not in ("overall", "macro"))
                  for m in metrics.values() if m), None) or list(pap["attributes"])
    out = [f"# {title}: fine-grained attribute-specific retrieval (test split)", ""]
    if is_twin:
        out += ["> **Twin data.** These numbers come from the generated twin of the dataset (a few hundred "
                "synthetic images, the twin training profile), not from the real release. They check that the "
                "pipeline runs end to end; they are **not comparable with the paper's numbers** (in "
                "parentheses), which are shown only to fix the table's layout.", ""]
    else:
        out += [f"Measured on the real data; the paper's published numbers (Table {pap.get('table')}) in parentheses.", ""]
    out += [f"## MAP@all per attribute, overall MAP@all, MAP@100, Recall@100 (%; paper's Table {pap.get('table')} in parentheses)", ""]
    header = ["model"] + attrs + [h for _, h in OVERALL]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    paper_attr = {norm(a): a for a in pap["attributes"]}
    for model, label in MODELS.items():
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

    out += ["## Summary per model (test and validation)", "",
            "| model | ranking | test MAP@all | test macro MAP@all | val MAP@all | queries used | queries left out (R = 0) |",
            "|---|---|---|---|---|---|---|"]
    for model, label in MODELS.items():
        m = metrics.get(model)
        if not m:
            out.append(f"| {label} | {DASH} | {DASH} | {DASH} | {DASH} | {DASH} | {DASH} |")
            continue
        ranking = "multi-granularity" if "attribute_ranking" in m else "attribute"
        t, v = m["test"], m.get("val", {})
        std = m.get("std", {}).get("test", {}).get("map_all", {}).get("overall")
        overall = fmt(t["map_all"]["overall"]) + (f" ± {fmt(std)}" if std is not None else "")
        out.append(f"| {label} | {ranking} | {overall} | {fmt(t['map_all'].get('macro'))} | "
                   f"{fmt(v.get('map_all', {}).get('overall'))} | {t['queries']['used']} | {t['queries']['left_out']} |")
    if any(m and "std" in m for m in metrics.values()):
        out += ["", "± = standard deviation over `train.seeds`."]
    out += [""]

    out += ["## Checkpoint evaluated", "",
            "Which epoch's weights were evaluated (`train.profiles.<profile>.checkpoint`): `last` = the final epoch; "
            "`best_val` = the epoch with the highest val MAP@all of the attribute-level ranking, as ASEN and ASEN++ "
            "keep their `model_best` (for ASEN++, among its second stage's epochs).", "",
            "| model | policy | epoch |", "|---|---|---|"]
    for model, label in MODELS.items():
        ck = (metrics.get(model) or {}).get("checkpoint")
        epoch = DASH if not ck else ", ".join(str(e) for e in ck.get("epochs", [ck.get("epoch")]))
        out.append(f"| {label} | {ck['policy'] if ck else DASH} | {epoch} |")
    out += [""]

    out += ["## 95% bootstrap confidence intervals over queries (test)", "",
            "| model | MAP@all | MAP@100 | Recall@100 |", "|---|---|---|---|"]
    for model, label in MODELS.items():
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
    for model, label in MODELS.items():
        t = (metrics.get(model) or {}).get("test")
        if not t:
            out.append(f"| {label} | {DASH} | {DASH} | {DASH} | {DASH} | {DASH} | {DASH} |")
            continue
        co, allc = t["cooccurring"], t["map_all"]["overall"]
        rel = (f"{100 * (co['map_all'] / allc - 1):+.2f}%" if co.get("map_all") is not None and allc else DASH)
        out.append(f"| {label} | {co['pairs']} | {co['classes']} | {co['queries']} | {fmt(co.get('map_all'))} | {fmt(allc)} | {rel} |")
    out += [""]

    out += ["## Pointing game (attention peak inside the ground-truth box)", "",
            "Query images with known regions of localised classes (the twin's `regions.json`); a hit when the "
            "peak of the model's attention map, upsampled to the stored image, lies inside the box; chance is the "
            "mean share of the image the boxes cover. Models without a class-conditional map are scored with "
            "their attribute-level map.", "",
            "| model | accuracy (%) | chance (%) | (image, class) pairs |", "|---|---|---|---|"]
    for model, label in MODELS.items():
        pg = (metrics.get(model) or {}).get("pointing_game")
        out.append(f"| {label} | {fmt(pg['accuracy']) if pg else DASH} | {fmt(pg.get('chance')) if pg else DASH} "
                   f"| {pg['n'] if pg else DASH} |")
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
    from benchmark.evaluate import eval_dir

    paper = json.loads(PAPER_RESULTS.read_text())
    n_examples = int(params.get("report", {}).get("examples", 4))
    written = []
    for key in DATASETS:
        metrics = {m: _read(paths.model_reports_dir(key, m) / "metrics.json") for m in MODELS}
        cis = {m: _read(paths.model_reports_dir(key, m) / "metrics_ci.json") for m in MODELS}
        source = params.get("acquire", {}).get(key, {}).get("source", "twin")
        fig_paths = []
        f = figs.attention_figure(eval_dir(key, "m3net"), figures_dir() / f"{key}_attention.png", n_examples)
        if f:
            fig_paths.append(f)
        f = figs.retrieval_figure({m: eval_dir(key, m) for m in ("m3net", "modc")},
                                  figures_dir() / f"{key}_retrieval.png", n_examples)
        if f:
            fig_paths.append(f)
        page = dataset_page(key, metrics, cis, paper, source == "twin", fig_paths)
        out = paths.ROOT / "reports" / f"{key}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page)
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
