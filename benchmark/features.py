"""Stage `features`: each shared trunk's feature map of every split image, computed once per dataset and seed.

    python -m benchmark.features <dataset>

Under a profile with ``trunk: shared``, reads ``data/<key>/trunk/seed<k>.pt`` for every seed of
``train.seeds`` (stage ``pretrain``), the validated images and the splits, and writes
``data/<key>/features/seed<k>/features.npy`` ((n, c, h, w) float16: 8x8 at the twin's 64 px
through ``plain8``) and ``image_id.npy``, rows in ascending image id over every image of train,
val and test (format: ``benchmark.shared_trunk``). Every model's train, embed and attention stages then read these maps
instead of decoding and convolving the pictures again. Under ``trunk: end_to_end`` it writes
only ``data/<key>/features/unused.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys

import numpy as np
import torch

from benchmark.params import load_params, training_profile
from benchmark.shared_trunk import features_paths, load_trunk, save_npy, uses_shared_trunk, write_unused
from datasets import DATASETS, paths
from datasets.schemas import ImagesSchema, SplitsSchema, read_table


@torch.no_grad()
def feature_maps(trunk: torch.nn.Module, table, batch_size: int, desc: str = "features") -> np.ndarray:
    """(n, c, h, w) float16 maps of every row of ``table`` (an ImageFolderTable), in row order."""
    from tqdm import tqdm

    from benchmark.loaders import image_loader, network_input

    out = []
    for x, _ in tqdm(image_loader(table, batch_size=batch_size), desc=desc, disable=not sys.stderr.isatty(),
                     file=sys.stderr, leave=False):
        out.append(trunk(network_input(x)).to(torch.float16).numpy())
    return np.concatenate(out)


def run(key: str, params: dict) -> dict:
    from benchmark.loaders import ImageFolderTable

    prof = training_profile(params)
    if not uses_shared_trunk(prof):
        write_unused(paths.features_dir(key), params["train"]["profile"])
        return {"trunk": "end_to_end"}
    if prof.get("threads"):
        torch.set_num_threads(int(prof["threads"]))
    seeds = [int(s) for s in params["train"]["seeds"]]
    images = read_table(paths.validated_dir(key) / "images.parquet", ImagesSchema)
    splits = read_table(paths.splits_path(key), SplitsSchema)
    ids = np.intersect1d(splits["image_id"].to_numpy(), images["image_id"].to_numpy())
    table = ImageFolderTable(images, paths.raw_dir(key), int(prof["image_size"]), image_ids=ids, cache=True,
                             preprocess=prof.get("preprocess", "squash"))
    root = paths.features_dir(key)
    root.mkdir(parents=True, exist_ok=True)
    keep = {features_paths(key, s)[0].parent for s in seeds}
    for f in root.iterdir():  # an unused.json of an end-to-end profile, the maps of a seed no longer run
        if f not in keep:
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    shape = None
    for seed in seeds:
        trunk, rec = load_trunk(key, seed)
        if rec["image_size"] != int(prof["image_size"]) or rec["backbone"] != prof["backbone"]:
            raise ValueError(f"{paths.trunk_dir(key)}: trunk {rec['backbone']} at {rec['image_size']} px, but the "
                             f"profile asks for {prof['backbone']} at {prof['image_size']} px; run `dvc repro pretrain@{key}`")
        maps = feature_maps(trunk, table, int(prof["pretrain"]["batch_size"]), desc=f"{key} features seed {seed}")
        fpath, ipath = features_paths(key, seed)
        save_npy(fpath, maps)
        save_npy(ipath, ids.astype(np.int64))
        shape = maps.shape
        print(f"[features] {key} seed {seed}: {maps.shape[0]} images -> {tuple(maps.shape[1:])} float16 maps "
              f"({maps.nbytes / 2**20:.0f} MiB)", file=sys.stderr)
    return {"images": int(shape[0]), "shape": list(shape[1:]), "seeds": seeds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.features", description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=DATASETS)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    from benchmark.checkpoint import CheckpointError

    try:
        run(args.dataset, load_params(args.params))
    except CheckpointError as e:  # a damaged or crafted trunk: one line, the file and why it was refused
        print(f"[features] {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
