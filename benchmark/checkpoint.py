"""The checkpoint format of the train stage, and reading it back: a shared library.

The train stage writes, per seed, ``checkpoint.pt`` (every epoch), ``checkpoint.prev.pt`` (the
epoch before: the fallback of a corrupt latest), ``best.pt`` (under ``checkpoint: best_val``) and
``selection.json`` (which of them the stages after training load, and why). The stages after
training (embed, attention) read them through this module, so that an edit to the training loop
(``benchmark/train.py``) reruns the train stages only.

Checkpoints hold tensors and plain types only and are read with ``torch.load(weights_only=True)``:
a crafted file cannot run code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from datasets import paths

CHECKPOINT_FORMAT = 2  # 2: RNG states as tensors/lists, loadable with weights_only=True


def checkpoint_path(dataset: str, model: str, seed: int) -> Path:
    return paths.model_dir(dataset, model) / f"seed{int(seed)}" / "checkpoint.pt"


def previous_checkpoint_path(path: Path) -> Path:
    """Where the checkpoint of the epoch before ``path``'s is kept (the fallback of a corrupt latest)."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read safely (truncated, garbage, or not tensors/plain types)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BOILERPLATE = ("Weights only load failed", "weights_only", "documentation", "trust", "Alternatively")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def refusal(path: str | Path, e: BaseException) -> str:
    """One line that says ``path`` was refused and why. PyTorch's own text is several paragraphs
    (its warning that a full unpickle could run code comes first, the reason last); this keeps the
    reason and says the rest in a sentence."""
    import pickle

    text = _ANSI.sub("", str(e))
    if isinstance(e, pickle.UnpicklingError) and "weights_only" in text.lower().replace(" ", "_"):
        m = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation|$)", text, re.S)
        if m is not None:
            reason = m.group(1)
        else:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            reason = next((ln for ln in lines if not any(w in ln for w in _BOILERPLATE)), "")
        reason = _one_line(reason.split(" Please use ")[0]).strip() or "objects other than tensors"
        return (f"{path}: not a readable checkpoint; refused: it is not tensors and plain types only ({reason}); it was not "
                "loaded, since building other objects is what lets a crafted file run code (a full unpickle would run "
                "it: load it that way only if you trust where it came from)")
    first = _one_line(text) or type(e).__name__
    if len(first) > 300:
        first = first[:297] + "..."
    return f"{path}: not a readable checkpoint; refused ({type(e).__name__}: {first})"


def load_tensors(path: str | Path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; CheckpointError (one line: the file was refused and
    why) when it cannot be read that way: truncated, garbage, or holding anything but tensors and
    plain types (no other pickle is ever run)."""
    import pickle
    import zipfile

    try:
        return torch.load(Path(path), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError,
            zipfile.BadZipFile, UnicodeDecodeError, TypeError, IndexError, ImportError, MemoryError) as e:
        raise CheckpointError(refusal(path, e)) from None


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint read with ``torch.load(weights_only=True)``; CheckpointError naming the file
    when it is not a readable one (no pickle beyond tensors and plain types is ever run)."""
    path = Path(path)
    ckpt = load_tensors(path, map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a checkpoint of this stage (no model state); refused")
    return ckpt


def best_path(dataset: str, model: str, seed: int) -> Path:
    return checkpoint_path(dataset, model, seed).with_name("best.pt")


def selection_path(dataset: str, model: str, seed: int) -> Path:
    return checkpoint_path(dataset, model, seed).with_name("selection.json")


def read_selection(dataset: str, model: str, seed: int) -> dict:
    """selection.json of one seed: {policy, epoch, phase, val_map_all, file, val_scores}."""
    path = selection_path(dataset, model, seed)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint selection; run `python -m benchmark.train {dataset} {model}`")
    return json.loads(path.read_text())


def selected_checkpoint_path(dataset: str, model: str, seed: int) -> Path:
    """The checkpoint the evaluate stage loads: best.pt under ``best_val``, checkpoint.pt under ``last``
    (as recorded in selection.json by the train stage)."""
    sel = read_selection(dataset, model, seed)
    return checkpoint_path(dataset, model, seed).with_name(sel["file"])


def load_trained_model(path: str | Path, map_location="cpu"):
    """(model in eval mode, checkpoint dict) from a checkpoint written by this stage.

    The model is rebuilt from the checkpoint's own record (name, classes per attribute, backbone,
    model params), so it does not depend on the current params.yaml.
    """
    from datasets.params_schema import resolve, split_model_params
    from model import build_model

    ckpt = read_checkpoint(path, map_location=map_location)
    b = ckpt["build"]
    model_kw, _ = split_model_params(b["model_params"])  # the trainer's keys (lr, ...) are recorded beside
    model_kw.pop("variant", None)  # written by checkpoints from before the registry name fixed the branch
    if isinstance(model_kw.get("local_backbone"), dict):  # ...and before the trainer resolved it by backbone
        model_kw["local_backbone"] = resolve(model_kw["local_backbone"], backbone=b["backbone"].split(":")[-1])
    model = build_model(b["model_name"], classes_per_attribute=b["classes_per_attribute"],
                        backbone=b["backbone"], pretrained=False, **model_kw)
    model.load_state_dict(ckpt["model"])
    if ckpt.get("phase") in model.phases:
        model.set_phase(ckpt["phase"])
    model.eval()
    return model, ckpt
