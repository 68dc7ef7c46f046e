"""The pipeline's shape: dvc.yaml, params.yaml, the stage modules and the schemas agree."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _dvc_yaml():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _lookup(params, dotted):
    node = params
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"params.yaml has no key {dotted!r}"
        node = node[part]
    return node


def _expand(stage_name, stage, dvc):
    """Yield (item-substituted) stage dicts for foreach/matrix stages, as DVC would: params.yaml
    is loaded as variables first (the models are its ``models`` keys), then dvc.yaml's ``vars``."""
    vars_ = dict(_params())
    for v in dvc.get("vars", []):
        vars_.update(v)
    text = yaml.safe_dump(stage.get("do", stage))
    if "foreach" in stage:
        items = vars_[stage["foreach"].strip("${}")]
        for it in items:  # a list: ${item}; a mapping: its keys as ${key}
            yield yaml.safe_load(text.replace("${item}", it).replace("${key}", it))
    elif "matrix" in stage:
        axes = {k: vars_[v.strip("${}")] for k, v in stage["matrix"].items()}
        (ka, va), (kb, vb) = axes.items()
        for a in va:
            for b in vb:
                yield yaml.safe_load(text.replace("${item.%s}" % ka, a).replace("${item.%s}" % kb, b))
    else:
        yield stage


def _interpolate(key: str, params) -> str:
    """``${a.b}`` inside a params entry (e.g. ``train.profiles.${train.profile}.image_size``), from params.yaml."""
    import re

    return re.sub(r"\$\{([^}]+)\}", lambda m: str(_lookup(params, m[1])), key)


def test_every_params_key_named_in_dvc_yaml_exists():
    dvc, params = _dvc_yaml(), _params()
    for name, stage in dvc["stages"].items():
        for s in _expand(name, stage, dvc):
            for key in s.get("params", []):
                _lookup(params, _interpolate(key, params))


def test_every_stage_module_exists_and_has_main():
    dvc = _dvc_yaml()
    for name, stage in dvc["stages"].items():
        cmds = (stage.get("do") or stage)["cmd"]
        for cmd in [cmds] if isinstance(cmds, str) else cmds:  # a stage may run several modules in turn
            m = re.match(r"python -m ([\w.]+)", cmd)
            assert m, f"stage {name}: command {cmd!r} does not run a module"
            mod = importlib.import_module(m.group(1) if not m.group(1).endswith("twins") else m.group(1) + ".__main__")
            assert callable(getattr(mod, "main", None)), f"{m.group(1)} has no main()"


def test_dataset_keys_agree_everywhere():
    from datasets import DATASETS

    dvc, params = _dvc_yaml(), _params()
    keys = next(v["dataset_keys"] for v in dvc["vars"] if "dataset_keys" in v)
    assert tuple(keys) == DATASETS
    for section in ("twins", "acquire"):
        assert set(DATASETS) <= set(params[section]), section
    assert set(params["splits"]["ratios"]) == set(DATASETS)


def test_every_model_in_the_pipeline_is_registered_with_params():
    from model import list_models
    from model.registry import import_model_module

    dvc, params = _dvc_yaml(), _params()
    names = list(params["models"])  # dvc.yaml iterates ${models}: the one list
    assert all(stage.get("foreach") != "${model_names}" for stage in dvc["stages"].values())
    assert dvc["stages"]["train"]["matrix"]["model"] == "${models}" and "foreach" not in dvc["stages"]["code"]
    for name, spec in params["models"].items():  # a model from outside model/ registers when its module is imported
        if spec.get("module"):
            import_model_module(name, spec["module"])
    assert set(names) <= set(list_models())


def test_dvc_parses_the_pipeline():
    out = subprocess.run([str(Path(sys.executable).parent / "dvc"), "stage", "list"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    stages = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert "train@deepfashion-m3net" in stages and "evaluate@darn-modc" in stages
    dvc = _dvc_yaml()
    n_models = len(_params()["models"])
    # per dataset: twins, acquire, parse, validate, splits, cooccurrence, pretrain, features, control,
    # leaderboard; train and evaluate per (dataset, model); one code stage; one report
    assert len(stages) == 10 * 3 + 2 * 3 * n_models + 1 + 1


def test_splits_schema_rejects_a_train_image_with_a_query_role():
    from pandera.errors import SchemaError

    from datasets.schemas import SplitsSchema

    ok = pl.DataFrame({"image_id": [0, 1, 2], "split": ["train", "val", "test"], "role": ["train", "query", "candidate"]})
    assert SplitsSchema.validate(ok).shape == (3, 3)
    bad = ok.with_columns(pl.Series("role", ["query", "query", "candidate"]))
    with pytest.raises(SchemaError):
        SplitsSchema.validate(bad)


def test_write_table_validates_before_writing(tmp_path):
    from pandera.errors import SchemaError

    from datasets.schemas import LabelsSchema, read_table, write_table

    df = pl.DataFrame({"image_id": [0], "attribute_id": [1], "class_id": [2], "state": ["positive"]})
    path = tmp_path / "labels.parquet"
    write_table(df, path, LabelsSchema)
    assert read_table(path, LabelsSchema).to_dicts() == df.to_dicts()
    with pytest.raises(SchemaError):
        write_table(df.with_columns(pl.lit("sure").alias("state")), tmp_path / "bad.parquet", LabelsSchema)
    assert not (tmp_path / "bad.parquet").exists()


def test_format_error_names_file_line_and_form():
    from datasets.errors import FormatError

    e = FormatError("Anno/list_attr_img.txt", 7, "<image_name> followed by 1000 values in {1,-1,0}", "img/a.jpg 1 -1")
    assert str(e).startswith("Anno/list_attr_img.txt:7: expected <image_name>")
    assert "img/a.jpg 1 -1" in str(e)


def test_cli_lists_its_subcommands():
    out = subprocess.run([sys.executable, "-m", "benchmark.cli", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for sub in ("twins", "check", "perf"):
        assert sub in out.stdout


def test_registry_refuses_unknown_models():
    from model import build_model

    with pytest.raises(KeyError, match="unknown model"):
        build_model("no_such_model", classes_per_attribute=[2])


def test_per_query_schema_accepts_nan_and_rejects_metrics_outside_0_1():
    from pandera.errors import SchemaError

    from datasets.schemas import PerQuerySchema

    df = pl.DataFrame({"seed": [0, 0], "split": ["test", "val"], "ranking": ["attribute", "multi-granularity"],
                       "image_id": [3, 4], "attribute_id": [0, 1], "cooccurring": [True, False],
                       "n_relevant": [2, 0], "n_candidates": [9, 9], "n_labels": [1, 2],
                       "map_all": [0.5, float("nan")], "map_100": [0.5, float("nan")], "recall_100": [1.0, float("nan")]})
    assert PerQuerySchema.validate(df).height == 2
    with pytest.raises(SchemaError):
        PerQuerySchema.validate(df.with_columns(pl.Series("recall_100", [1.5, 0.2])))
    with pytest.raises(SchemaError):  # an empty ranked list is not a query
        PerQuerySchema.validate(df.with_columns(pl.Series("n_candidates", [0, 9])))
