"""Triplet sampling (docs/PROTOCOL.md): attribute, then class, then anchor/positive/negative.

Per triplet:
1. an attribute n, uniform over the attributes that have at least one usable class;
2. a class m of n, uniform over n's usable classes: classes with >= 2 training images (anchor and
   positive must differ) and at least one valid negative;
3. anchor and positive: two different training images with a positive label for (n, m);
4. negative: a training image annotated in n with a positive label in n but NOT class m, drawn
   as ``negatives`` says (``models.<model>.negatives``):
   - ``image_uniform`` (ASEN's ``TripletGenerator.get_triplet``, the default): uniform over those
     images, so a frequent class is the negative's class more often;
   - ``class_uniform`` (ASEN++'s ``TripletSampler``: ``vp, vn = random.sample(classes, 2)``, then
     an image of vn): a class h != m of n uniformly among those with such an image, then an image
     of h uniformly among those that are not positive in m.
   Choice: the negative must have *some* positive class in n, so that it lives in attribute n's
   label space (an image that says nothing about n is no evidence of "not m"); on single-label
   data this is "a different class of the same attribute", the ASEN/MODC convention.

Everything is drawn from one numpy Generator seeded by (seed, epoch), so an epoch's triplets do not
depend on how many epochs ran before it in this process: a resumed run samples exactly what an
uninterrupted one would. Only the training split reaches this module (the caller passes the
training rows' label matrix). Vectorised: 40K triplets take a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.taxonomy import class_offsets

# rejection rounds for negatives before falling back to an exact set difference per class
_REJECTION_ROUNDS = 16
NEGATIVES = ("image_uniform", "class_uniform")


@dataclass(frozen=True)
class TripletIndex:
    """CSR lists built once from the training rows' labels (row = position in the training table)."""

    positives: np.ndarray  # (n, C) bool: row has a positive label for global class g
    class_offsets: np.ndarray  # (N,) int64: global id of class 0 of each attribute
    attr_ptr: np.ndarray  # (N+1,) rows positive in (and annotated in) attribute n: attr_rows[ptr[n]:ptr[n+1]]
    attr_rows: np.ndarray
    class_ptr: np.ndarray  # (C+1,) rows with global class g
    class_rows: np.ndarray
    usable_attributes: np.ndarray  # (U,) attribute ids with >= 1 usable class
    usable_ptr: np.ndarray  # (U+1,) usable global classes of usable attribute u
    usable_classes: np.ndarray
    nonempty_ptr: np.ndarray  # (N+1,) classes of attribute n with >= 1 training image: the negative classes
    nonempty_classes: np.ndarray
    nonempty_pos: np.ndarray  # (C,) position of global class g in its attribute's nonempty list (-1: empty)

    @property
    def num_rows(self) -> int:
        return int(self.positives.shape[0])


@dataclass(frozen=True)
class Triplets:
    """One epoch's triplets as row indices into the training table (all arrays length T)."""

    anchor: np.ndarray  # (T,) int64
    positive: np.ndarray
    negative: np.ndarray
    attribute: np.ndarray  # (T,) int64 attribute id n
    class_id: np.ndarray  # (T,) int64 class id m within n
    flip: np.ndarray  # (T, 3) bool: horizontal flip of anchor / positive / negative

    def __len__(self) -> int:
        return int(self.anchor.shape[0])


def _csr(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((rows, cols))
    counts = np.bincount(cols, minlength=n_cols)
    ptr = np.zeros(n_cols + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr, rows[order].astype(np.int64)


def build_triplet_index(positives: np.ndarray, annotated: np.ndarray, classes_per_attribute) -> TripletIndex:
    """positives (n, C) bool and annotated (n, N) bool over the TRAINING rows only."""
    positives = np.asarray(positives, dtype=bool)
    annotated = np.asarray(annotated, dtype=bool)
    cpa = np.asarray(list(classes_per_attribute), dtype=np.int64)
    n_attr, n_cls = len(cpa), int(cpa.sum())
    if positives.shape[1] != n_cls or annotated.shape != (positives.shape[0], n_attr):
        raise ValueError(
            f"label shapes {positives.shape} / {annotated.shape} do not match the taxonomy ({n_attr} attributes, {n_cls} classes)"
        )
    offsets = class_offsets(cpa)[:-1]
    attr_of_class = np.repeat(np.arange(n_attr), cpa)
    # only labels in annotated attributes count (a 'drop'ped maybe leaves the attribute unannotated)
    positives = positives & annotated[:, attr_of_class]

    r, g = np.nonzero(positives)
    class_ptr, class_rows = _csr(r, g, n_cls)
    class_count = np.diff(class_ptr)

    # rows positive in attribute n: any positive among n's classes (sparse: DeepFashion is 209K x 1000)
    pairs = np.unique(r.astype(np.int64) * n_attr + attr_of_class[g])
    attr_ptr, attr_rows = _csr(pairs // n_attr, pairs % n_attr, n_attr)
    attr_count = np.diff(attr_ptr)

    # a class is usable with >= 2 images and >= 1 negative (a row positive in n without m)
    usable = (class_count >= 2) & (attr_count[attr_of_class] > class_count)
    # rows positive in n but all of them having m: the count test above is exact because every row
    # counted in class_count is also counted in attr_count
    usable_attrs, usable_lists = [], []
    for n in range(n_attr):
        cls = np.nonzero(usable[offsets[n] : offsets[n] + cpa[n]])[0] + offsets[n]
        if len(cls):
            usable_attrs.append(n)
            usable_lists.append(cls)
    usable_ptr = np.zeros(len(usable_lists) + 1, dtype=np.int64)
    np.cumsum([len(c) for c in usable_lists], out=usable_ptr[1:])
    nonempty = np.flatnonzero(class_count > 0)  # ascending: grouped by attribute
    nonempty_ptr = np.zeros(n_attr + 1, dtype=np.int64)
    np.cumsum(np.bincount(attr_of_class[nonempty], minlength=n_attr), out=nonempty_ptr[1:])
    nonempty_pos = np.full(n_cls, -1, dtype=np.int64)
    nonempty_pos[nonempty] = np.arange(len(nonempty)) - nonempty_ptr[attr_of_class[nonempty]]
    return TripletIndex(
        positives=positives,
        class_offsets=offsets,
        attr_ptr=attr_ptr,
        attr_rows=attr_rows,
        class_ptr=class_ptr,
        class_rows=class_rows,
        usable_attributes=np.asarray(usable_attrs, dtype=np.int64),
        usable_ptr=usable_ptr,
        usable_classes=np.concatenate(usable_lists).astype(np.int64) if usable_lists else np.zeros(0, np.int64),
        nonempty_ptr=nonempty_ptr,
        nonempty_classes=nonempty.astype(np.int64),
        nonempty_pos=nonempty_pos,
    )


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The Generator of one (seed, epoch): independent of what ran before."""
    return np.random.default_rng([int(seed), int(epoch), 0x7269])


def sample_triplets(index: TripletIndex, count: int, *, seed: int, epoch: int, flip: bool = True,
                    negatives: str = "image_uniform") -> Triplets:
    """``count`` triplets for ``epoch`` of run ``seed``; deterministic in (index, count, seed, epoch,
    negatives). ``negatives``: ``image_uniform`` (ASEN's draw) or ``class_uniform`` (ASEN++'s)."""
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    if len(index.usable_attributes) == 0:
        raise ValueError(
            "no usable (attribute, class) in the training split: every class needs >= 2 training "
            "images and at least one training image of another class of the same attribute"
        )
    rng = epoch_rng(seed, epoch)
    # 1. attribute, uniform over usable attributes
    u = rng.integers(0, len(index.usable_attributes), size=count)
    attribute = index.usable_attributes[u]
    # 2. class, uniform over that attribute's usable classes
    n_usable = index.usable_ptr[u + 1] - index.usable_ptr[u]
    g = index.usable_classes[index.usable_ptr[u] + (rng.random(count) * n_usable).astype(np.int64)]
    class_id = g - index.class_offsets[attribute]
    # 3. anchor and positive: two distinct members of class g
    k = index.class_ptr[g + 1] - index.class_ptr[g]
    i = (rng.random(count) * k).astype(np.int64)
    j = (rng.random(count) * (k - 1)).astype(np.int64)
    j = j + (j >= i)  # skip i: uniform over the other k-1 members
    anchor = index.class_rows[index.class_ptr[g] + i]
    positive = index.class_rows[index.class_ptr[g] + j]
    if negatives == "class_uniform":
        negative = _class_uniform_negatives(index, rng, attribute, g)
    else:
        negative = _image_uniform_negatives(index, rng, attribute, g)
    flips = rng.random((count, 3)) < 0.5 if flip else np.zeros((count, 3), dtype=bool)
    return Triplets(anchor, positive, negative, attribute.astype(np.int64), class_id.astype(np.int64), flips)


def _image_uniform_negatives(index: TripletIndex, rng: np.random.Generator, attribute: np.ndarray,
                             g: np.ndarray) -> np.ndarray:
    """ASEN's negative: uniform over the rows positive in the attribute, rejecting those with class g."""
    count = len(g)
    a_lo, a_n = index.attr_ptr[attribute], index.attr_ptr[attribute + 1] - index.attr_ptr[attribute]
    negative = np.empty(count, dtype=np.int64)
    todo = np.arange(count)
    for _ in range(_REJECTION_ROUNDS):
        if len(todo) == 0:
            break
        cand = index.attr_rows[a_lo[todo] + (rng.random(len(todo)) * a_n[todo]).astype(np.int64)]
        ok = ~index.positives[cand, g[todo]]
        negative[todo[ok]] = cand[ok]
        todo = todo[~ok]
    if len(todo):  # classes covering nearly all of their attribute: exact set difference
        for gc in np.unique(g[todo]):
            sel = todo[g[todo] == gc]
            n = attribute[sel[0]]
            pool = index.attr_rows[index.attr_ptr[n] : index.attr_ptr[n + 1]]
            pool = pool[~index.positives[pool, gc]]
            negative[sel] = pool[rng.integers(0, len(pool), size=len(sel))]
    return negative


def _class_uniform_negatives(index: TripletIndex, rng: np.random.Generator, attribute: np.ndarray,
                             g: np.ndarray) -> np.ndarray:
    """ASEN++'s negative: a class h != g of the attribute uniformly among those holding a row not
    positive in g, then such a row of h uniformly.

    A class h is drawn among the attribute's nonempty classes other than g, then rows of h until one
    is not positive in g (exact: uniform over h's valid rows). On single-label data every row of h
    is valid. A multi-label h whose rows all carry g cannot give a negative: the leftovers after the
    rejection rounds are settled exactly, a valid h keeping its draw and an invalid one redrawn
    uniformly among the valid classes, so every valid class keeps probability 1 / (valid classes)."""
    count = len(g)
    lo = index.nonempty_ptr[attribute]
    k = index.nonempty_ptr[attribute + 1] - lo  # >= 2: g and a class of some negative
    j = (rng.random(count) * (k - 1)).astype(np.int64)
    j = j + (j >= index.nonempty_pos[g])  # skip g: uniform over the other k-1 classes
    h = index.nonempty_classes[lo + j]
    h_lo, h_n = index.class_ptr[h], index.class_ptr[h + 1] - index.class_ptr[h]
    negative = np.empty(count, dtype=np.int64)
    todo = np.arange(count)
    for _ in range(_REJECTION_ROUNDS):
        if len(todo) == 0:
            break
        cand = index.class_rows[h_lo[todo] + (rng.random(len(todo)) * h_n[todo]).astype(np.int64)]
        ok = ~index.positives[cand, g[todo]]
        negative[todo[ok]] = cand[ok]
        todo = todo[~ok]
    if len(todo):  # classes whose rows mostly (or all) carry g as well: exact
        for gc in np.unique(g[todo]):
            sel = todo[g[todo] == gc]
            n = attribute[sel[0]]
            classes = index.nonempty_classes[index.nonempty_ptr[n]:index.nonempty_ptr[n + 1]]
            pools = {int(hc): rows[~index.positives[rows, gc]] for hc in classes if hc != gc
                     for rows in [index.class_rows[index.class_ptr[hc]:index.class_ptr[hc + 1]]]}
            valid = np.array(sorted(hc for hc, p in pools.items() if len(p)), dtype=np.int64)
            for t in sel:
                hc = int(h[t])
                if not len(pools[hc]):  # h has no negative for g: a valid class instead, uniformly
                    hc = int(valid[rng.integers(0, len(valid))])
                pool = pools[hc]
                negative[t] = pool[rng.integers(0, len(pool))]
    return negative
