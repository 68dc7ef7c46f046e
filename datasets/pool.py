"""Image work in processes: one function over many files, results in input order.

Used by `parse` (size and sha256 of every image) and `validate` (decode, checks, hashes). The
results are the same list whatever the number of processes, so the tables do not depend on
`validate.workers`; tests compare one process with two.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

MIN_PER_WORKER = 64  # fewer items than this per process: fewer processes (a process costs ~1 s to start)


def resolve_workers(workers: int, name: str = "validate.workers") -> int:
    """`workers` as a process count: 0 means one per core; negative is an error naming `name`."""
    from datasets.errors import DatasetError

    try:
        workers = int(workers)
    except (TypeError, ValueError):
        raise DatasetError(f"{name} must be an integer >= 0 (0: one per core), got {workers!r}") from None
    if workers < 0:
        raise DatasetError(f"{name} must be >= 0 (0: one per core), got {workers}")
    return workers or os.cpu_count() or 1


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)


def map_in_processes(fn: Callable, items: Sequence, workers: int, desc: str, progress: bool | None = None,
                     name: str = "validate.workers") -> list:
    """[fn(x) for x in items] in `workers` spawned processes (0: os.cpu_count(); fewer when there
    are fewer than MIN_PER_WORKER items per process), in input order. `fn` must be picklable (a
    module-level function or a functools.partial of one). The progress bar goes to stderr and is
    off when stderr is not a terminal (progress=None) or when progress=False. A worker that dies
    raises DatasetError naming `name`, never a hang."""
    from tqdm import tqdm

    from datasets.errors import DatasetError

    n = len(items)
    workers = max(1, min(resolve_workers(workers, name), n // MIN_PER_WORKER))
    bar = tqdm(total=n, desc=desc, unit="img", file=sys.stderr, leave=False,
               disable=True if progress is False else None)
    out = []
    try:
        if workers == 1:
            _worker_init()
            for x in items:
                out.append(fn(x))
                bar.update()
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            from concurrent.futures.process import BrokenProcessPool

            # spawn, not fork: the parent holds polars' and OpenCV's thread pools. A worker that
            # cannot start (e.g. the caller's __main__ is not importable) breaks the pool: an error,
            # not a hang.
            chunk = max(1, min(256, n // (workers * 16)))
            try:
                with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as ex:
                    for r in ex.map(fn, items, chunksize=chunk):
                        out.append(r)
                        bar.update()
            except BrokenProcessPool as e:
                raise DatasetError(f"{name} = {workers}: a worker process died ({e}); "
                                   f"{name}: 1 does the work in this process") from e
    finally:
        bar.close()
    return out
