"""The report's figures, drawn from the evaluate stage's example files (data/<key>/eval/<model>/).

- ``attention_figure``: Figure 3 — each image beside its attribute-level and class-level attention.
- ``retrieval_figure``: Figure 4 — the same queries ranked by two models, green frames on relevant
  results, red on the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from datasets.atomic import atomic_path  # noqa: E402

GREEN, RED = (0.1, 0.7, 0.2), (0.85, 0.1, 0.1)


def _names(eval_dir: Path) -> dict:
    p = eval_dir / "names.json"
    return json.loads(p.read_text()) if p.exists() else {"attributes": [], "classes": {}}


def _attr(names, a) -> str:
    a = int(a)
    return names["attributes"][a] if a < len(names["attributes"]) else f"attribute {a}"


def _overlay(ax, img, attn):
    """Image with the attention map upsampled (bilinear, via imshow extent) over it."""
    h, w = img.shape[:2]
    ax.imshow(img)
    a = attn - attn.min()
    a = a / a.max() if a.max() > 0 else a
    ax.imshow(a, cmap="jet", alpha=0.45, extent=(0, w, h, 0), interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])


def attention_figure(eval_dir: Path, out: Path, max_rows: int = 4) -> Path | None:
    """Rows of (image, attribute-level attention, class-level attention); None without attention.npz."""
    p = Path(eval_dir) / "attention.npz"
    if not p.exists():
        return None
    d = np.load(p)
    names = _names(Path(eval_dir))
    n = min(max_rows, len(d["image_id"]))
    if n == 0:
        return None
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.3 * n), squeeze=False)
    for r in range(n):
        a, c = int(d["attribute_id"][r]), int(d["class_id"][r])
        img = d["pixels"][r]
        axes[r, 0].imshow(img)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_title(f"image {int(d['image_id'][r])}", fontsize=8)
        _overlay(axes[r, 1], img, d["attribute_map"][r])
        axes[r, 1].set_title(f"attribute: {_attr(names, a)}", fontsize=8)
        _overlay(axes[r, 2], img, d["class_map"][r])
        axes[r, 2].set_title(f"class: {names['classes'].get(f'{a}/{c}', c)}", fontsize=8)
    fig.suptitle("Attribute-level vs class-level attention (cf. the paper's Figure 3)", fontsize=9)
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(out).suffix[1:])
    plt.close(fig)
    return out


def retrieval_figure(eval_dirs: dict[str, Path], out: Path, max_queries: int = 4) -> Path | None:
    """For each query: one row per model (query, then its top results framed green/red)."""
    loaded = {m: np.load(Path(d) / "retrieval.npz") for m, d in eval_dirs.items() if (Path(d) / "retrieval.npz").exists()}
    if not loaded:
        return None
    first = next(iter(loaded.values()))
    names = _names(Path(next(iter(eval_dirs.values()))))
    queries = list(zip(first["query_image_id"].tolist(), first["attribute_id"].tolist()))[:max_queries]
    if not queries:
        return None
    top = first["top_image_id"].shape[1]
    rows = len(queries) * len(loaded)
    fig, axes = plt.subplots(rows, top + 1, figsize=(1.25 * (top + 1), 1.45 * rows), squeeze=False)
    r = 0
    for q, a in queries:
        for model, d in loaded.items():
            pix = {int(i): p for i, p in zip(d["shown_image_id"], d["pixels"])}
            match = [j for j, (qq, aa) in enumerate(zip(d["query_image_id"], d["attribute_id"])) if qq == q and aa == a]
            for ax in axes[r]:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_frame_on(False)
            if match:
                j = match[0]
                axes[r, 0].imshow(pix[q])
                axes[r, 0].set_title(f"{model}\n{_attr(names, a)}", fontsize=6)
                for k, (cid, rel) in enumerate(zip(d["top_image_id"][j], d["top_relevant"][j])):
                    if cid < 0:
                        continue
                    ax = axes[r, k + 1]
                    ax.imshow(pix[int(cid)])
                    ax.set_frame_on(True)
                    for s in ax.spines.values():
                        s.set_edgecolor(GREEN if rel else RED)
                        s.set_linewidth(3)
            r += 1
    fig.suptitle("Retrieval: green = relevant, red = not (cf. the paper's Figure 4)", fontsize=9)
    return _save(fig, out)


def leaderboard_figure(boards: dict[str, dict], labels: dict[str, str], titles: dict[str, str], out: Path) -> Path | None:
    """One panel per dataset: each model's test MAP@all (mean over seeds) with its 95% interval,
    chance as a dashed line. ``boards``: dataset key -> leaderboard.json; None when none exists."""
    boards = {k: b for k, b in boards.items() if b and b.get("models")}
    if not boards:
        return None
    fig, axes = plt.subplots(1, len(boards), figsize=(4.2 * len(boards), 0.45 * len(labels) + 1.6), squeeze=False)
    for ax, (key, b) in zip(axes[0], boards.items()):
        models = [m for m in labels if m in b["models"]]
        y = np.arange(len(models))[::-1]
        mean = np.array([b["models"][m]["map_all"]["mean"] for m in models], dtype=float)
        lo = np.array([b["models"][m]["map_all"]["low"] for m in models], dtype=float)
        hi = np.array([b["models"][m]["map_all"]["high"] for m in models], dtype=float)
        ax.errorbar(mean, y, xerr=[mean - lo, hi - mean], fmt="o", color="k", ecolor="0.4", capsize=3)
        if b["chance"].get("map_all") is not None:
            ax.axvline(b["chance"]["map_all"], color=RED, linestyle="--")
            ax.text(b["chance"]["map_all"], len(models) - 0.45, " chance", color=RED, fontsize=8, va="bottom")
        ctrl = (b.get("attribute_blind") or {}).get("map_all") or {}
        if ctrl.get("mean") is not None:  # the attribute-blind control: its mean and 95% interval
            ax.axvspan(ctrl["low"], ctrl["high"], color="tab:blue", alpha=0.15, lw=0)
            ax.axvline(ctrl["mean"], color="tab:blue", linestyle=":")
            ax.text(ctrl["mean"], -0.55, " attribute-blind", color="tab:blue", fontsize=8, va="bottom")
        ax.set_ylim(-0.6, len(models) - 0.1)
        ax.set_yticks(y)
        ax.set_yticklabels([labels[m] for m in models])
        ax.set_xlabel("test MAP@all (%), mean over seeds, 95% interval")
        ax.set_title(f"{titles.get(key, key)} ({b['queries']['test']} queries)")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, out)
