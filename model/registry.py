"""A timm-style registry: a model is named in params.yaml and built by name."""

from __future__ import annotations

import importlib
from typing import Callable

_REGISTRY: dict[str, Callable] = {}
# Modules that register models when imported; imported lazily so `model` stays cheap to import.
_MODULES = ("model.m3net", "model.asen", "model.asen_v2", "model.asenpp", "model.modc", "model.control")


def register_model(name: str):
    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def _load_all() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a model file not written yet must not break the others
            if e.name != mod:
                raise


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs):
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)
