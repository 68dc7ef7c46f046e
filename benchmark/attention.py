"""The pointing game and the attention examples of one trained model (run by the evaluate stage,
after the embeddings: both are passes of the trained network over the evaluation images).

Reads the selected checkpoint of the first seed of ``train.seeds``, the validated tables, the splits and
``raw/regions.json`` where the release has one (the twins' acquisition copies the generator's
regions there); writes ``data/<key>/attention/<model>/`` (``pointing.json``, and
``attention.npz`` + ``names.json`` for the report's Figure 3) and the DVC metric
``reports/<key>/<model>/pointing.json``. A model without attention maps writes
``{"pointing_game": null}``.
"""

from __future__ import annotations

from benchmark.evalsets import load_eval_set
from benchmark.examples import attention_examples, save_examples
from benchmark.inference import ImageSource, load_selected_model, resolve_device
from benchmark.params import training_profile
from benchmark.pointing import load_regions, pointing_game
from datasets import paths
from datasets.schemas import write_json


def run(key: str, model_name: str, params: dict, device=None) -> dict:
    ev = params["evaluate"]
    prof = training_profile(params)
    seed = (params["train"].get("seeds") or [0])[0]
    device = resolve_device(device)
    es = load_eval_set(key, params.get("validate", {}).get("maybe_policy", "negative"))
    source = ImageSource.for_profile(key, es.images, prof, seed=seed)
    model, _ = load_selected_model(key, model_name, seed, device)
    out = paths.attention_dir(key, model_name)
    out.mkdir(parents=True, exist_ok=True)
    regions = load_regions(key)
    query_ids = set(es.ids[es.role_rows[("test", "query")]].tolist()) | set(es.ids[es.role_rows[("val", "query")]].tolist())
    pointing = (pointing_game(model, source, regions, es.images, es.taxonomy, query_ids, device)
                if regions is not None else None)
    test_q = es.role_rows[("test", "query")]
    examples = {}
    att = attention_examples(model, source, es.ids[test_q], es.labels[test_q], es.classes_per_attribute, device,
                             int(ev["bootstrap_seed"]), int(ev.get("examples", 4)))
    if att is not None:
        examples["attention"] = att
    save_examples(out, examples, source, es.names, es.taxonomy)
    result = {"pointing_game": pointing, "seed": int(seed)}
    write_json(out / "pointing.json", result)
    write_json(paths.model_reports_dir(key, model_name) / "pointing.json", result)
    return result
