"""The committed per-query file: each seed's per-query test metrics of one model, small enough for git.

``reports/<key>/<model>/per_query.parquet``, written by the evaluate stage (an out with
``cache: false``, so git holds it with the other reports) and read by ``fashionbench compare``
(benchmark/compare.py) at any revision, without the data: one row per (seed, query image,
attribute), ``seed``, ``image_id``, ``attribute_id`` (int32) and the metric columns ``map_all``,
``map_<k>``, ``recall_<k>`` (per ``evaluate.ks``; float32 fractions, NaN for a query without a
relevant candidate), sorted by seed, attribute and image. About 11 bytes a row in parquet (zstd):
1.45 MB for the default pipeline's 27 models.

It lives here, not in ``datasets/``, so that only the stages that write or read it (evaluate, the
control's evaluate) depend on it: every stage's code record holds ``datasets/schemas.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandera.polars as pa
import polars as pl

from datasets import paths

FILE = "per_query.parquet"
METRIC_PREFIXES = ("map_", "recall_")


def report_path(key: str, model: str) -> Path:
    return paths.model_reports_dir(key, model) / FILE


class ReportPerQuerySchema(pa.DataFrameModel):
    """The committed per-query table (module docstring)."""

    seed: pl.Int32
    image_id: pl.Int32 = pa.Field(ge=0)
    attribute_id: pl.Int32 = pa.Field(ge=0)
    map_all: pl.Float32 = pa.Field(nullable=True)

    class Config:
        strict = False  # the map_<k> / recall_<k> columns follow evaluate.ks
        coerce = True

    @pa.dataframe_check
    def metrics_are_fractions(cls, data) -> pl.LazyFrame:
        cols = [c for c in data.lazyframe.collect_schema().names() if c.startswith(METRIC_PREFIXES)]
        return data.lazyframe.select(
            pl.all_horizontal([pl.col(c).is_nan() | pl.col(c).is_between(0, 1) for c in cols]).alias("ok"))

    @pa.dataframe_check
    def one_row_per_seed_and_query(cls, data) -> pl.LazyFrame:
        keys = ["seed", "image_id", "attribute_id"]
        return data.lazyframe.select(pl.struct(keys).is_duplicated().not_().alias("ok"))


def report_per_query(per_query: pl.DataFrame) -> pl.DataFrame:
    """The committed table from the evaluate stage's full per-query table (PerQuerySchema: every
    split and seed): its test rows, the query and the metrics in float32, sorted."""
    metric_cols = [c for c in per_query.columns if c.startswith(METRIC_PREFIXES)]
    return (per_query.filter(pl.col("split") == "test")
            .select([pl.col("seed").cast(pl.Int32), pl.col("image_id").cast(pl.Int32),
                     pl.col("attribute_id").cast(pl.Int32)] + [pl.col(c).cast(pl.Float32) for c in metric_cols])
            .sort(["seed", "attribute_id", "image_id"]))
