"""Class offsets: where each attribute's classes start in the global class order (no torch).

The global class id of class m of attribute n is ``class_offsets(cpa)[n] + m``; attribute n's
classes are the slice ``offsets[n]:offsets[n + 1]``. ``model.base.RetrievalModel.class_offsets``
is the same rule as a torch buffer (``model/`` imports nothing of this package).
"""

from __future__ import annotations

import numpy as np


def class_offsets(classes_per_attribute) -> np.ndarray:
    """(N + 1,) int64: 0, then the running total of ``classes_per_attribute`` (the last entry is C)."""
    counts = np.asarray(list(classes_per_attribute), dtype=np.int64)
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out
