"""Near-duplicate search over 64-bit perceptual hashes, with memory bounded whatever the buckets.

`phash` is the 64-bit DCT hash of a grey image (OpenCV: 32x32 area resize, 2-D DCT, the 8x8
lowest frequencies against their median). Resized and re-compressed copies keep it within a few
bits where the 64-bit dHash can move many more (its bits are signs of neighbour differences, which
a flat region turns into coin flips).

`near_pair_array` finds every pair of hashes within `max_dist` bits (multi-index hashing, by the
pigeonhole principle): the 64 bits are cut into max_dist + 1 bands, and two hashes within
max_dist bits agree on at least one band, so only hashes sharing a band value (a bucket) are
compared. A bucket of m hashes is compared in blocks of rows, at most `block` (row, column)
distances at a time, so a bucket holding a tenth of a 289k-image release costs time (m^2 / 2
XOR-popcounts) but not an m x m matrix. A pair is reported only by the first band its hashes
agree on, so no set of pairs is built to deduplicate. Memory: the hashes, their band keys
(max_dist + 1 small ints per hash), one block, and the pairs found.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1 << 21  # (row, column) distances held at once: ~20 MB of temporaries


def phash(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a 2-D uint8 (or float) grey image; bit i = low-frequency
    coefficient i (row-major over the 8x8 block) above the block's median."""
    import cv2

    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")


def _bands(max_dist: int) -> list[tuple[int, int]]:
    nb = max_dist + 1
    width = [64 // nb + (1 if i < 64 % nb else 0) for i in range(nb)]
    starts = np.r_[0, np.cumsum(width)[:-1]]
    return [(int(s), int(w)) for s, w in zip(starts, width)]


def _band_keys(h: np.ndarray, bands) -> np.ndarray:
    keys = np.empty((len(bands), len(h)), dtype=np.uint64)
    for b, (shift, width) in enumerate(bands):
        keys[b] = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
    return keys


def near_pair_array(h: np.ndarray, max_dist: int, block: int = BLOCK) -> np.ndarray:
    """(k, 2) int64 array of index pairs (i < j) with popcount(h[i] ^ h[j]) <= max_dist, sorted."""
    if not 0 <= max_dist <= 63:
        raise ValueError(f"the Hamming distance must be within 0..63 bits of a 64-bit hash, got {max_dist}")
    h = np.ascontiguousarray(h, dtype=np.uint64)
    n = len(h)
    if n < 2:
        return np.empty((0, 2), np.int64)
    bands = _bands(max_dist)
    keys = _band_keys(h, bands)
    found = []
    for b in range(len(bands)):
        order = np.argsort(keys[b], kind="stable")
        key = keys[b][order]
        cuts = np.flatnonzero(key[1:] != key[:-1]) + 1
        starts, ends = np.r_[0, cuts], np.r_[cuts, n]
        big = (ends - starts) >= 2
        for s, e in zip(starts[big], ends[big]):
            members = order[s:e]  # ascending indices (stable sort)
            hm = h[members]
            m = e - s
            rows = max(1, block // m)
            for r0 in range(0, m - 1, rows):
                r1 = min(m - 1, r0 + rows)
                # rows r0..r1-1 against columns r0+1..m-1; keep column > row
                dist = np.bitwise_count(hm[r0:r1, None] ^ hm[None, r0 + 1:])
                ri, ci = np.nonzero(dist <= max_dist)
                ci = ci + r0 + 1
                ri = ri + r0
                keep = ci > ri
                if not keep.any():
                    continue
                i, j = members[ri[keep]], members[ci[keep]]
                # reported by the first band the two agree on only
                first = np.ones(len(i), bool)
                for b2 in range(b):
                    first &= keys[b2][i] != keys[b2][j]
                if first.any():
                    found.append(np.stack([i[first], j[first]], 1))
    if not found:
        return np.empty((0, 2), np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    pairs = np.stack([pairs.min(1), pairs.max(1)], 1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def near_pair_ids(hashes: dict[int, int], max_dist: int, block: int = BLOCK) -> np.ndarray:
    """(k, 2) int64 array of id pairs (a < b) whose 64-bit hashes differ in <= max_dist bits,
    sorted; an array, since bunched hashes give millions of pairs at full size."""
    if len(hashes) < 2:
        return np.empty((0, 2), np.int64)
    ids = np.fromiter(hashes.keys(), dtype=np.int64, count=len(hashes))
    h = np.fromiter(hashes.values(), dtype=np.uint64, count=len(hashes))
    p = near_pair_array(h, max_dist, block)
    a, c = ids[p[:, 0]], ids[p[:, 1]]
    out = np.stack([np.minimum(a, c), np.maximum(a, c)], 1)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def near_pairs(hashes: dict[int, int], max_dist: int, block: int = BLOCK) -> list[tuple[int, int]]:
    """Pairs (a < b) of ids whose 64-bit hashes differ in <= max_dist bits, sorted."""
    return [(int(a), int(b)) for a, b in near_pair_ids(hashes, max_dist, block)]
