"""`fashionbench score <dataset> <embeddings>...`: the protocol's metrics for precomputed embeddings.

    fashionbench score fashionai my_model_seed0.npz my_model_seed1.npz --name my_model

Not a stage: it validates the user's files against the dataset's split (``data/<key>/splits.parquet``
and the validated taxonomy; run the pipeline's data stages first) and scores them through the
evaluate stage's own function (``benchmark.evaluate.run``), so the outputs are those of a trained
model named ``--name``: ``reports/<key>/<name>/{metrics.json, metrics_ci.json, gamma.csv,
per_query.parquet}`` and ``data/<key>/eval/<name>/`` (per-query table, retrieval examples), where
the leaderboard stage picks the model up (``dvc repro leaderboard@<key> report``: its row, interval
and pairwise tests on the page's leaderboard section). ``metrics.json``'s ``checkpoint`` reads
``{"policy": "precomputed"}`` and ``source`` names the files with their sha256.

The file: one ``.npz`` per training run (seed), written with ``np.savez``, no pickled objects:

- ``image_id`` (n,) integers: exactly the val and test images of ``data/<key>/splits.parquet``, in
  any order;
- ``attribute`` (n, N, D) floats: the attribute-specific embedding of each image for each of the
  dataset's N attributes, in attribute id order (``data/<key>/validated/taxonomy.parquet``); ranked
  by cosine similarity, scored in float32;
- optional, the class level (the multi-granularity ranking of docs/PROTOCOL.md): ``class_index``
  (P, 3) integers, each row (row of ``image_id``, attribute id, class id within the attribute), one
  row per (image, attribute, class) at most, with ``class_emb`` (P, D') floats; optionally ``probs``
  (n, C) in [0, 1], the class probabilities P_n of the C classes in global class id order (with
  them ``evaluate.gamma`` selects the class rows as for a trained model; without, every row counts);
  ``--attribute-level`` ignores the class level;
- optional ``seed`` (an integer): which training run; else ``seed<k>`` in the file name, else the
  file's position among the arguments (0, 1, ...). Several seeds give the mean, the ``std``
  section and the leaderboard's intervals with seeds as units, as for a trained model.

The evaluate stage's embeddings (``data/<key>/embeddings/<model>/seed<k>.npz``, ``benchmark/inference.py``)
are in this format; their other members (``class_level``, ``checkpoint_*``) are read where present
(``class_level: false`` means the attribute ranking) and ignored otherwise. Every error names the
file and what is wrong (exit status 2).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from model.base import Embeddings

CONTROL = "attribute_blind"
NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class ScoreError(Exception):
    """A file or argument that cannot be scored: the message names it (exit status 2)."""


def _examples(values, k: int = 5) -> str:
    values = list(values)
    head = ", ".join(str(v) for v in values[:k])
    return head + (f" ... ({len(values)} in all)" if len(values) > k else "")


def load_scored_file(path: Path, ids: np.ndarray, names: list[str], classes_per_attribute: list[int],
                     attribute_level: bool = False) -> tuple[np.ndarray, Embeddings, bool]:
    """(ids, Embeddings, class level) of one user file, validated and reordered to ``ids`` (the
    split's val and test images, ascending): what ``benchmark.evaluate.run``'s loaders return."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ScoreError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ScoreError(f"{path}: not a .npz file readable without pickle ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ScoreError(f"{path}: a single array, not a .npz of named arrays (image_id, attribute, ...)")
    with z:
        try:
            members = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ScoreError(f"{path}: a member cannot be read without pickle ({e})") from None

    def need(key):
        if key not in members:
            raise ScoreError(f"{path}: no member '{key}' (it holds: {', '.join(sorted(members)) or 'nothing'})")
        return members[key]

    def integers(key, a):
        if not np.issubdtype(a.dtype, np.integer):
            raise ScoreError(f"{path}: '{key}' must hold integers, not {a.dtype}")

    def floats(key, a, shape_text):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)) or a.dtype == bool:
            raise ScoreError(f"{path}: '{key}' must hold numbers {shape_text}, not {a.dtype}")
        bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1) if a.size else np.zeros(len(a), dtype=bool)
        return bad

    image_id = need("image_id")
    integers("image_id", image_id)
    if image_id.ndim != 1:
        raise ScoreError(f"{path}: 'image_id' must be one-dimensional (n,), got shape {image_id.shape}")
    uniq, counts = np.unique(image_id, return_counts=True)
    if (counts > 1).any():
        raise ScoreError(f"{path}: image ids appear more than once: {_examples(uniq[counts > 1])}")
    missing = np.setdiff1d(ids, image_id)
    extra = np.setdiff1d(image_id, ids)
    if extra.size:
        raise ScoreError(f"{path}: image ids that are not val or test images of the split (splits.parquet): "
                         f"{_examples(extra)}")
    if missing.size:
        raise ScoreError(f"{path}: val and test images of the split (splits.parquet) without an embedding: "
                         f"{_examples(missing)}")
    n, N = len(ids), len(classes_per_attribute)

    att = need("attribute")
    if att.ndim != 3 or att.shape[0] != len(image_id) or att.shape[1] != N or att.shape[2] < 1:
        raise ScoreError(f"{path}: 'attribute' must have shape (n, N, D) = ({n}, {N}, D): one D-dimensional "
                         f"embedding per image and attribute ({', '.join(names)}); got {att.shape}")
    bad = floats("attribute", att, "(n, N, D)")
    if bad.any():
        raise ScoreError(f"{path}: 'attribute' holds NaN or inf for {int(bad.sum())} images, e.g. image ids "
                         f"{_examples(image_id[bad])}")

    has_class = "class_index" in members or "class_emb" in members
    class_level = bool(members["class_level"]) if "class_level" in members else has_class
    if attribute_level:
        class_level = False
    order = np.argsort(image_id, kind="stable")  # -> the split's order (ids ascending)
    row_of = np.empty(n, dtype=np.int64)
    row_of[order] = np.arange(n)
    attribute = torch.from_numpy(np.ascontiguousarray(att[order], dtype=np.float32))
    if not class_level:
        return ids, Embeddings(attribute), False

    cidx, cemb = need("class_index"), need("class_emb")
    integers("class_index", cidx)
    if cidx.ndim != 2 or cidx.shape[1] != 3:
        raise ScoreError(f"{path}: 'class_index' must have shape (P, 3) (image row, attribute id, class id); got {cidx.shape}")
    if cemb.ndim != 2 or cemb.shape[0] != cidx.shape[0] or cemb.shape[1] < 1:
        raise ScoreError(f"{path}: 'class_emb' must have shape (P, D') with P = {cidx.shape[0]} rows as 'class_index'; "
                         f"got {cemb.shape}")
    r, a, c = cidx[:, 0], cidx[:, 1], cidx[:, 2]
    if ((r < 0) | (r >= n)).any():
        i = int(np.flatnonzero((r < 0) | (r >= n))[0])
        raise ScoreError(f"{path}: 'class_index' row {i}: image row {int(r[i])} outside [0, {n})")
    if ((a < 0) | (a >= N)).any():
        i = int(np.flatnonzero((a < 0) | (a >= N))[0])
        raise ScoreError(f"{path}: 'class_index' row {i}: attribute {int(a[i])} outside [0, {N})")
    cpa = np.asarray(classes_per_attribute)
    out = (c < 0) | (c >= cpa[a])
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise ScoreError(f"{path}: 'class_index' row {i}: class {int(c[i])} outside attribute {int(a[i])}'s "
                         f"{int(cpa[a[i]])} classes ({names[int(a[i])]})")
    _, cnt = np.unique(cidx, axis=0, return_counts=True)
    if (cnt > 1).any():
        raise ScoreError(f"{path}: 'class_index' repeats {int((cnt > 1).sum())} (image, attribute, class) rows")
    bad = floats("class_emb", cemb, "(P, D')")
    if bad.any():
        raise ScoreError(f"{path}: 'class_emb' holds NaN or inf in {int(bad.sum())} rows, e.g. row {int(np.flatnonzero(bad)[0])}")
    probs = None
    if "probs" in members:
        p = members["probs"]
        C = int(cpa.sum())
        if p.ndim != 2 or p.shape != (len(image_id), C):
            raise ScoreError(f"{path}: 'probs' must have shape (n, C) = ({n}, {C}); got {p.shape}")
        bad = floats("probs", p, "(n, C)")
        if bad.any() or ((p < 0) | (p > 1)).any():
            rows = bad | ((p < 0) | (p > 1)).any(axis=1)
            raise ScoreError(f"{path}: 'probs' must lie in [0, 1] (no NaN or inf); not so for image ids "
                             f"{_examples(image_id[rows])}")
        probs = torch.from_numpy(np.ascontiguousarray(p[order], dtype=np.float32))
    new_idx = np.stack([row_of[r], a, c], axis=1).astype(np.int64)
    emb = Embeddings(attribute, probs, torch.from_numpy(new_idx), torch.from_numpy(np.ascontiguousarray(cemb, dtype=np.float32)))
    return ids, emb, True


def file_seeds(files: list[Path]) -> dict[int, Path]:
    """seed -> file: the file's ``seed`` member, else ``seed<k>`` in its name, else its position."""
    out: dict[int, Path] = {}
    for i, f in enumerate(files):
        seed = i
        try:
            with np.load(f, allow_pickle=False) as z:
                if "seed" in z.files:
                    s = z["seed"]
                    if s.shape != () or not np.issubdtype(s.dtype, np.integer):
                        raise ScoreError(f"{f}: 'seed' must be one integer, got {s.dtype} of shape {s.shape}")
                    seed = int(s)
                elif m := re.search(r"seed(\d+)", Path(f).stem):
                    seed = int(m.group(1))
        except (OSError, ValueError, zipfile.BadZipFile, AttributeError):
            pass  # load_scored_file names the problem
        if seed in out:
            raise ScoreError(f"{f}: seed {seed} again (also {out[seed]}): one file per seed")
        out[seed] = Path(f)
    return dict(sorted(out.items()))  # ascending, as train.seeds: the first seed's model draws the gamma sweep


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def score(key: str, files: list[Path], name: str, params: dict, device=None, attribute_level: bool = False) -> dict:
    """Validate every file, then score them with ``benchmark.evaluate.run`` as model ``name``."""
    from benchmark import evaluate
    from benchmark.evalsets import load_eval_set
    from datasets import paths

    if not NAME.match(name) or "_vs_" in name:
        raise ScoreError(f"--name {name!r}: use lower-case letters, digits and _ (not '_vs_'), starting with a letter or digit")
    if name == CONTROL or name in (params.get("models") or {}):
        raise ScoreError(f"--name {name}: a model of the pipeline (params.yaml models, or the control); its reports "
                         "are the evaluate stage's: choose another name")
    for need in (paths.splits_path(key), paths.validated_dir(key) / "taxonomy.parquet", paths.cooccurrence_dir(key)):
        if not need.exists():
            raise ScoreError(f"{need}: missing: run the data stages of {key} first (dvc repro cooccurrence@{key})")
    es = load_eval_set(key, params.get("validate", {}).get("maybe_policy", "negative"))
    seeds = file_seeds(files)
    for f in seeds.values():  # every file valid before anything is written
        load_scored_file(f, es.ids, es.names, es.classes_per_attribute, attribute_level)

    def loader(f: Path):
        def load():
            ids, emb, class_level = load_scored_file(f, es.ids, es.names, es.classes_per_attribute, attribute_level)
            return ids, emb, class_level, {"policy": "precomputed", "epoch": None, "epochs_run": None, "max_epochs": None}
        return load

    source = {"files": [str(f) for f in seeds.values()], "seeds": list(seeds), "sha256": [_sha256(f) for f in seeds.values()]}
    return evaluate.run(key, name, params, device=device, embeddings={s: loader(f) for s, f in seeds.items()},
                        source=source)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from datasets import DATASETS

    p.description = __doc__.split("\n")[0]
    p.add_argument("dataset", help=f"a dataset key ({', '.join(DATASETS)})")
    p.add_argument("embeddings", nargs="+", type=Path, help="one .npz per seed (format: benchmark/score.py, README)")
    p.add_argument("--name", default=None, help="the model's name in the reports (default: the first file's name)")
    p.add_argument("--attribute-level", action="store_true", help="ignore the files' class level")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--device", default=None, help="where rankings are scored: cpu | cuda (default: cuda when available)")


def default_name(files: list[Path]) -> str:
    stem = re.sub(r"[^a-z0-9_]+", "_", Path(files[0]).stem.lower()).strip("_")
    return stem or "scored"


def run(args) -> int:
    from benchmark.params import ParamsError, load_params

    name = args.name or default_name(args.embeddings)
    try:
        params = load_params(args.params)
        result = score(args.dataset, list(args.embeddings), name, params, device=args.device,
                       attribute_level=args.attribute_level)
    except (ScoreError, ParamsError) as e:
        print(f"fashionbench score: {e}", file=sys.stderr)
        return 2
    t = result["test"]
    print(f"{args.dataset}/{name}: test MAP@all {t['map_all']['overall']}, MAP@100 {t['map_100']['overall']}, "
          f"Recall@100 {t['recall_100']['overall']} ({t['queries']['used']} queries); reports/{args.dataset}/{name}/",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fashionbench score")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
