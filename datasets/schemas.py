"""Pandera (polars) schemas of every table that crosses a stage boundary.

Conventions shared by all stages:
- ``image_id`` is an Int64 assigned by the parser in the order of the source's image list
  (0, 1, 2, ...), stable for the same raw files.
- ``attribute_id`` is the 0-based position of the attribute in the taxonomy; ``class_id`` is the
  0-based position of the class *within its attribute*; ``global_class_id`` is the 0-based
  position over all classes of the dataset, attributes in order (DeepFashion: the 0-999 column
  index of ``list_attr_img.txt``).
- ``labels`` is long form and stores explicit states only: positive, maybe (FashionAI ``m``),
  unknown (DeepFashion ``0``). A (image, class) absent from the table is negative. Negatives are
  not materialised because the real DeepFashion would need 289M rows for them.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

LABEL_STATES = ["positive", "negative", "unknown", "maybe"]
SPLITS = ["train", "val", "test"]
ROLES = ["train", "query", "candidate"]


class ImagesSchema(pa.DataFrameModel):
    """One row per image named by the source. Width/height/bytes/sha256 are null when the file is
    missing or undecodable (validation quarantines those rows)."""

    image_id: pl.Int64 = pa.Field(ge=0, unique=True)
    path: pl.Utf8 = pa.Field(unique=True)  # relative to the raw folder, '/'-separated
    width: pl.Int32 = pa.Field(nullable=True, ge=0)
    height: pl.Int32 = pa.Field(nullable=True, ge=0)
    bytes: pl.Int64 = pa.Field(nullable=True, ge=0)
    sha256: pl.Utf8 = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True


class LabelsSchema(pa.DataFrameModel):
    image_id: pl.Int64 = pa.Field(ge=0)
    attribute_id: pl.Int16 = pa.Field(ge=0)
    class_id: pl.Int16 = pa.Field(ge=0)
    state: pl.Utf8 = pa.Field(isin=LABEL_STATES)

    class Config:
        strict = True
        coerce = True


class TaxonomySchema(pa.DataFrameModel):
    attribute_id: pl.Int16 = pa.Field(ge=0)
    attribute: pl.Utf8
    class_id: pl.Int16 = pa.Field(ge=0)
    class_name: pl.Utf8
    global_class_id: pl.Int32 = pa.Field(ge=0, unique=True)

    class Config:
        strict = True
        coerce = True


class PartitionSchema(pa.DataFrameModel):
    """The source's own partition, where it has one (DeepFashion's list_eval_partition, ASEN files)."""

    image_id: pl.Int64 = pa.Field(ge=0, unique=True)
    partition: pl.Utf8 = pa.Field(isin=SPLITS)

    class Config:
        strict = True
        coerce = True


class AsenRolesSchema(pa.DataFrameModel):
    """Query/candidate roles from ASEN's published files, one row per (image, attribute) line."""

    image_id: pl.Int64 = pa.Field(ge=0)
    split: pl.Utf8 = pa.Field(isin=SPLITS)
    role: pl.Utf8 = pa.Field(isin=ROLES)
    attribute_id: pl.Int16 = pa.Field(ge=0)

    class Config:
        strict = True
        coerce = True


class QuarantineSchema(pa.DataFrameModel):
    """What validation set aside and why. ``kind`` is 'row' (an annotation line) or 'file' (an image)."""

    kind: pl.Utf8 = pa.Field(isin=["row", "file"])
    check: pl.Utf8
    file: pl.Utf8
    line: pl.Int64 = pa.Field(nullable=True, ge=1)
    image_id: pl.Int64 = pa.Field(nullable=True, ge=0)
    reason: pl.Utf8

    class Config:
        strict = True
        coerce = True


class DuplicatesSchema(pa.DataFrameModel):
    """Exact (sha256) and near (perceptual hash) duplicate groups, one row per member image."""

    group_id: pl.Int64 = pa.Field(ge=0)
    kind: pl.Utf8 = pa.Field(isin=["exact", "near"])
    image_id: pl.Int64 = pa.Field(ge=0)
    spans_partitions: pl.Boolean

    class Config:
        strict = True
        coerce = True


class SourcesSchema(pa.DataFrameModel):
    """Where each image was named: the annotation file and 1-based line (for quarantine reports)."""

    image_id: pl.Int64 = pa.Field(ge=0, unique=True)
    file: pl.Utf8
    line: pl.Int64 = pa.Field(nullable=True, ge=1)

    class Config:
        strict = True
        coerce = True


# the parse stage's tables (data/<key>/tables/<name>.parquet), read by validate
PARSE_TABLES = {
    "images": ImagesSchema,
    "labels": LabelsSchema,
    "taxonomy": TaxonomySchema,
    "partition": PartitionSchema,
    "asen_roles": AsenRolesSchema,
    "parse_quarantine": QuarantineSchema,
    "sources": SourcesSchema,
}


class SplitsSchema(pa.DataFrameModel):
    image_id: pl.Int64 = pa.Field(ge=0, unique=True)
    split: pl.Utf8 = pa.Field(isin=SPLITS)
    role: pl.Utf8 = pa.Field(isin=ROLES)

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check
    def role_matches_split(cls, data) -> pl.LazyFrame:
        lf = data.lazyframe
        return lf.select(
            ((pl.col("split") == "train") == (pl.col("role") == "train")).alias("ok")
        )


class CooccurrencePairsSchema(pa.DataFrameModel):
    """Unordered class pairs (a < b, global class ids) seen together in at least one image."""

    class_a: pl.Int32 = pa.Field(ge=0)
    class_b: pl.Int32 = pa.Field(ge=0)
    images: pl.Int64 = pa.Field(ge=1)
    rate: pl.Float64 = pa.Field(ge=0, le=1)
    selected: pl.Boolean

    class Config:
        strict = True
        coerce = True

    @pa.dataframe_check
    def unordered_pair_stored_once(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("class_a") < pl.col("class_b")).alias("ok"))


class CooccurrenceClassesSchema(pa.DataFrameModel):
    global_class_id: pl.Int32 = pa.Field(ge=0, unique=True)
    images: pl.Int64 = pa.Field(ge=0)
    rate: pl.Float64 = pa.Field(ge=0, le=1)
    selected: pl.Boolean  # part of at least one selected pair

    class Config:
        strict = True
        coerce = True


class PerQuerySchema(pa.DataFrameModel):
    """The evaluate stage's per-query metrics (data/<key>/eval/<model>/per_query.parquet): one row per
    (seed, split, ranking, query image, attribute); the sizes R, L and |S_q| of its ranked list and
    label set; one float column per metric (map_all, and map_<k>/recall_<k> per evaluate.ks), in
    [0, 1] or NaN for a query without a relevant candidate."""

    seed: pl.Int64
    split: pl.Utf8 = pa.Field(isin=["val", "test"])
    ranking: pl.Utf8 = pa.Field(isin=["attribute", "multi-granularity"])
    image_id: pl.Int64 = pa.Field(ge=0)
    attribute_id: pl.Int64 = pa.Field(ge=0)
    cooccurring: pl.Boolean
    n_relevant: pl.Int64 = pa.Field(ge=0)  # R: relevant candidates in the query's ranked list
    n_candidates: pl.Int64 = pa.Field(ge=1)  # L: the ranked list's length
    n_labels: pl.Int64 = pa.Field(ge=1)  # |S_q|: the query's positive classes in its attribute
    map_all: pl.Float64 = pa.Field(nullable=True)

    class Config:
        strict = False  # the map_<k> / recall_<k> columns follow evaluate.ks
        coerce = True

    @pa.dataframe_check
    def metrics_are_fractions(cls, data) -> pl.LazyFrame:
        cols = [c for c in data.lazyframe.collect_schema().names() if c.startswith(("map_", "recall_"))]
        return data.lazyframe.select(
            pl.all_horizontal([pl.col(c).is_nan() | pl.col(c).is_between(0, 1) for c in cols]).alias("ok"))


def read_table(path, schema: type[pa.DataFrameModel]) -> pl.DataFrame:
    """Read a parquet file and validate it against its schema (the boundary check of every stage)."""
    return schema.validate(pl.read_parquet(path))


def write_table(df: pl.DataFrame, path, schema: type[pa.DataFrameModel]) -> pl.DataFrame:
    """Validate then write atomically, so a killed stage never leaves a half-written table."""
    from datasets.atomic import atomic_path

    df = schema.validate(df)
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)
    return df


def write_tables(tables: dict[str, pl.DataFrame], folder, schemas: dict[str, type[pa.DataFrameModel]],
                 optional: tuple[str, ...] = ("partition", "asen_roles")) -> None:
    """Write a stage's tables into ``folder``; an optional table this run did not produce (the source
    changed) is removed, so a later stage never reads a stale one."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in optional:
        if name not in tables and (folder / f"{name}.parquet").exists():
            (folder / f"{name}.parquet").unlink()
    for name, df in tables.items():
        write_table(df, folder / f"{name}.parquet", schemas[name])


def write_json(path, obj, *, sort_keys: bool = False) -> None:
    """A report or metrics file, written atomically (tmp + rename), indented, newline-terminated."""
    import json

    from datasets.atomic import write_text

    write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
