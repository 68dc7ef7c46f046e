"""Slow, obvious references that more than one test file compares a vectorised loss with."""

from __future__ import annotations

import math


def eq7_loop(logits, targets, w_p, annotated, cpa):
    """Eq. 7 per (image, attribute n): the BCE summed over n's M_n classes divided by M_n; then the
    mean over the annotated (image, attribute) pairs."""
    offsets = [sum(cpa[:n]) for n in range(len(cpa))]
    tot, cnt = 0.0, 0
    for i in range(logits.shape[0]):
        for n, m_n in enumerate(cpa):
            if not annotated[i, n]:
                continue
            s = 0.0
            for j in range(offsets[n], offsets[n] + m_n):
                x = 1 / (1 + math.exp(-logits[i, j].item()))
                y = targets[i, j].item()
                s += -(w_p * y * math.log(x) + (1 - y) * math.log(1 - x))
            tot += s / m_n
            cnt += 1
    return tot / max(cnt, 1)
