"""Where every stage reads and writes, by dataset key. The one place that spells these paths."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(".")
# written into raw/ by the acquire stage, read by validate: why each image named by the annotations is absent
MISSING_FILE = "acquire_missing.json"


def twin_dir(key: str) -> Path:
    return ROOT / "data" / "twins" / key


def raw_dir(key: str) -> Path:
    return ROOT / "data" / key / "raw"


def download_cache_dir(key: str) -> Path:
    """The acquire stage's download cache (DARN's images, by URL list): outlives a run, so a killed
    download resumes. Not a DVC output (DVC deletes a stage's outputs before running it)."""
    return ROOT / "data" / key / "download_cache"


def tables_dir(key: str) -> Path:
    """Parsed canonical tables (images, labels, taxonomy, partition[, asen_roles])."""
    return ROOT / "data" / key / "tables"


def validated_dir(key: str) -> Path:
    """Validated tables plus quarantine.parquet and duplicates.parquet."""
    return ROOT / "data" / key / "validated"


def splits_path(key: str) -> Path:
    return ROOT / "data" / key / "splits.parquet"


def cooccurrence_dir(key: str) -> Path:
    return ROOT / "data" / key / "cooccurrence"


def model_dir(key: str, model: str) -> Path:
    return ROOT / "models" / key / model


def reports_dir(key: str) -> Path:
    return ROOT / "reports" / key


def validation_report(key: str) -> Path:
    """The validate stage's report of one dataset (counts, checks, failures)."""
    return reports_dir(key) / "validation.json"


def twin_manifest(twin: Path) -> Path:
    """A twin folder's manifest (the generator's seed, params and planted defects): the twin stage
    writes it in data/twins/<key>, and any folder a user points acquire at may hold one."""
    return Path(twin) / "manifest.json"


def leaderboard_path(key: str) -> Path:
    return reports_dir(key) / "leaderboard.json"


def report_page(key: str) -> Path:
    """The report stage's page of one dataset."""
    return ROOT / "reports" / f"{key}.md"


def figures_dir() -> Path:
    return ROOT / "reports" / "figures"


def twin_sheet_path(key: str) -> Path:
    """The twins stage's contact sheet of one twin."""
    return ROOT / "reports" / "twins" / f"{key}.png"


def model_reports_dir(key: str, model: str) -> Path:
    return ROOT / "reports" / key / model


def embeddings_dir(key: str, model: str) -> Path:
    """The evaluate stage's embeddings: seed<k>.npz per training seed."""
    return ROOT / "data" / key / "embeddings" / model


def eval_dir(key: str, model: str) -> Path:
    """The evaluate stage's per-query table and retrieval examples."""
    return ROOT / "data" / key / "eval" / model


def attention_dir(key: str, model: str) -> Path:
    """The attention stage's pointing game and attention examples."""
    return ROOT / "data" / key / "attention" / model


def trunk_dir(key: str) -> Path:
    """The pretrain stage's output: the shared trunk of the twin profile (trunk.pt)."""
    return ROOT / "data" / key / "trunk"


def features_dir(key: str) -> Path:
    """The features stage's output: the shared trunk's feature map of every split image."""
    return ROOT / "data" / key / "features"
