"""Splits: iterative stratification, duplicate units, query/candidate roles and the stage."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.schemas import SPLITS, SplitsSchema, read_table, write_table
from datasets.splits import duplicate_units, main, make_splits
from datasets.stratify import iterative_stratification

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ synthetic tables


def make_tables(seed, n_images, classes_per_attr, multi_label, dup_groups=0, unlabelled=0.0):
    """images / labels / taxonomy / duplicates tables like validation writes them."""
    rng = np.random.default_rng(seed)
    tax_rows, g = [], 0
    for a, m in enumerate(classes_per_attr):
        for c in range(m):
            tax_rows.append((a, f"attr{a}", c, f"c{a}_{c}", g))
            g += 1
    taxonomy = pl.DataFrame(tax_rows, schema={"attribute_id": pl.Int16, "attribute": pl.Utf8, "class_id": pl.Int16,
                                              "class_name": pl.Utf8, "global_class_id": pl.Int32}, orient="row")
    ids = rng.permutation(n_images * 3)[:n_images].astype(np.int64)  # ids need not be dense
    images = pl.DataFrame({"image_id": ids, "path": [f"img/{i}.jpg" for i in ids]}).with_columns(
        pl.lit(64, pl.Int32).alias("width"), pl.lit(64, pl.Int32).alias("height"),
        pl.lit(100, pl.Int64).alias("bytes"), pl.lit("x").alias("sha256"))
    rows = []
    pop = [np.array([1.0 / (c + 1) for c in range(m)]) for m in classes_per_attr]
    for i in ids:
        if rng.random() < unlabelled:
            continue
        if multi_label:
            for a, m in enumerate(classes_per_attr):
                if rng.random() < 0.6:
                    k = int(rng.integers(1, min(m, 3) + 1))
                    for c in rng.choice(m, k, replace=False, p=pop[a] / pop[a].sum()):
                        rows.append((int(i), a, int(c), "positive"))
        else:
            a = int(rng.integers(len(classes_per_attr)))
            c = int(rng.choice(classes_per_attr[a], p=pop[a] / pop[a].sum()))
            rows.append((int(i), a, c, "positive"))
        if rng.random() < 0.1:  # explicit non-positive states are not labels for stratification
            rows.append((int(i), 0, 0, "unknown"))
    labels = pl.DataFrame(rows, schema={"image_id": pl.Int64, "attribute_id": pl.Int16, "class_id": pl.Int16,
                                        "state": pl.Utf8}, orient="row").unique(
        subset=["image_id", "attribute_id", "class_id"], keep="first")
    dup_rows = []
    for gid in range(dup_groups):
        members = rng.choice(ids, int(rng.integers(2, 4)), replace=False)
        for mbr in members:
            dup_rows.append((gid, "exact" if gid % 2 else "near", int(mbr), False))
    duplicates = pl.DataFrame(dup_rows, schema={"group_id": pl.Int64, "kind": pl.Utf8, "image_id": pl.Int64,
                                                "spans_partitions": pl.Boolean}, orient="row")
    return images, labels, taxonomy, duplicates


def _pos(labels, taxonomy):
    return labels.filter(pl.col("state") == "positive").join(
        taxonomy.select("attribute_id", "class_id", "global_class_id"), on=["attribute_id", "class_id"])


def _random_csr(rng, n_units, n_labels, max_k):
    rows = [np.unique(rng.integers(0, n_labels, int(rng.integers(0, max_k + 1)))) for _ in range(n_units)]
    indptr = np.zeros(n_units + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.concatenate(rows) if rows else np.empty(0, np.int64)
    return indptr, indices.astype(np.int64)


RATIOS = st.sampled_from([(8, 1, 1), (220, 28, 28), (1, 1, 1), (3, 1), (0.2, 0.8), (5, 3, 2)])


# ------------------------------------------------------------------------------ stratify


@SETTINGS
@given(seed=st.integers(0, 10**6), n_units=st.integers(0, 300), n_labels=st.integers(1, 30),
       max_k=st.integers(0, 5), ratios=RATIOS)
def test_every_stratum_is_within_one_image_of_its_ratio(seed, n_units, n_labels, max_k, ratios):
    """The guarantee: per stratum (the units placed in one round) and subset, |n_j - r_j W| < 1."""
    rng = np.random.default_rng(seed)
    indptr, indices = _random_csr(rng, n_units, n_labels, max_k)
    res = iterative_stratification(indptr, indices, n_labels, ratios, seed)
    r = np.asarray(ratios, float) / sum(ratios)
    assert res.assignment.shape == (n_units,) and (res.assignment >= 0).all()
    for s in np.unique(res.strata):
        members = res.strata == s
        counts = np.bincount(res.assignment[members], minlength=len(r))
        assert np.all(np.abs(counts - r * members.sum()) < 1), (s, counts, r * members.sum())
        if s >= 0:  # a round's units all carry its label; unlabelled ones none
            rows = np.flatnonzero(members)
            assert all(s in indices[indptr[u]:indptr[u + 1]] for u in rows)
        else:
            assert all(indptr[u] == indptr[u + 1] for u in np.flatnonzero(members))
    # the whole set: one group, so the rounding keeps every subset's size within one image too
    sizes = np.bincount(res.assignment, minlength=len(r))
    assert np.all(np.abs(sizes - r * n_units) < 1), (sizes, r * n_units)


@SETTINGS
@given(seed=st.integers(0, 10**6), n_units=st.integers(1, 200), n_labels=st.integers(1, 12), ratios=RATIOS)
def test_multi_image_units_are_within_the_largest_unit_of_the_ratio(seed, n_units, n_labels, ratios):
    rng = np.random.default_rng(seed)
    indptr, indices = _random_csr(rng, n_units, n_labels, 3)
    weights = rng.choice([1, 1, 1, 2, 3], n_units)
    res = iterative_stratification(indptr, indices, n_labels, ratios, seed, weights=weights)
    r = np.asarray(ratios, float) / sum(ratios)
    for s in np.unique(res.strata):
        m = res.strata == s
        got = np.bincount(res.assignment[m], weights=weights[m], minlength=len(r))
        assert np.all(np.abs(got - r * weights[m].sum()) < weights[m].max()), (got, r * weights[m].sum())


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(1, 400), n_classes=st.integers(1, 15), ratios=RATIOS)
def test_single_label_data_keeps_every_class_within_one_image(seed, n, n_classes, ratios):
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, n_classes, n)
    indptr = np.arange(n + 1)
    res = iterative_stratification(indptr, cls, n_classes, ratios, seed)
    r = np.asarray(ratios, float) / sum(ratios)
    for c in range(n_classes):
        counts = np.bincount(res.assignment[cls == c], minlength=len(r))
        assert np.all(np.abs(counts - r * (cls == c).sum()) < 1)


def test_rare_labels_reach_every_subset_and_balance_beats_random():
    """Stratification, not chance: each class's share per split is far closer than a random split's."""
    rng = np.random.default_rng(3)
    indptr, indices = _random_csr(rng, 3000, 60, 4)
    r = np.array([0.8, 0.1, 0.1])

    def worst(assign):
        gaps = []
        for lab in range(60):
            units = np.flatnonzero(np.isin(np.arange(3000), np.repeat(np.arange(3000), np.diff(indptr))[indices == lab]))
            counts = np.bincount(assign[units], minlength=3)
            gaps.append(np.abs(counts - r * len(units)).max())
        return max(gaps)

    ours = worst(iterative_stratification(indptr, indices, 60, r, 0).assignment)
    rand = worst(rng.choice(3, 3000, p=r))
    assert ours <= 3 and ours < rand


def test_same_seed_same_split_other_seed_other_split():
    rng = np.random.default_rng(0)
    indptr, indices = _random_csr(rng, 500, 20, 4)
    a = iterative_stratification(indptr, indices, 20, (8, 1, 1), 7).assignment
    b = iterative_stratification(indptr, indices, 20, (8, 1, 1), 7).assignment
    c = iterative_stratification(indptr, indices, 20, (8, 1, 1), 8).assignment
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ------------------------------------------------------------------------------ make_splits


def _split(tables, seed=7, ratios=(8, 1, 1), q=0.2, **kw):
    images, labels, taxonomy, duplicates = tables
    return make_splits(images, labels, taxonomy, ratios=ratios, seed=seed, query_fraction=q,
                       duplicates=duplicates, **kw)


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(1, 250), attrs=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       multi=st.booleans(), dups=st.integers(0, 8), ratios=RATIOS.filter(lambda r: len(r) == 3))
def test_splits_partition_the_images_and_keep_duplicate_groups_whole(seed, n, attrs, multi, dups, ratios):
    tables = make_tables(seed, n, attrs, multi, dup_groups=dups if n >= 3 else 0, unlabelled=0.05)
    out, info = _split(tables, seed=seed, ratios=ratios)
    SplitsSchema.validate(out)
    images, _, _, duplicates = tables
    assert out.height == images.height  # none lost, none twice
    assert sorted(out["image_id"].to_list()) == sorted(images["image_id"].to_list())
    assert out["image_id"].n_unique() == out.height
    by_img = {i: (s, r) for i, s, r in out.iter_rows()}
    # exact and near groups, joined transitively through shared images, land on one (split, role)
    unit = duplicate_units(np.sort(images["image_id"].to_numpy()), duplicates)
    for members in duplicates.group_by("kind", "group_id").agg("image_id")["image_id"].to_list():
        assert len({by_img[m] for m in members}) == 1, members
    assert info["units"] == len(np.unique(unit))
    # sizes: one rounding group over the whole set -> within the largest unit of the ratio
    r = np.asarray(ratios, float) / sum(ratios)
    wmax = np.bincount(unit).max()
    sizes = np.array([out.filter(pl.col("split") == s).height for s in SPLITS])
    assert np.all(np.abs(sizes - r * n) < (1 if wmax == 1 else 2 * wmax)), (sizes, r * n)


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(20, 400), attrs=st.lists(st.integers(1, 8), min_size=1, max_size=5))
def test_single_label_queries_are_one_in_five_per_attribute_within_one_image(seed, n, attrs):
    tables = make_tables(seed, n, attrs, multi_label=False)
    out, _ = _split(tables, seed=seed, ratios=(2, 1, 1))
    _, labels, taxonomy, _ = tables
    pos = _pos(labels, taxonomy).join(out, on="image_id")
    for s in ("val", "test"):
        sub = pos.filter(pl.col("split") == s)
        for a in sub["attribute_id"].unique().to_list():
            aa = sub.filter(pl.col("attribute_id") == a)
            n_a, q_a = aa.height, aa.filter(pl.col("role") == "query").height
            assert abs(q_a - 0.2 * n_a) < 1, (s, a, q_a, n_a)
            if n_a >= 2:
                assert 0 < q_a < n_a
    # train images have the train role only, eval images a query or candidate role
    assert set(out.filter(pl.col("split") == "train")["role"].unique()) <= {"train"}
    assert set(out.filter(pl.col("split") != "train")["role"].unique()) <= {"query", "candidate"}


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(30, 400), attrs=st.lists(st.integers(2, 8), min_size=1, max_size=5),
       dups=st.integers(0, 6))
def test_multi_label_every_attribute_with_two_units_has_queries_and_candidates(seed, n, attrs, dups):
    tables = make_tables(seed, n, attrs, multi_label=True, dup_groups=dups)
    out, _ = _split(tables, seed=seed, ratios=(2, 1, 1))
    images, labels, taxonomy, duplicates = tables
    ids = np.sort(images["image_id"].to_numpy())
    unit = dict(zip(ids.tolist(), duplicate_units(ids, duplicates).tolist()))
    pos = _pos(labels, taxonomy).join(out, on="image_id")
    total_q = total = 0
    for s in ("val", "test"):
        sub = pos.filter(pl.col("split") == s)
        for a in sub["attribute_id"].unique().to_list():
            aa = sub.filter(pl.col("attribute_id") == a).unique("image_id")
            units = {unit[i] for i in aa["image_id"].to_list()}
            roles = set(aa["role"].to_list())
            if len(units) >= 2:
                assert roles == {"query", "candidate"}, (s, a, roles)
        ev = out.filter(pl.col("split") == s)
        total += ev.height
        total_q += ev.filter(pl.col("role") == "query").height
    if total >= 50:
        assert 0.1 <= total_q / total <= 0.3


def test_deepfashion_like_shares_per_attribute_are_near_one_in_five():
    tables = make_tables(1, 6000, [12, 15, 10, 14, 16], multi_label=True)
    out, _ = _split(tables, ratios=(220, 28, 28))
    _, labels, taxonomy, _ = tables
    pos = _pos(labels, taxonomy).join(out, on="image_id").unique(["image_id", "attribute_id"])
    for s in ("val", "test"):
        sub = pos.filter(pl.col("split") == s)
        for a, n_a, q_a in sub.group_by("attribute_id").agg(pl.len(), (pl.col("role") == "query").sum()).iter_rows():
            assert abs(q_a / n_a - 0.2) < 0.05, (s, a, q_a, n_a)


def test_same_seed_same_table():
    tables = make_tables(5, 300, [4, 5], multi_label=True, dup_groups=5)
    a, _ = _split(tables, seed=3)
    b, _ = _split(tables, seed=3)
    c, _ = _split(tables, seed=4)
    assert a.equals(b) and not a.equals(c)


def test_transitive_duplicate_groups_become_one_unit():
    ids = np.array([10, 11, 12, 13, 14], np.int64)
    dup = pl.DataFrame({"group_id": [0, 0, 1, 1], "kind": ["exact", "exact", "near", "near"],
                        "image_id": [10, 12, 12, 14], "spans_partitions": [False] * 4})
    u = duplicate_units(ids, dup)
    assert u[0] == u[2] == u[4] and len({u[0], u[1], u[3]}) == 3


def test_source_split_follows_partition_and_asen_roles_and_moves_straddling_groups():
    images, labels, taxonomy, _ = make_tables(2, 40, [3, 3], multi_label=False)
    ids = np.sort(images["image_id"].to_numpy())
    part = ["train"] * 24 + ["val"] * 8 + ["test"] * 8
    partition = pl.DataFrame({"image_id": ids, "partition": part})
    roles = []
    for i, p in zip(ids, part):
        if p != "train":
            roles.append((int(i), p, "query" if len(roles) % 5 == 0 else "candidate", 0))
    asen = pl.DataFrame(roles[:-1], schema=["image_id", "split", "role", "attribute_id"], orient="row").with_columns(
        pl.col("attribute_id").cast(pl.Int16))
    # a duplicate pair straddling train and test, and a triple mostly in val
    dup = pl.DataFrame({"group_id": [0, 0, 1, 1, 1], "kind": ["exact"] * 5,
                        "image_id": [int(ids[0]), int(ids[35]), int(ids[25]), int(ids[26]), int(ids[36])],
                        "spans_partitions": [True] * 5})
    out, info = make_splits(images, labels, taxonomy, ratios=(8, 1, 1), seed=0, query_fraction=0.2,
                            duplicates=dup, partition=partition, asen_roles=asen)
    assert info["mode"] == "source"
    got = dict(zip(out["image_id"].to_list(), zip(out["split"].to_list(), out["role"].to_list())))
    role_of = {i: r for i, _, r, _ in roles[:-1]}  # the last eval image has no ASEN line
    moved = {int(ids[35]), int(ids[36])}
    for i, p in zip(ids.tolist(), part):
        if i in moved:
            continue
        assert got[i][0] == p
        if p != "train":
            assert got[i][1] == role_of.get(i, "candidate")
    assert got[int(ids[35])] == ("train", "train")  # tie 1:1 train/test -> train
    assert got[int(ids[36])][0] == "val" and got[int(ids[36])][1] == got[int(ids[25])][1]
    assert info["images_moved_with_duplicate_group"] == 2
    assert info["eval_images_without_role"] == 1


# ------------------------------------------------------------------------------ the stage


def test_stage_writes_the_table_and_the_report(tmp_path, monkeypatch):
    images, labels, taxonomy, duplicates = make_tables(4, 500, [5, 6, 4], multi_label=True, dup_groups=6)
    from datasets.schemas import DuplicatesSchema, ImagesSchema, LabelsSchema, TaxonomySchema

    v = tmp_path / "data" / "fashionai" / "validated"
    for df, name, schema in [(images, "images", ImagesSchema), (labels, "labels", LabelsSchema),
                             (taxonomy, "taxonomy", TaxonomySchema), (duplicates, "duplicates", DuplicatesSchema)]:
        write_table(df, v / f"{name}.parquet", schema)
    params = {"splits": {"seed": 7, "ratios": {"fashionai": [8, 1, 1]}, "query_fraction": 0.2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert main(["fashionai"]) == 0
    out = read_table(tmp_path / "data" / "fashionai" / "splits.parquet", SplitsSchema)
    rep = json.loads((tmp_path / "reports" / "fashionai" / "splits.json").read_text())
    assert out.height == 500 and rep["mode"] == "stratified"
    assert rep["sizes"] == dict(Counter(out["split"].to_list()))
    assert sum(rep["sizes"].values()) == 500
    assert rep["roles"]["val/query"] + rep["roles"]["val/candidate"] == rep["sizes"]["val"]
    assert set(rep["per_attribute"]) == {"attr0", "attr1", "attr2"}
    assert rep["per_attribute"]["attr0"]["val_query"] > 0
    gap = rep["class_frequency_gap"]
    assert 0 <= gap["max"] < 0.2 and set(gap["frequency"]) == set(SPLITS)
    assert rep["largest_size_error_images"] < 4
    # the report's per-attribute counts agree with the table
    pos = _pos(labels, taxonomy).join(out, on="image_id").filter(pl.col("attribute_id") == 1)
    assert rep["per_attribute"]["attr1"]["test"] == pos.filter(pl.col("split") == "test")["image_id"].n_unique()


def _long_tailed(rng, n=1500, n_labels=300):
    """A Zipf-like multi-label matrix: a few frequent classes, many of ten to thirty images."""
    p = 1.0 / np.arange(1, n_labels + 1) ** 0.9
    p /= p.sum()
    rows = [np.unique(rng.choice(n_labels, rng.integers(1, 7), p=p)) for _ in range(n)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return indptr, np.concatenate(rows).astype(np.int64)


def _missing_and_deviation(assign, indptr, indices, n_labels, r, min_images=10):
    row_of = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    counts = np.zeros((len(r), n_labels))
    np.add.at(counts, (assign[row_of], indices), 1)
    total = counts.sum(0)
    missing = int(((counts[1:] == 0) & (total >= min_images)).sum())
    share = counts[2, total > 0] / total[total > 0]
    return missing, float(np.abs(share - r[2]).mean())


def _sechidis(Y: np.ndarray, r: np.ndarray, seed: int) -> np.ndarray:
    """Iterative stratification as Sechidis et al. (2011) write it, one example at a time (the
    algorithm of the iterative-stratification package): the label with the fewest remaining
    examples first; each of its examples to the subset that most desires the label, ties by the
    subset's overall desire, then at random."""
    rng = np.random.default_rng(seed)
    n, L = Y.shape
    desired = r * n
    desired_l = np.outer(r, Y.sum(0)).astype(float)
    out = np.full(n, -1)
    left = np.ones(n, bool)
    while left.any():
        counts = Y[left].sum(0)
        if counts.sum() == 0:  # only unlabelled examples: by overall desire
            for i in np.flatnonzero(left):
                best = np.flatnonzero(desired == desired.max())
                j = rng.choice(best)
                out[i], left[i] = j, False
                desired[j] -= 1
            break
        lab = rng.choice(np.flatnonzero(counts == counts[counts > 0].min()))
        for i in np.flatnonzero(left & (Y[:, lab] == 1)):
            cand = np.flatnonzero(desired_l[:, lab] == desired_l[:, lab].max())
            if len(cand) > 1:
                cand = cand[desired[cand] == desired[cand].max()]
            j = rng.choice(cand)
            out[i], left[i] = j, False
            desired_l[j] -= Y[i]
            desired[j] -= 1
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_rare_labels_reach_every_split_as_with_sechidis_written_out(seed):
    from datasets.stratify import cover_rare_labels

    rng = np.random.default_rng(seed)
    L = 300
    indptr, indices = _long_tailed(rng, n_labels=L)
    n = len(indptr) - 1
    r = np.array([0.8, 0.1, 0.1])
    base = iterative_stratification(indptr, indices, L, r, seed).assignment.astype(np.int64)
    ours, swaps, uncovered = cover_rare_labels(base, indptr, indices, L, r, 10, seed)
    Y = np.zeros((n, L), dtype=np.int64)
    Y[np.repeat(np.arange(n), np.diff(indptr)), indices] = 1
    ref = _sechidis(Y, r, seed)
    rand = np.random.default_rng(seed).choice(3, n, p=r)
    m_ours, d_ours = _missing_and_deviation(ours, indptr, indices, L, r)
    m_ref, _ = _missing_and_deviation(ref, indptr, indices, L, r)
    m_base, _ = _missing_and_deviation(base, indptr, indices, L, r)
    m_rand, d_rand = _missing_and_deviation(rand, indptr, indices, L, r)
    assert m_ours == 0 and uncovered == 0 and m_ours <= m_ref
    assert swaps == m_base  # one swap per (class, split) that lacked it
    assert m_rand > 0 and d_ours < d_rand
    assert np.array_equal(np.bincount(ours, minlength=3), np.bincount(base, minlength=3))  # sizes exact


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(30, 200), st.integers(5, 40), st.integers(2, 8))
def test_cover_swaps_keep_sizes_weights_and_present_labels(seed, n_units, n_labels, min_images):
    from datasets.stratify import cover_rare_labels

    rng = np.random.default_rng(seed)
    indptr, indices = _random_csr(rng, n_units, n_labels, 3)
    weights = rng.integers(1, 3, n_units)
    r = np.array([0.7, 0.15, 0.15])
    base = iterative_stratification(indptr, indices, n_labels, r, seed, weights=weights).assignment.astype(np.int64)
    got, swaps, uncovered = cover_rare_labels(base, indptr, indices, n_labels, r, min_images, seed, weights=weights)
    for j in range(3):
        assert weights[got == j].sum() == weights[base == j].sum()
    row_of = np.repeat(np.arange(n_units), np.diff(indptr))
    before = np.zeros((3, n_labels), bool)
    after = np.zeros((3, n_labels), bool)
    before[base[row_of], indices] = True
    after[got[row_of], indices] = True
    assert not (before & ~after).any()  # no class leaves a split it was in
    total = np.bincount(indices, minlength=n_labels)
    lacking = ((~after) & (total >= min_images)).sum()
    assert lacking == uncovered
    assert int((got != base).sum()) <= 2 * swaps  # a unit may move twice
    assert swaps or np.array_equal(got, base)
