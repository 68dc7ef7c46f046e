"""Per-image work of a loader worker: the current path vs the one it replaced, side by side.

Current (``ImageFolderTable.load``): OpenCV decode straight to RGB, torchvision's antialiased
bilinear resize on uint8, mirror, a uint8 (3, S, S) tensor; the batch is normalised on the device.
Replaced: OpenCV decode + BGR->RGB, ``INTER_AREA`` resize, float32 ImageNet normalisation in the
worker. One 300 px JPEG (DeepFashion's size) to 224 px, one thread, as in a DataLoader worker.
The two images agree to within a grey level, so both paths do the same job.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from benchmark.loaders import IMAGENET_MEAN, IMAGENET_STD, ImageFolderTable, normalize

SIZE = 224


def replaced_path(path: str, flip: bool) -> torch.Tensor:
    """The worker's work before the change, for comparison only."""
    img = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    if flip:
        t = t.flip(-1)
    return t.sub_(torch.tensor(IMAGENET_MEAN).view(3, 1, 1)).div_(torch.tensor(IMAGENET_STD).view(3, 1, 1))


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory):
    d = tmp_path_factory.mktemp("jpeg")
    img = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8), (9, 9), 3)
    cv2.imwrite(str(d / "a.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return d


def _per_image_seconds(fn, n=200) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


@pytest.mark.benchmark(group="loader-per-image")
def test_bench_worker_per_image_vs_replaced_path(benchmark, jpeg):
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    table = ImageFolderTable({"image_id": [0], "path": ["a.jpg"]}, jpeg, SIZE)
    path = str(jpeg / "a.jpg")
    new, old = normalize(table.load(0, flip=True)), replaced_path(path, True)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert ((new - old) * std * 255).abs().mean() < 1.0  # the same image, to within a grey level
    t_old = _per_image_seconds(lambda: replaced_path(path, True))
    t_new = _per_image_seconds(lambda: table.load(0, flip=True))
    benchmark.extra_info.update({"replaced_us_per_image": t_old * 1e6, "current_us_per_image": t_new * 1e6,
                                 "speedup": t_old / t_new})
    print(f"\nworker per image, 300 -> 224 px: replaced {t_old * 1e6:.0f} us, current {t_new * 1e6:.0f} us, "
          f"{t_old / t_new:.2f}x")
    benchmark(table.load, 0, flip=True)
