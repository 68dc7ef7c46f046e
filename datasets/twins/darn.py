"""DARN twin: the real 9 attributes, at most `max_classes` classes each, single label per attribute
and several attributes per image; every class a drawn parameter (colour = fill colour, ...)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

from .draw import COLORS

_META = json.loads(resources.files("datasets").joinpath("data/asen_meta.json").read_text())["DARN"]
ATTRIBUTES = _META["ATTRIBUTES"]
REAL_NUM = _META["ATTRIBUTES_NUM"]

# class name -> drawing, per attribute (in the order of the class ids)
CATEGORY = [("t-shirt", dict(kind="top", hem_y=0.5, sleeve_len=0.28)),
            ("dress", dict(kind="dress", hem_y=0.72)),
            ("skirt", dict(kind="skirt", waist_y=0.26, hem_y=0.66)),
            ("pants", dict(kind="pants", waist_y=0.3, hem_y=0.96)),
            ("shirt", dict(kind="top", hem_y=0.52, collar="shirt", parts=["buttons"], sleeve_len=1.0)),
            ("coat", dict(kind="coat", hem_y=0.78, lapel="notched", sleeve_len=1.0)),
            ("sweater", dict(kind="top", hem_y=0.5, fabric="knit", sleeve_len=1.0)),
            ("vest", dict(kind="top", hem_y=0.48, sleeve_len=0.0)),
            ("shorts", dict(kind="pants", waist_y=0.3, hem_y=0.55)),
            ("jumpsuit", dict(kind="jumpsuit", hem_y=0.95)),
            ("cardigan", dict(kind="coat", hem_y=0.55, lapel="collarless", fabric="knit", sleeve_len=1.0)),
            ("hoodie", dict(kind="top", hem_y=0.52, collar="hood", parts=["kangaroo"], sleeve_len=1.0)),
            ]
BUTTON = [("no button", []), ("single-breasted", ["buttons"]), ("zipper", ["zipper"]),
          ("double-breasted", ["buttons2"]), ("one button", ["one_button"]), ("two buttons", ["two_buttons"]),
          ("three buttons", ["three_buttons"]), ("toggle", ["toggle"]), ("half placket", ["half_placket"]),
          ("side buttons", ["side_buttons"]), ("snap", ["snap"]), ("drawstring", ["drawstring"])]
COLOR = [(n, COLORS[n]) for n in ["black", "white", "red", "blue", "grey", "pink", "green", "yellow",
                                    "purple", "brown", "orange", "cyan"]]
LENGTH = [("hip", 0.5), ("knee", 0.72), ("waist", 0.36), ("mid-thigh", 0.6), ("midi", 0.84), ("maxi", 0.97), ("cropped", 0.3)]
PATTERN = [("solid", "solid"), ("stripe", "stripes"), ("dot", "dots"), ("check", "checks"), ("floral", "floral"),
           ("graphic", "graphic"), ("vertical stripe", "vstripes"), ("plaid", "plaid"), ("leopard", "animal"),
           ("geometric", "abstract"), ("tribal", "zigzag"), ("colorblock", "colorblock")]
SHAPE = [("straight", "straight"), ("slim", "slim"), ("loose", "loose"), ("a-line", "aline"), ("flare", "fit_flare"),
         ("pencil", "fit_pencil"), ("boxy", "boxy"), ("cocoon", "cocoon"), ("peplum", "peplum"), ("mermaid", "mermaid"),
         ("tiered", "tiered")]
COLLAR = [("round", dict(neckline="round")), ("v-neck", dict(neckline="v")), ("shirt collar", dict(collar="shirt")),
          ("stand collar", dict(collar="stand")), ("square", dict(neckline="square")), ("hooded", dict(collar="hood")),
          ("turtleneck", dict(neck="turtle", neckline=None)), ("boat neck", dict(neckline="boat")),
          ("peter pan", dict(collar="peterpan")), ("off-shoulder", dict(neckline="off_shoulder")),
          ("halter", dict(neckline="halter")), ("deep v", dict(neckline="deepv"))]
SLEEVE_LEN = [("long", 1.0), ("short", 0.28), ("sleeveless", 0.0), ("three-quarter", 0.64), ("elbow", 0.47),
              ("cap", 0.13), ("wrist", 0.84), ("extra long", 1.2)]
SLEEVE_SHAPE = ["straight", "puff", "bell", "tight", "bishop", "lantern", "batwing", "raglan", "cuffed",
                "ruffle", "cold_shoulder", "split"]

TABLES = {"clothes category": CATEGORY, "clothes button": BUTTON, "clothes color": COLOR, "clothes length": LENGTH,
          "clothes pattern": PATTERN, "clothes shape": SHAPE, "collar shape": COLLAR, "sleeve length": SLEEVE_LEN,
          "sleeve shape": [(s.replace("_", " "), s) for s in SLEEVE_SHAPE]}
TOP = {"t-shirt", "shirt", "coat", "sweater", "vest", "cardigan", "hoodie", "dress", "jumpsuit"}
REGION = {"clothes button": "buttons", "clothes length": "hem", "collar shape": ("collar", "neckline", "neck"),
          "sleeve length": "sleeve", "sleeve shape": "sleeve", "clothes pattern": "graphic"}


def class_names(max_classes: int) -> dict[str, list[str]]:
    return {a: [n for n, _ in TABLES[a]][: min(REAL_NUM[a], int(max_classes), len(TABLES[a]))] for a in ATTRIBUTES}


def _pick(rng, n, a=0.9):
    w = 1.0 / np.arange(1, n + 1) ** a
    return int(rng.choice(n, p=w / w.sum()))


def sample(rng: np.random.Generator, max_classes: int) -> dict:
    names = class_names(max_classes)
    lab = {}
    cat = _pick(rng, len(names["clothes category"]), 0.7)
    cname, base = CATEGORY[cat]
    spec = {"parts": []}
    spec.update({k: (list(v) if isinstance(v, list) else v) for k, v in base.items()})
    lab["clothes category"] = cat
    top = cname in TOP
    lab["clothes color"] = _pick(rng, len(names["clothes color"]), 0.5)
    spec["color"] = COLOR[lab["clothes color"]][1]
    lab["clothes pattern"] = _pick(rng, len(names["clothes pattern"]), 1.1)
    spec["pattern"] = PATTERN[lab["clothes pattern"]][1]
    if cname not in ("pants", "shorts"):
        if cname not in ("vest", "t-shirt", "shirt", "sweater", "hoodie") or rng.random() < 0.5:
            lab["clothes length"] = _pick(rng, len(names["clothes length"]), 0.7)
            spec["hem_y"] = LENGTH[lab["clothes length"]][1]
            if spec["kind"] == "skirt":
                spec["hem_y"] = max(spec["hem_y"], 0.36)
        if cname not in ("shirt", "hoodie"):
            lab["clothes shape"] = _pick(rng, len(names["clothes shape"]), 0.8)
            spec["silhouette"] = SHAPE[lab["clothes shape"]][1]
    if top:
        if cname not in ("shirt", "hoodie", "dress", "jumpsuit") or rng.random() < 0.4:
            if cname == "shirt":
                lab["clothes button"] = 1
            else:
                lab["clothes button"] = _pick(rng, len(names["clothes button"]), 0.8)
                spec["parts"] = [p for p in spec["parts"] if p != "buttons"] + BUTTON[lab["clothes button"]][1]
        if cname in ("shirt",):
            lab["collar shape"] = 2
        elif cname == "hoodie":
            lab["collar shape"] = 5
        elif cname not in ("coat", "cardigan"):
            lab["collar shape"] = _pick(rng, len(names["collar shape"]), 0.8)
            spec.update(COLLAR[lab["collar shape"]][1])
        if cname != "vest":
            lab["sleeve length"] = _pick(rng, len(names["sleeve length"]), 0.8)
            spec["sleeve_len"] = SLEEVE_LEN[lab["sleeve length"]][1]
            if spec.get("neckline") == "off_shoulder" and spec["sleeve_len"] == 0:
                spec["sleeve_len"] = 0.28
                lab["sleeve length"] = 1
            if spec["sleeve_len"] > 0:
                lab["sleeve shape"] = _pick(rng, len(names["sleeve shape"]), 1.0)
                spec["sleeve_shape"] = SLEEVE_SHAPE[lab["sleeve shape"]]
        else:
            lab["sleeve length"] = 2
    # real DARN images miss some attributes; never the category
    for a in list(lab):
        if a != "clothes category" and rng.random() < 0.12:
            del lab[a]
    labels = {ATTRIBUTES.index(a): v for a, v in lab.items()}
    return {"spec": spec, "labels": dict(sorted(labels.items()))}


def regions(rec: dict, boxes: dict, names: dict) -> list:
    out = []
    for ai, ci in rec["labels"].items():
        a = ATTRIBUTES[ai]
        keys = REGION.get(a)
        if keys is None:
            continue
        keys = keys if isinstance(keys, tuple) else (keys,)
        if a == "clothes button" and ci == 0 or a == "sleeve length" and SLEEVE_LEN[ci][1] == 0:
            continue
        if a == "clothes pattern" and PATTERN[ci][1] != "graphic":
            continue
        for k in keys:
            if k in boxes:
                out.append({"attribute": a, "class": names[a][ci], "box": boxes[k]})
                if k == "sleeve" and "sleeve_right" in boxes:
                    out.append({"attribute": a, "class": names[a][ci], "box": boxes["sleeve_right"]})
                break
    return out


def show(rec: dict, names: dict) -> list[str]:
    return [names[ATTRIBUTES[a]][c] for a, c in rec["labels"].items()]
