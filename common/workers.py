"""Worker processes for CPU stages that parallelise over independent items (folds, image batches)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def spawned_pool(workers: int, initializer=None, initargs: tuple = ()) -> ProcessPoolExecutor | None:
    """A pool of `workers` spawned processes (no forked torch/OpenMP thread state), or None for one process."""
    if workers <= 1:
        return None
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=initializer, initargs=initargs)
