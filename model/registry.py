"""A timm-style registry: a model is named in params.yaml and built by name."""

from __future__ import annotations

import importlib
import os
from typing import Callable

_REGISTRY: dict[str, Callable] = {}
# Modules that register models when imported; imported lazily so `model` stays cheap to import.
_MODULES = ("model.m3net", "model.asen", "model.asen_v2", "model.asenpp", "model.modc", "model.control")


def _source(fn) -> tuple[str, str] | None:
    import inspect

    try:
        return os.path.realpath(inspect.getfile(fn)), fn.__qualname__
    except (TypeError, OSError):
        return None


def register_model(name: str):
    def deco(fn):
        old = _REGISTRY.get(name)
        # one file imported under two module names (examples.mymodel.fashionbench_example.csn from the
        # repository root, fashionbench_example.csn from PYTHONPATH) is one model, the latest import kept;
        # two different definitions of one name are an error
        if old is not None and old is not fn and (_source(old) is None or _source(old) != _source(fn)):
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


def import_model_module(name: str, module: str) -> None:
    """Import ``module`` (params.yaml's ``models.<name>.module``: a model from outside the
    repository, found on ``sys.path``, e.g. through PYTHONPATH or ``pip install -e``), which must
    register ``name`` with :func:`register_model`."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and module.split(".")[0] != e.name.split(".")[0]:
            raise  # the module itself was found; something it imports is missing
        raise ModuleNotFoundError(
            f"params.yaml models.{name}.module: cannot import {module!r} ({e}); put its folder on PYTHONPATH "
            f"or install its package (pip install -e <folder>)", name=e.name) from e
    if name not in _REGISTRY:
        raise KeyError(f"params.yaml models.{name}.module: {module!r} does not register a model named {name!r} "
                       f"(@register_model({name!r}))")


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, *, module: str | None = None, **kwargs):
    """The model registered as ``name``, built with ``kwargs``; ``module`` (params.yaml's
    ``models.<name>.module``) is imported first: a model registered outside the ``model`` package."""
    _load_all()
    if module is not None:
        import_model_module(name, module)
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)
