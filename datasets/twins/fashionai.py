"""FashionAI twin: the real 8 attributes, class counts and names; one attribute per image, each class
a drawn parameter (hem heights, sleeve fractions, neckline/collar/lapel/neck shapes, 'Invisible' =
the part hidden or out of frame)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

from .common import zipf

META = json.loads(resources.files("datasets").joinpath("data/fashionai_meta.json").read_text())
ATTRIBUTES = META["ATTRIBUTES"]
VALUES = META["ATTRIBUTES_VALUES"]

SKIRT_HEM = [None, 0.58, 0.7, 0.8, 0.9, 0.99]
SLEEVE = [None, 0.0, 0.13, 0.28, 0.47, 0.64, 0.84, 1.0, 1.2]
COAT_HEM = [None, 0.3, 0.5, 0.62, 0.42, 0.72, 0.82, 0.96]  # order of the real class names
PANT_HEM = [None, 0.58, 0.66, 0.76, 0.85, 0.97]
COLLAR = [None, "shirt", "peterpan", "puritan", "rib"]
LAPEL = [None, "notched", "collarless", "shawl", "plusshawl"]
NECKLINE = [None, "strapless", "deepv", "straight", "v", "square", "off_shoulder", "round", "sweetheart", "one_shoulder"]
NECK = [None, "turtle", "ruffle", "lowturtle", "draped"]
REGION = {"skirt_length": "hem", "sleeve_length": "sleeve", "coat_length": "hem", "pant_length": "hem",
          "collar_design": "collar", "lapel_design": "lapel", "neckline_design": "neckline", "neck_design": "neck"}


def sample(rng: np.random.Generator) -> dict:
    attr = ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]
    n = len(VALUES[attr])
    # long-tailed class frequencies in a per-image-random but fixed-shape order
    cls = zipf(rng, list(np.roll(np.arange(n), 1)), 0.6)  # class 1 most common, 'Invisible' (0) rarest
    cls = int(cls)
    spec = {"kind": "dress", "parts": [], "sleeve_len": float(rng.choice([0.0, 0.28, 0.5, 1.0]))}
    spec["neckline"] = str(rng.choice(["round", "v", "square", "boat"]))
    if attr == "skirt_length":
        spec.update(kind="skirt", waist_y=0.26, silhouette=str(rng.choice(["straight", "aline", "flare", "pencil"])))
        if cls == 0:
            spec.update(kind="top", hem_y=0.5, zoom=1.7)
        else:
            spec["hem_y"] = SKIRT_HEM[cls]
    elif attr == "sleeve_length":
        spec.update(kind="top", hem_y=0.5)
        if cls == 0:
            spec.update(zoom=2.2, zoom_top=-0.15, sleeve_len=0.3)
        else:
            spec["sleeve_len"] = SLEEVE[cls]
            if cls == 1:
                spec["neckline"] = "round"
    elif attr == "coat_length":
        spec.update(kind="coat", lapel="collarless", sleeve_len=1.0, silhouette="straight")
        if cls == 0:
            spec.update(hem_y=0.6, zoom=1.9)
        else:
            spec["hem_y"] = COAT_HEM[cls]
    elif attr == "pant_length":
        spec.update(kind="pants", waist_y=0.3)
        if cls == 0:
            spec.update(kind="top", hem_y=0.5, zoom=1.7)
        else:
            spec["hem_y"] = PANT_HEM[cls]
    elif attr == "collar_design":
        spec.update(kind="top", hem_y=0.5, neckline="round")
        if cls == 0:
            spec["occlude"] = "neck"
        else:
            spec["collar"] = COLLAR[cls]
    elif attr == "lapel_design":
        spec.update(kind="coat", hem_y=0.6, sleeve_len=1.0, neckline=None)
        if cls == 0:
            spec["occlude"] = "neck"
            spec["lapel"] = "notched"
        else:
            spec["lapel"] = LAPEL[cls]
    elif attr == "neckline_design":
        spec.update(kind="dress", hem_y=0.62)
        if cls == 0:
            spec["occlude"] = "neck"
        else:
            spec["neckline"] = NECKLINE[cls]
            if NECKLINE[cls] in ("strapless", "sweetheart", "off_shoulder", "one_shoulder"):
                spec["sleeve_len"] = 0.0 if NECKLINE[cls] != "off_shoulder" else 0.28
    elif attr == "neck_design":
        spec.update(kind="top", hem_y=0.5, neckline=None, sleeve_len=1.0)
        if cls == 0:
            spec["occlude"] = "neck"
        else:
            spec["neck"] = NECK[cls]
    if rng.random() < 0.3:
        spec["pattern"] = str(rng.choice(["stripes", "dots", "checks", "floral"]))
    return {"spec": spec, "attribute": attr, "class": cls}


def regions(rec: dict, boxes: dict) -> list:
    if rec["class"] == 0:
        return []
    key = REGION[rec["attribute"]]
    out = []
    if key in boxes:
        out.append({"attribute": rec["attribute"], "class": VALUES[rec["attribute"]][rec["class"]], "box": boxes[key]})
    if key == "sleeve" and "sleeve_right" in boxes:
        out.append({"attribute": rec["attribute"], "class": VALUES[rec["attribute"]][rec["class"]], "box": boxes["sleeve_right"]})
    return out


def show(rec: dict) -> list[str]:
    return [rec["attribute"].replace("_", " "), VALUES[rec["attribute"]][rec["class"]], rec.get("ynm", "")]
