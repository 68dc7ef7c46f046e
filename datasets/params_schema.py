"""The schema of params.yaml: every key, its type and range, checked before any stage does work.

``datasets.params.load_params`` validates the whole document with :func:`validate` and raises
``ParamsError`` (one line: the file, the key path, what was wrong; for an unknown key the nearest
valid name). A section that is absent is not checked (tests and harnesses write partial files);
every key of a section that is present is, and none may be unknown.

Values under ``models.<m>`` (and a few others) may be keyed by training profile
(``{paper: .., twin: ..}``), by dataset (``{deepfashion: .., fashionai: .., darn: ..}``) or by
backbone (``asenpp.local_backbone``): :func:`resolve` is the one place that picks this run's value.
:func:`split_model_params` separates a model's constructor arguments from the trainer's keys
(:data:`TRAINER_KEYS`: learning rate, its schedule, augmentation, phase lengths). A model from
outside ``model/`` is a ``models.<name>`` section with ``module: <import path>`` (the module that
registers it): its trainer keys are checked as any model's, its other keys go to its constructor.

Pure Python (no torch): it lives in ``datasets`` because every stage reads params through
``datasets.params`` and nothing in ``datasets`` may import ``benchmark``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

DATASETS = ("deepfashion", "fashionai", "darn")
BACKBONES = ("resnet50_layer3", "resnet34_layer3", "resnet18_layer3", "plain8")  # model/backbone.py
SOURCES = ("twin", "local", "url", "asen")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")  # model/base.py COMPILE_MODES
# keys of models.<m> that belong to the trainer, never to the model's constructor
TRAINER_KEYS = ("lr", "lr_decay", "lr_schedule", "flip", "phase_epochs", "negatives")
NEGATIVES = ("image_uniform", "class_uniform")  # benchmark/sampling.py: ASEN's draw, ASEN++'s
PRECISIONS = ("fp32", "bf16")  # train.profiles.<p>.precision: no autocast | bfloat16 autocast


class SchemaError(ValueError):
    """A value does not fit the schema; ``path`` is the dotted key path."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


# ------------------------------------------------------------------------------------ value types


@dataclass(frozen=True)
class Spec:
    """A value's type; ``check`` raises SchemaError naming ``path``."""

    def check(self, v: Any, path: str, ctx: dict) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Num(Spec):
    """An int or float (never a bool) in [lo, hi]; ``open_lo``/``open_hi`` exclude the bound."""
    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    open_lo: bool = False
    open_hi: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.lo is not None and self.hi is not None:
            return f"{kind} in {'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}{')' if self.open_hi else ']'}"
        if self.lo is not None:
            return f"{kind} {'>' if self.open_lo else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{kind} {'<' if self.open_hi else '<='} {self.hi:g}"
        return kind

    def check(self, v, path, ctx):
        ok = not isinstance(v, bool) and (isinstance(v, int) if self.integer else isinstance(v, (int, float)))
        if ok and self.lo is not None:
            ok = v > self.lo if self.open_lo else v >= self.lo
        if ok and self.hi is not None:
            ok = v < self.hi if self.open_hi else v <= self.hi
        if ok and isinstance(v, float) and v != v:  # NaN
            ok = False
        if not ok:
            raise SchemaError(path, f"expected {self.describe()}, got {_show(v)}")


def Int(lo: int | None = None, hi: int | None = None) -> Num:
    return Num(lo, hi, integer=True)


FRACTION = Num(0, 1)
POSITIVE = Num(0, open_lo=True)
NONNEG = Num(0)
SEED = Int()
COUNT = Int(0)
SIZE = Int(1)


@dataclass(frozen=True)
class Bool(Spec):
    def describe(self):
        return "true or false"

    def check(self, v, path, ctx):
        if not isinstance(v, bool):
            raise SchemaError(path, f"expected true or false, got {_show(v)}")


@dataclass(frozen=True)
class Str(Spec):
    def describe(self):
        return "a string"

    def check(self, v, path, ctx):
        if not isinstance(v, str):
            raise SchemaError(path, f"expected a string, got {_show(v)}")


@dataclass(frozen=True)
class Enum(Spec):
    choices: tuple

    def describe(self):
        return "one of " + " | ".join(map(str, self.choices))

    def check(self, v, path, ctx):
        if isinstance(v, bool) or v not in self.choices:
            near = difflib.get_close_matches(str(v), [str(c) for c in self.choices], n=1)
            hint = f" (did you mean `{near[0]}`?)" if near else ""
            raise SchemaError(path, f"expected {self.describe()}, got {_show(v)}{hint}")


@dataclass(frozen=True)
class Null(Spec):
    def describe(self):
        return "null"

    def check(self, v, path, ctx):
        if v is not None:
            raise SchemaError(path, f"expected null, got {_show(v)}")


@dataclass(frozen=True)
class AnyOf(Spec):
    options: tuple

    def describe(self):
        return " or ".join(o.describe() for o in self.options)

    def check(self, v, path, ctx):
        errors = []
        for o in self.options:
            try:
                o.check(v, path, ctx)
                return
            except SchemaError as e:
                errors.append(e)
        # a mapping or list that matched a container option's shape: its own (deeper) error says most
        deep = [e for e in errors if e.path != path]
        if deep:
            raise deep[0]
        raise SchemaError(path, f"expected {self.describe()}, got {_show(v)}")


def Nullable(spec: Spec) -> AnyOf:
    return AnyOf((Null(), spec))


@dataclass(frozen=True)
class ListOf(Spec):
    item: Spec
    min_len: int = 0
    length: int | None = None
    unique: bool = False

    def describe(self):
        n = f"{self.length} " if self.length is not None else ("a non-empty " if self.min_len else "a ")
        return f"{n}list, each {self.item.describe()}"

    def check(self, v, path, ctx):
        if not isinstance(v, list):
            raise SchemaError(path, f"expected {self.describe()}, got {_show(v)}")
        if len(v) < self.min_len or (self.length is not None and len(v) != self.length):
            raise SchemaError(path, f"expected {self.describe()}, got {len(v)} items: {v}")
        for i, x in enumerate(v):
            self.item.check(x, f"{path}[{i}]", ctx)
        if self.unique and len(set(map(repr, v))) != len(v):
            raise SchemaError(path, f"expected distinct values, got {v}")


@dataclass(frozen=True)
class Section(Spec):
    """A mapping of known keys, each optional (a partial file leaves some out); unknown keys are
    refused with the nearest valid name."""
    fields: dict
    check_all: Callable[[dict, str, dict], None] | None = None

    def describe(self):
        return "a mapping"

    def check(self, v, path, ctx):
        if not isinstance(v, dict):
            raise SchemaError(path, f"expected a mapping of {', '.join(self.fields)}, got {_show(v)}")
        for k, x in v.items():
            if k not in self.fields:
                raise _unknown(path, k, self.fields)
            self.fields[k].check(x, _join(path, k), ctx)
        if self.check_all is not None:
            self.check_all(v, path, ctx)


def _unknown(path: str, key: Any, valid) -> SchemaError:
    near = difflib.get_close_matches(str(key), [str(k) for k in valid], n=1, cutoff=0.6)
    hint = f"; did you mean `{near[0]}`?" if near else f"; valid: {', '.join(map(str, valid))}"
    return SchemaError(_join(path, key), f"unknown key{hint}")


@dataclass(frozen=True)
class MapOf(Spec):
    """A mapping whose keys are names (``keys``: the allowed ones, or a callable of the context
    giving them; None: any string) and whose values share one spec."""
    value: Spec
    keys: tuple | Callable[[dict], tuple] | None = None

    def describe(self):
        return f"a mapping to {self.value.describe()}"

    def check(self, v, path, ctx):
        if not isinstance(v, dict):
            raise SchemaError(path, f"expected {self.describe()}, got {_show(v)}")
        keys = self.keys(ctx) if callable(self.keys) else self.keys
        for k, x in v.items():
            if keys is not None and k not in keys:
                raise _unknown(path, k, keys)
            if not isinstance(k, str):
                raise SchemaError(_join(path, k), "expected a name as the key")
            self.value.check(x, _join(path, k), ctx)


def _profile_names(ctx: dict) -> tuple:
    return tuple(ctx.get("profiles") or ("paper", "twin"))


@dataclass(frozen=True)
class Keyed(Spec):
    """A value of ``value``'s type, or a mapping of such values keyed by one axis (``by``):
    ``profile`` (the names under train.profiles), ``dataset`` or ``backbone``. :func:`resolve`
    picks this run's entry."""
    value: Spec
    by: tuple = ("profile", "dataset")

    def describe(self):
        return f"{self.value.describe()} (or a mapping by {' or '.join(self.by)})"

    def check(self, v, path, ctx):
        if not isinstance(v, dict):
            self.value.check(v, path, ctx)
            return
        axes = {"profile": _profile_names(ctx), "dataset": DATASETS, "backbone": BACKBONES}
        if not v:
            raise SchemaError(path, f"expected {self.describe()}, got an empty mapping")
        for axis in self.by:
            names = axes[axis]
            if v and set(v) <= set(names):
                for k, x in v.items():
                    self.value.check(x, _join(path, k), ctx)
                return
        # the axis whose names it shares most: name the key that fits none
        best = max(self.by, key=lambda a: len(set(v) & set(axes[a])))
        bad = next(k for k in v if k not in axes[best])
        raise _unknown(path, bad, axes[best])


# ------------------------------------------------------------------------------------ the sections

_DEFECT = AnyOf((COUNT, FRACTION))  # an int is a count, a float a rate of the images (datasets/twins/common.py)
_PARTITION = ListOf(FRACTION, length=3)
_TWIN = {"images": SIZE, "partition": _PARTITION}

TWINS = Section({
    "seed": SEED, "image_size": SIZE, "render_size": Nullable(SIZE), "workers": COUNT,
    "deepfashion": Section(_TWIN), "fashionai": Section(_TWIN),
    "darn": Section({**_TWIN, "max_classes": SIZE}),
    "defects": Section({k: _DEFECT for k in (
        "corrupt_jpeg", "truncated_jpeg", "missing_file", "exact_duplicate", "resized_duplicate", "fashionai_maybe",
        "fashionai_no_yes", "deepfashion_bad_columns", "darn_404", "darn_drop")}),
})

_PATHS = Nullable(AnyOf((Str(), ListOf(Str(), min_len=1))))
_SOURCE = Section({
    "source": Enum(SOURCES), "path": _PATHS, "sha256": Nullable(AnyOf((Str(), MapOf(Str())))),
    "meta": Nullable(Str()), "url": _PATHS, "base_url": Nullable(Str()), "images": Nullable(Str()),
})
ACQUIRE = Section({
    **{k: _SOURCE for k in DATASETS},
    "download": Section({"retries": COUNT, "backoff_s": NONNEG, "concurrency": SIZE, "timeout_s": POSITIVE}),
    "max_member_bytes": SIZE, "max_total_bytes": SIZE, "max_compression_ratio": POSITIVE,
})

VALIDATE = Section({
    "max_bad_fraction": FRACTION, "max_dead_link_fraction": FRACTION, "min_side": SIZE,
    "maybe_policy": Enum(("negative", "positive", "drop")), "near_duplicate_hamming": Int(0, 64),
    "near_duplicate_max_mad": NONNEG, "workers": COUNT, "max_pixels": SIZE,
})

_RATIOS = ListOf(NONNEG, length=3)
SPLITS = Section({
    "seed": SEED,
    "ratios": MapOf(AnyOf((_RATIOS, Section({"real": _RATIOS, "twin": _RATIOS}))), keys=DATASETS),
    "query_fraction": FRACTION, "min_label_images": Nullable(COUNT),
})

COOCCURRENCE = Section({"min_rate": FRACTION, "heatmap_classes": SIZE})

PRETRAIN = Section({
    "epochs": SIZE, "batch_size": SIZE, "lr": POSITIVE, "weight_decay": NONNEG,
    "pos_weight": Keyed(NONNEG, by=("dataset",)), "seed": SEED,
})


def _model_names(ctx: dict) -> tuple:
    return tuple(MODEL_SCHEMAS) + tuple(m for m in ctx.get("models", ()) if m not in MODEL_SCHEMAS) + ("default",)


PROFILE = Section({
    "backbone": Enum(BACKBONES), "pretrained": Bool(), "trunk": Enum(("shared", "end_to_end")), "pretrain": PRETRAIN,
    "image_size": SIZE, "epochs": AnyOf((SIZE, MapOf(SIZE, keys=_model_names))),  # a number, or per model
    "triplets_per_epoch": AnyOf((SIZE, MapOf(SIZE, keys=_model_names))), "precision": Enum(PRECISIONS),
    "batch_size": SIZE, "preprocess": Enum(("squash", "resize_crop")), "checkpoint": Enum(("last", "best_val")),
    "early_stop": Nullable(Section({"patience": SIZE, "min_delta": NONNEG})),
    "workers": COUNT, "threads": COUNT,
})


def _check_train(v: dict, path: str, ctx: dict) -> None:
    if "profile" in v and isinstance(v.get("profiles"), dict) and v["profile"] not in v["profiles"]:
        Enum(tuple(v["profiles"])).check(v["profile"], _join(path, "profile"), ctx)  # raises, naming the nearest


TRAIN = Section({
    "profile": Str(), "seeds": ListOf(SEED, min_len=1, unique=True), "device": Enum(("auto", "cpu", "cuda")),
    "processes": SIZE, "compile": AnyOf((Bool(), Null(), Enum(COMPILE_MODES))),
    "profiles": MapOf(PROFILE),
}, check_all=_check_train)

# --- models: the trainer's keys (any model) and each model's constructor arguments
_BY_PROFILE = ("profile",)
_SCHEDULE = MapOf(Section({"step_size": SIZE, "gamma": Num(0, 1, open_lo=True)}))  # {<phase>: {step_size, gamma}}
_TRAINER = {
    "lr": Keyed(POSITIVE), "lr_decay": Num(0, 1, open_lo=True), "flip": Bool(), "negatives": Enum(NEGATIVES),
    "lr_schedule": AnyOf((_SCHEDULE, Keyed(_SCHEDULE, by=_BY_PROFILE))),  # per phase, or that keyed by profile
    "phase_epochs": Keyed(AnyOf((ListOf(SIZE, min_len=1), MapOf(SIZE))), by=_BY_PROFILE),
}
_HEAD = {"embed_dim": Keyed(SIZE), "inner_dim": Keyed(SIZE), "margin": Keyed(NONNEG)}
_M3NET = {**_HEAD, "w_p": Keyed(NONNEG), "prototype_momentum": FRACTION,
          **{f"lambda_{t}": Keyed(NONNEG) for t in ("m", "cc", "ci", "ac", "ai")}}
_ASEN = dict(_HEAD)
_ASENPP = {**_HEAD, "local_inner_dim": Keyed(SIZE), "local_backbone": Keyed(Enum(BACKBONES), by=("backbone",)),
           "threshold": FRACTION, "crop_fraction": Num(0, 1, open_lo=True), "beta": FRACTION,
           "local_weight": NONNEG, "align_weight": NONNEG, "joint_global_lr_scale": NONNEG}
_MODC = {**_HEAD, "prototype_momentum": FRACTION, "lambda_proto": Keyed(NONNEG), "lambda_instance": Keyed(NONNEG)}

# constructor keys per registered model (model/*.py); the trainer's keys are allowed for every one
MODEL_SCHEMAS: dict[str, dict[str, Spec]] = {
    "m3net": _M3NET, "m3net_eq11": _M3NET, "m3net_a": _M3NET, "m3net_c": _M3NET,
    "asen": _ASEN, "asen_v2": _ASEN, "asenpp": _ASENPP, "modc": _MODC,
}


def register_model_params(name: str, fields: dict[str, Spec]) -> None:
    """Declare the params.yaml keys of a model registered outside ``model/`` (the tests' tiny ones)."""
    MODEL_SCHEMAS[name] = dict(fields)


class _ImportPath(Spec):
    """A dotted Python import path (``mypkg.mymodel``)."""

    def describe(self):
        return "a Python import path (mypkg.mymodel)"

    def check(self, v, path, ctx):
        if not isinstance(v, str) or not v or not all(p.isidentifier() for p in v.split(".")):
            raise SchemaError(path, f"expected {self.describe()}, got {_show(v)}")


@dataclass(frozen=True)
class _ExternalModel(Spec):
    """``models.<name>`` of a model registered outside ``model/``: ``module`` (the import path that
    registers ``name``), the trainer's keys as for any model, and any other key, passed to the
    model's constructor (which names its arguments: an unknown one fails there, when the model is
    built)."""

    def describe(self):
        return "a mapping with `module`"

    def check(self, v, path, ctx):
        if not isinstance(v, dict):
            raise SchemaError(path, f"expected {self.describe()}, got {_show(v)}")
        if "module" not in v:
            raise SchemaError(path, "a model not registered in model/ needs `module: <import path>` (the Python "
                                    f"module that registers it); the suite's models: {', '.join(MODEL_SCHEMAS)}")
        for k, x in v.items():
            if not isinstance(k, str) or not k.isidentifier():
                raise SchemaError(_join(path, k), "expected a constructor argument's name as the key")
            if k == "module":
                _ImportPath().check(x, _join(path, k), ctx)
            elif k in _TRAINER:
                _TRAINER[k].check(x, _join(path, k), ctx)


# a model name is a DVC stage-name part and a folder name: letters, digits, underscores
_MODEL_NAME = "a model name is letters, digits and underscores (a stage name and a folder name)"


class _Models(Spec):
    def describe(self):
        return "a mapping of models"

    def check(self, v, path, ctx):
        if not isinstance(v, dict):
            raise SchemaError(path, f"expected a mapping of models ({', '.join(MODEL_SCHEMAS)}), got {_show(v)}")
        for name, body in v.items():
            if isinstance(body, dict) and "module" in body:  # registered outside model/ (examples/mymodel)
                if not isinstance(name, str) or not name.isidentifier():
                    raise SchemaError(_join(path, name), _MODEL_NAME)
                _ExternalModel().check(body, _join(path, name), ctx)
                continue
            if name not in MODEL_SCHEMAS:
                e = _unknown(path, name, MODEL_SCHEMAS)
                raise SchemaError(e.path, str(e)[len(e.path) + 2:] + "; a model from outside the suite names the "
                                  "module that registers it: `module: mypkg.mymodel` (README, examples/mymodel)")
            Section({**MODEL_SCHEMAS[name], **_TRAINER}).check(body, _join(path, name), ctx)


EVALUATE = Section({
    "relevance": Enum(("all", "any")), "gamma": FRACTION, "gamma_sweep": ListOf(FRACTION, min_len=1),
    "max_classes": SIZE, "no_relevant": Enum(("leave_out", "zero")), "ks": ListOf(SIZE, min_len=1),
    "bootstrap": SIZE, "bootstrap_seed": SEED, "ci_level": Num(0, 1, open_lo=True, open_hi=True),
    "cooccurrence_min_rate": FRACTION, "batch_size": SIZE, "examples": COUNT, "example_top": SIZE,
})

PARAMS = Section({
    "twins": TWINS, "acquire": ACQUIRE, "validate": VALIDATE, "splits": SPLITS, "cooccurrence": COOCCURRENCE,
    "train": TRAIN, "models": _Models(), "evaluate": EVALUATE,
    "leaderboard": Section({"alpha": Num(0, 1, open_lo=True, open_hi=True)}),
    "report": Section({"examples": COUNT}),
})


def validate(params: dict) -> None:
    """Raise SchemaError (its ``path`` the dotted key) for the first value params.yaml may not hold."""
    train = params.get("train") if isinstance(params.get("train"), dict) else {}
    profiles = train.get("profiles") if isinstance(train.get("profiles"), dict) else {}
    models = params.get("models") if isinstance(params.get("models"), dict) else {}
    PARAMS.check(params, "", {"profiles": tuple(profiles), "models": tuple(models)})


# ------------------------------------------------------------------------------------ resolution


def resolve(value: Any, *, dataset: str | None = None, profile: str | None = None, profiles=(),
            backbone: str | None = None, where: str = "value") -> Any:
    """This run's entry of a value keyed by dataset (a mapping naming ``dataset``), by training
    profile (keys among ``profiles``) or by backbone (keys among BACKBONES, with ``backbone``
    given); anything else is returned as it is. An axis is tried only when its argument is given.
    The one resolver: train, pretrain and perf call it."""
    if not isinstance(value, dict) or not value:
        return value
    keys = set(value)
    if dataset is not None and (dataset in value or keys <= set(DATASETS)):
        if dataset not in value:
            raise KeyError(f"{where} has no value for the dataset {dataset!r}: {value}")
        return value[dataset]
    if profile is not None and keys <= set(profiles):
        if profile not in value:
            raise KeyError(f"{where} has no value for the active profile {profile!r}: {value}")
        return value[profile]
    if backbone is not None and keys <= set(BACKBONES):
        if backbone not in value:
            raise KeyError(f"{where} has no value for the backbone {backbone!r}: {value}")
        return value[backbone]
    return value


def resolve_model_params(params: dict, model: str, dataset: str, profile: str | None = None,
                         backbone: str | None = None) -> dict[str, Any]:
    """models.<model> with every value keyed by dataset, training profile (train.profile, or
    ``profile``) or backbone (the profile's, or ``backbone``) resolved to this run's."""
    if model not in params.get("models", {}):
        raise KeyError(f"params.yaml has no models.{model} section")
    train = params.get("train", {})
    profiles = train.get("profiles", {})
    profile = train.get("profile") if profile is None else profile
    if backbone is None:
        backbone = (profiles.get(profile) or {}).get("backbone")
    if (profiles.get(profile) or {}).get("model_overrides"):
        raise ValueError(f"train.profiles.{profile}.model_overrides is gone: write the profile's value in "
                         f"models.<model>.<key> as {{{profile}: value, ...}}")
    return {k: resolve(v, dataset=dataset, profile=profile, profiles=tuple(profiles),
                       backbone=backbone, where=f"models.{model}.{k}")
            for k, v in params["models"][model].items()}


def model_modules(params: dict) -> dict[str, str]:
    """{name: import path} of the models params.yaml registers from outside ``model/``
    (``models.<name>.module``)."""
    return {name: body["module"] for name, body in (params.get("models") or {}).items()
            if isinstance(body, dict) and isinstance(body.get("module"), str)}


def split_model_params(model_params: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor keyword arguments, trainer keys) of a model's resolved params: the trainer's
    are TRAINER_KEYS, everything else goes to the model, whose constructor names each argument
    (an unknown key fails there, never silently). ``module`` (a model from outside ``model/``)
    stays with the first: ``model.build_model(name, module=...)`` imports it before building."""
    model_kw = {k: v for k, v in model_params.items() if k not in TRAINER_KEYS}
    trainer = {k: v for k, v in model_params.items() if k in TRAINER_KEYS}
    return model_kw, trainer
