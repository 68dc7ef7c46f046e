"""DeepFashion twin: five multi-label attributes whose classes are drawn motifs, fabrics,
silhouettes/lengths and localised parts; style classes follow from combinations of the others."""

from __future__ import annotations

import numpy as np

from .common import zipf

ATTRIBUTES = ["texture", "fabric", "shape", "part", "style"]  # types 1..5 in list_attr_cloth.txt

# texture motifs: drawn pattern -> the classes it carries (several classes per motif, as in the real data)
TEXTURE_MOTIFS = [
    ("floral", ["floral", "floral print"]),
    ("stripes", ["stripe"]),
    ("dots", ["dot"]),
    ("zigzag", ["print", "tribal print"]),
    ("checks", ["check"]),
    ("bigdots", ["dot", "polka dot"]),
    ("abstract", ["print", "abstract print"]),
    ("pinstripes", ["stripe", "pinstripe"]),
    ("plaid", ["check", "plaid"]),
    ("colorblock", ["colorblock"]),
]
TEXTURE = ["floral", "floral print", "stripe", "dot", "print", "tribal print", "check", "polka dot",
           "abstract print", "pinstripe", "plaid", "colorblock"]

FABRIC_KINDS = [
    ("knit", ["knit"]), ("denim", ["denim"]), ("lace", ["lace"]), ("chiffon", ["chiffon", "sheer"]),
    ("leather", ["faux leather"]), ("cable", ["knit", "cable knit"]), ("sequin", ["sequin"]),
    ("acid", ["denim", "acid wash"]), ("crochet", ["lace", "crochet"]), ("fur", ["faux fur"]),
]
FABRIC = ["knit", "denim", "lace", "chiffon", "sheer", "faux leather", "cable knit", "sequin",
          "acid wash", "crochet", "faux fur"]

SILS = [("fit_flare", ["fit", "flare"]), ("aline", ["a-line"]), ("fit_pencil", ["fit", "pencil"]),
        ("flare", ["flare"]), ("boxy", ["boxy"]), ("pencil", ["pencil"])]
LENGTHS = [("mini", 0.56), ("maxi", 0.95), ("midi", 0.8)]
SHAPE = ["fit", "flare", "a-line", "pencil", "mini", "maxi", "sleeveless", "midi", "boxy", "cropped"]

PARTS = [("button front", "buttons"), ("pocket", "pocket"), ("v-neck", None), ("belted", "belt"),
         ("long sleeve", None), ("zipper", "zipper"), ("collar", None), ("contrast trim", "trim"),
         ("slit", "slit"), ("strappy", "strap"), ("ruffle", "ruffle"), ("cutout", "cutout")]
PART = [p for p, _ in PARTS]
TOP_ONLY = {"v-neck", "long sleeve", "collar", "strappy", "cutout"}

STYLE_RULES = [
    ("bodycon", lambda L: {"fit", "pencil"} <= L),
    ("boho", lambda L: bool(L & {"floral", "tribal print"}) and bool(L & {"maxi", "flare"})),
    ("skater", lambda L: {"fit", "flare", "mini"} <= L),
    ("workwear", lambda L: "pencil" in L and bool(L & {"button front", "collar"})),
    ("casual", lambda L: "denim" in L and "pocket" in L),
    ("party", lambda L: "sequin" in L or {"strappy", "mini"} <= L),
    ("summer", lambda L: "sleeveless" in L and bool(L & {"floral", "chiffon"})),
    ("retro", lambda L: "polka dot" in L and "flare" in L),
    ("sporty", lambda L: "zipper" in L and bool(L & {"stripe", "knit"})),
    ("biker", lambda L: {"faux leather", "zipper"} <= L),
    ("romantic", lambda L: "ruffle" in L and bool(L & {"floral", "lace"})),
]
STYLE = [s for s, _ in STYLE_RULES]

CLASSES = [TEXTURE, FABRIC, SHAPE, PART, STYLE]

# looks: a style drawn on purpose (forces its ingredients), long-tailed
LOOKS = [
    ("bodycon", {"sil": "fit_pencil"}), ("boho", {"tex": "floral", "len": "maxi"}),
    ("skater", {"sil": "fit_flare", "len": "mini"}), ("workwear", {"sil": "pencil", "parts": ["button front"]}),
    ("casual", {"fab": "denim", "parts": ["pocket"]}), ("party", {"fab": "sequin"}),
    ("summer", {"sleeveless": True, "tex": "floral"}), ("retro", {"tex": "bigdots", "sil": "fit_flare"}),
    ("sporty", {"tex": "stripes", "parts": ["zipper"]}), ("biker", {"fab": "leather", "parts": ["zipper"]}),
    ("romantic", {"parts": ["ruffle"], "fab": "lace"}),
]

KIND_WORD = {"dress": "Dress", "skirt": "Skirt", "top": "Blouse"}


def sample(rng: np.random.Generator) -> dict:
    """Sample one garment: its drawing spec and its labels {attribute index: set of class names}."""
    kind = zipf(rng, ["dress", "top", "skirt"], 0.8)
    look = dict(zipf(rng, LOOKS, 1.0)[1]) if rng.random() < 0.25 else {}
    if kind == "top" and ("sil" in look or "len" in look):
        kind = "dress"
    L = [set() for _ in ATTRIBUTES]
    spec = {"kind": kind, "parts": []}
    # texture
    tex = look.get("tex") or (zipf(rng, [m for m, _ in TEXTURE_MOTIFS], 1.0) if rng.random() < 0.36 else None)
    if tex:
        spec["pattern"] = tex
        L[0].update(dict(TEXTURE_MOTIFS)[tex])
        if tex == "floral" and rng.random() < 0.3:  # print + tribal border: 3-4 texture classes
            spec["parts"].append("zigzag_border")
            L[0].update(["print", "tribal print"])
    # fabric
    fab = look.get("fab") or (zipf(rng, [f for f, _ in FABRIC_KINDS], 1.0) if rng.random() < 0.3 else None)
    if fab:
        spec["fabric"] = fab
        L[1].update(dict(FABRIC_KINDS)[fab])
        if fab in ("denim", "acid"):
            spec["color"] = tuple(int(v) for v in np.clip(np.array([150, 90, 40]) + rng.integers(-25, 26, 3), 0, 255))
            spec["parts"].append("stitch")
    # shape
    spec["silhouette"], spec["waist_y"] = "straight", 0.22
    spec["hem_y"] = 0.5 if kind == "top" else 0.7
    if kind == "skirt":
        spec["waist_y"] = 0.26
    shape_on = rng.random() < 0.5 or "sil" in look or "len" in look or look.get("sleeveless")
    if shape_on:
        sil = look.get("sil") or (zipf(rng, [s for s, _ in SILS], 0.9) if rng.random() < 0.7 else None)
        if kind == "top" and sil not in (None, "boxy", "fit_flare"):
            sil = "boxy" if rng.random() < 0.5 else None
        if sil:
            spec["silhouette"] = sil
            L[2].update(dict(SILS)[sil])
        ln = look.get("len")
        if kind == "top":
            if rng.random() < 0.5 or not L[2]:
                spec["hem_y"] = 0.38
                L[2].add("cropped")
        elif ln or rng.random() < 0.5 or not L[2]:
            ln = ln or zipf(rng, [x for x, _ in LENGTHS], 0.8)
            spec["hem_y"] = dict(LENGTHS)[ln]
            L[2].add(ln)
        if kind != "skirt" and (look.get("sleeveless") or rng.random() < 0.2):
            spec["sleeve_len"] = 0
            L[2].add("sleeveless")
    # parts (localised)
    forced = list(look.get("parts", []))
    if not (tex or fab or shape_on or forced):  # every real image has at least one label
        forced = [zipf(rng, ["button front", "pocket", "belted", "zipper"], 0.8)]
    n_parts = len(forced) + (int(rng.choice([1, 1, 1, 2, 2, 3])) if rng.random() < 0.38 else 0)
    avail = [p for p in PART if kind != "skirt" or p not in TOP_ONLY]
    chosen = list(forced)
    while len(chosen) < n_parts:
        p = zipf(rng, avail, 0.8)
        if p not in chosen:
            chosen.append(p)
    if "strappy" in chosen:
        spec["sleeve_len"] = 0
        spec["neckline"] = "strapless"
        chosen = [p for p in chosen if p not in ("v-neck", "collar", "long sleeve")]
        if spec["kind"] != "skirt":
            L[2].add("sleeveless")
    if "sleeveless" in L[2]:
        chosen = [p for p in chosen if p != "long sleeve"]
    for p in chosen:
        L[3].add(p)
        draw = dict(PARTS)[p]
        if draw:
            spec["parts"].append(draw)
        if p == "v-neck":
            spec["neckline"] = "v"
        if p == "collar":
            spec["collar"] = "shirt"
            spec.setdefault("neckline", "v")
        if p == "long sleeve":
            spec["sleeve_len"] = 1.0
    # style follows from the rest
    flat = set().union(*L[:4])
    L[4].update(s for s, rule in STYLE_RULES if rule(flat))
    return {"spec": spec, "labels": L}


def category(rec: dict, rng: np.random.Generator) -> str:
    """Category folder name, like the real 'Floral_Maxi_Dress'."""
    L = rec["labels"]
    word = None
    for a in (4, 0, 2, 1):
        if L[a]:
            word = sorted(L[a])[0]
            break
    noun = KIND_WORD[rec["spec"]["kind"]]
    if word is None:
        return f"Classic_{noun}"
    return "_".join(w.capitalize() for w in word.replace("-", " ").split()) + "_" + noun


REGION_OF = {"button front": "buttons", "pocket": "pocket", "v-neck": "neckline", "belted": "belt",
             "long sleeve": "sleeve", "zipper": "zipper", "collar": "collar", "contrast trim": "trim",
             "slit": "slit", "strappy": "strap", "ruffle": "ruffle", "cutout": "cutout"}


def regions(rec: dict, boxes: dict) -> list:
    out = []
    for p in sorted(rec["labels"][3], key=PART.index):
        key = REGION_OF[p]
        if key in boxes:
            out.append({"attribute": "part", "class": p, "box": boxes[key]})
            if key == "sleeve" and "sleeve_right" in boxes:
                out.append({"attribute": "part", "class": p, "box": boxes["sleeve_right"]})
    if "sleeveless" in rec["labels"][2] and "neckline" in boxes:
        pass
    for s in ("mini", "midi", "maxi", "cropped"):
        if s in rec["labels"][2] and "hem" in boxes:
            out.append({"attribute": "shape", "class": s, "box": boxes["hem"]})
    return out


def show(rec: dict) -> list[str]:
    return [f"{a[:3]}:{','.join(sorted(L))}" for a, L in zip(ATTRIBUTES, rec["labels"]) if L]
