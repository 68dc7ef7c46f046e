"""DeepFashion twin: five multi-label attributes whose classes are compositional and long-tailed, as
the real release's 1,000 are ('floral', 'red floral', 'ditsy floral'; 'knit', 'cable knit'; 'a-line',
'mini', 'a-line mini'; 'pocket', 'chest pocket'). Every class is a drawing parameter:

- texture: the motif (the pattern fill); its scale (motif size: 'ditsy floral', 'pinstripe', 'polka
  dot'); for floral, stripes, dots and abstract prints the colour of the motif: one shade of a named
  family ('red floral') or several colours (no colour class);
- fabric: the surface (an overlay on the garment pixels) and its finish (a variant of that overlay:
  'cable knit', 'acid wash', 'patent'); denim's wash is the garment colour ('light wash'); for lace,
  leather, satin and velvet the colour family of the garment ('black lace');
- shape: the silhouette (width profile), the length (hem height), a high-low hem (an arced hem),
  sleevelessness and each silhouette x length of dresses and skirts ('a-line mini');
- part: localised parts, each with its ground-truth box in regions.json: necklines, collars, sleeve
  styles, closures, pockets, waist ties, hem trims, slits and cutouts; a part drawn in several
  placements carries the part and its placement ('pocket' + 'chest pocket', 'ruffle' + 'ruffle hem');
- style: follows from combinations of the others (rules over the other labels); some garments are
  drawn as a look, which forces a style's ingredients.

Each choice is Zipf-like (common motifs, colours, fabrics and parts first), so compositions of
choices thin out into a tail of rare classes and most class pairs rarely share an image, as in the
real data: at the params' twin size of 5,000 images the largest pair rate is ~0.045 and about half
the classes are in a pair with rate >= 0.002 (datasets/cooccurrence.py; the real release: 0.034 and
122 of 1,000)."""

from __future__ import annotations

import numpy as np

from .common import zipf

ATTRIBUTES = ["texture", "fabric", "shape", "part", "style"]  # types 1..5 in list_attr_cloth.txt

# colour families (BGR shades; a garment or motif colour is a shade of one, jittered), most common first
FAMILIES = [
    ("black", [(30, 30, 30), (45, 40, 38)]), ("white", [(240, 240, 240), (225, 235, 242)]),
    ("red", [(40, 40, 200), (45, 30, 150)]), ("blue", [(200, 110, 30), (120, 50, 20)]),
    ("pink", [(180, 130, 245), (150, 95, 230)]), ("green", [(60, 150, 50), (50, 110, 60)]),
    ("yellow", [(40, 210, 235), (70, 190, 225)]), ("purple", [(140, 40, 120), (120, 60, 100)]),
    ("orange", [(30, 130, 240), (40, 110, 210)]), ("brown", [(40, 75, 120), (50, 90, 140)]),
]
FAMILY = [f for f, _ in FAMILIES]

# ----------------------------------------------------------------------------- texture
# motif: drawn pattern, the classes it always carries, the word of its colour classes: a motif with
# a word is drawn either in one shade of a named family ('red floral') or in several colours (no
# colour class); any other motif's colour is random and names no class
MOTIFS = [
    ("floral", ["floral"], "floral"), ("stripes", ["stripe"], "stripe"), ("bigdots", ["dot"], "dot"),
    ("abstract", ["print", "abstract print"], "print"), ("checks", ["check"], None),
    ("animal", ["leopard"], None), ("plaid", ["check", "plaid"], None),
    ("zigzag", ["chevron"], None), ("colorblock", ["colorblock"], None),
    ("vstripes", ["vertical stripe"], "stripe"), ("graphic", ["graphic"], None),
    ("paisley", ["paisley"], None), ("hearts", ["heart"], None), ("stars", ["star"], None),
    ("camo", ["camo"], None), ("tiedye", ["tie-dye"], None),
]
SCALES = {  # motif -> (small scale class, large scale class): the pattern drawn finer or coarser
    "floral": ("ditsy floral", "large floral"), "stripes": ("pinstripe", "wide stripe"),
    "bigdots": ("pin dot", "polka dot"), "checks": ("gingham", "buffalo check"), "abstract": (None, "large print"),
}
COLOR_WORDS = ["floral", "stripe", "dot", "print"]
TEXTURE = (["floral", "ditsy floral", "large floral", "stripe", "pinstripe", "wide stripe", "vertical stripe",
            "dot", "pin dot", "polka dot", "print", "abstract print", "large print", "check", "gingham",
            "buffalo check", "plaid", "leopard", "chevron", "colorblock", "graphic", "tribal print",
            "paisley", "heart", "star", "camo", "tie-dye"]
           + [f"{f} {w}" for w in COLOR_WORDS for f in FAMILY])

# ----------------------------------------------------------------------------- fabric
# surface: drawn overlay, classes, finishes (drawn overlay, class), the word of its colour classes
FABRICS = [
    ("knit", ["knit"], [("cable", "cable knit"), ("rib", "rib knit"), ("chunky", "chunky knit")], None),
    ("denim", ["denim"], [("acid", "acid wash"), ("distressed", "distressed")], None),
    ("lace", ["lace"], [], "lace"), ("chiffon", ["chiffon"], [("pleated", "pleated")], None),
    ("leather", ["faux leather"], [("patent", "patent"), ("quilted", "quilted")], "leather"),
    ("satin", ["satin"], [], "satin"),
    ("sequin", ["sequin"], [("metallic", "metallic")], None),
    ("velvet", ["velvet"], [("crushed", "crushed velvet")], "velvet"),
    ("suede", ["suede"], [], None), ("crochet", ["crochet"], [], None), ("linen", ["linen"], [], None),
    ("sheer", ["sheer"], [], None), ("fur", ["faux fur"], [], None), ("corduroy", ["corduroy"], [], None),
    ("eyelet", ["eyelet"], [], None), ("mesh", ["mesh"], [], None), ("tweed", ["tweed"], [], None),
]
DENIM = (150, 90, 40)
WASHES = [("light wash", (205, 170, 130)), ("dark wash", (95, 50, 25))]  # denim colour (BGR)
FABRIC_COLOR_WORDS = ["lace", "leather", "satin", "velvet"]
FABRIC = ([c for _, cl, _, _ in FABRICS for c in cl] + [c for _, _, fin, _ in FABRICS for _, c in fin]
          + [w for w, _ in WASHES] + [f"{f} {w}" for w in FABRIC_COLOR_WORDS for f in FAMILY])

# ----------------------------------------------------------------------------- shape
SILS = [("aline", ["a-line"]), ("flare", ["flare"]), ("pencil", ["pencil"]), ("fit_flare", ["fit", "flare"]),
        ("fit_pencil", ["fit", "pencil"]), ("boxy", ["boxy"]), ("peplum", ["peplum"]), ("loose", ["relaxed"]),
        ("tiered", ["tiered"]), ("slim", ["slim"]), ("mermaid", ["mermaid"]), ("cocoon", ["cocoon"])]
TOP_SILS = {"boxy", "fit_flare", "peplum", "loose", "slim"}
SKIRT_SILS = {"fit_flare", "aline", "flare", "pencil", "tiered", "mermaid", "fit_pencil"}
LENGTHS = [("mini", 0.56), ("midi", 0.8), ("maxi", 0.95), ("knee-length", 0.68)]  # dresses and skirts
TOP_LENGTHS = [("cropped", 0.38), ("longline", 0.62)]
SIL_LENGTHS = {"a-line": "a-line", "flare": "flared", "pencil": "pencil", "tiered": "tiered",
               "mermaid": "mermaid", "boxy": "boxy", "peplum": "peplum", "relaxed": "relaxed", "cocoon": "cocoon"}
SIL_LENGTH = [f"{w} {ln}" for w in SIL_LENGTHS.values() for ln in ("mini", "midi", "maxi")]
SHAPE = (["fit", "flare", "a-line", "pencil", "boxy", "peplum", "relaxed", "tiered", "slim", "mermaid", "cocoon"]
         + [ln for ln, _ in LENGTHS + TOP_LENGTHS] + ["high-low", "sleeveless"] + SIL_LENGTH)

# ----------------------------------------------------------------------------- part
# class -> (umbrella class or None, slot (one part per slot), kinds (d/t/s), spec changes, drawn
# parts, region box key). Groups are sampled first, then a part within the group (both Zipf-like).
P = {
    # necklines and collars (slot 'neck'); 'bare' ones leave the shoulders bare (sleeveless), 'sleeves'
    # ones need sleeves (at least short ones) to show
    "v-neck": (None, "neck", "dt", {"neckline": "v"}, [], "neckline"),
    "square neck": (None, "neck", "dt", {"neckline": "square"}, [], "neckline"),
    "deep v-neck": (None, "neck", "dt", {"neckline": "deepv"}, [], "neckline"),
    "boat neck": (None, "neck", "dt", {"neckline": "boat"}, [], "neckline"),
    "off-the-shoulder": (None, "neck", "dt", {"neckline": "off_shoulder", "sleeves": True}, [], "neckline"),
    "strappy": (None, "neck", "dt", {"neckline": "strapless", "bare": True}, ["strap"], "strap"),
    "sweetheart": (None, "neck", "dt", {"neckline": "sweetheart", "bare": True}, [], "neckline"),
    "halter": (None, "neck", "dt", {"neckline": "halter", "bare": True}, [], "neckline"),
    "one-shoulder": (None, "neck", "dt", {"neckline": "one_shoulder", "bare": True}, [], "neckline"),
    "collar": (None, "neck", "dt", {"collar": "shirt", "neckline": "v"}, [], "collar"),
    "peter pan collar": (None, "neck", "dt", {"collar": "peterpan"}, [], "collar"),
    "puritan collar": (None, "neck", "dt", {"collar": "puritan"}, [], "collar"),
    "notched lapel": (None, "neck", "dt", {"lapel": "notched"}, [], "lapel"),
    "mock neck": (None, "neck", "dt", {"collar": "stand"}, [], "collar"),
    "turtleneck": (None, "neck", "dt", {"neck": "turtle", "neckline": None}, [], "neck"),
    "hooded": (None, "neck", "t", {"collar": "hood"}, [], "collar"),
    "cowl neck": (None, "neck", "dt", {"neck": "draped"}, [], "neck"),
    "ruffle neck": ("ruffle", "neck", "dt", {"neck": "ruffle"}, [], "neck"),
    "keyhole": ("cutout", "neck", "dt", {}, ["keyhole"], "cutout"),  # below the neckline: one per neck
    # sleeves: length (slot 'sleeve_len') and shape (slot 'sleeve')
    "long sleeve": (None, "sleeve_len", "dt", {"sleeve_len": 1.0}, [], "sleeve"),
    "puff sleeve": (None, "sleeve", "dt", {"sleeve_shape": "puff"}, [], "sleeve"),
    "bell sleeve": (None, "sleeve", "dt", {"sleeve_shape": "bell"}, [], "sleeve"),
    "cold shoulder": (None, "sleeve", "dt", {"sleeve_shape": "cold_shoulder"}, [], "sleeve"),
    "ruffle sleeve": ("ruffle", "sleeve", "dt", {"sleeve_shape": "ruffle"}, [], "sleeve"),
    "cuffed sleeve": (None, "sleeve", "dt", {"sleeve_shape": "cuffed"}, [], "sleeve"),
    "bishop sleeve": (None, "sleeve", "dt", {"sleeve_shape": "bishop", "sleeve_len": 1.0}, [], "sleeve"),
    "raglan": (None, "sleeve", "t", {"sleeve_shape": "raglan"}, [], "sleeve"),
    "batwing": (None, "sleeve", "t", {"sleeve_shape": "batwing", "sleeve_len": 1.0}, [], "sleeve"),
    "lantern sleeve": (None, "sleeve", "dt", {"sleeve_shape": "lantern"}, [], "sleeve"),
    # closures
    "button front": (None, "closure", "dts", {}, ["buttons"], "buttons"),
    "zipper": (None, "closure", "dts", {}, ["zipper"], "zipper"),
    "side zip": (None, "closure", "ds", {}, ["side_zip"], "zipper"),
    "double-breasted": (None, "closure", "dt", {}, ["buttons2"], "buttons"),
    "half placket": (None, "closure", "t", {}, ["half_placket"], "buttons"),
    "side buttons": (None, "closure", "dt", {}, ["side_buttons"], "buttons"),
    "toggle": (None, "closure", "t", {}, ["toggle"], "buttons"),
    "snap button": (None, "closure", "dt", {}, ["snap"], "buttons"),
    "wrap front": (None, "closure", "dt", {}, ["wrap"], "wrap"),
    "lace-up": (None, "closure", "dt", {}, ["laceup"], "laceup"),
    # pockets
    "patch pocket": ("pocket", "pocket", "dts", {}, ["pocket"], "pocket"),
    "side pocket": ("pocket", "pocket", "ds", {}, ["side_pocket"], "pocket"),
    "chest pocket": ("pocket", "pocket", "dt", {}, ["chest_pocket"], "pocket"),
    "kangaroo pocket": ("pocket", "pocket", "t", {}, ["kangaroo"], "pocket"),
    # waist
    "belted": (None, "waist", "dts", {}, ["belt"], "belt"),
    "tie waist": (None, "waist", "ds", {}, ["bow"], "belt"),
    "chain belt": (None, "waist", "ds", {}, ["chain"], "belt"),
    "drawstring": (None, "cord", "t", {}, ["drawstring"], "drawstring"),
    # hem
    "contrast trim": (None, "hem", "dts", {}, ["trim"], "trim"),
    "ruffle hem": ("ruffle", "hem", "ds", {}, ["ruffle"], "ruffle"),
    "lace trim": (None, "hem", "dts", {}, ["lace_trim"], "trim"),
    "scalloped hem": (None, "hem", "ds", {}, ["scallop"], "scallop"),
    "fringe": (None, "hem", "dts", {}, ["fringe"], "fringe"),
    # slits and cutouts
    "side slit": ("slit", "slit", "ds", {}, ["slit"], "slit"),
    "front slit": ("slit", "slit", "ds", {"slit_at": "front"}, ["slit"], "slit"),
    "side cutout": ("cutout", "cutout", "dt", {}, ["cutout"], "cutout"),
}
PART_GROUPS = [  # (Zipf exponent within the group, its parts): a group is sampled Zipf-like in this
    # order, then a part within the group in its order
    (1.8, ["v-neck", "collar", "square neck", "off-the-shoulder", "deep v-neck", "boat neck", "strappy", "sweetheart",
     "halter", "peter pan collar", "mock neck", "turtleneck", "one-shoulder", "hooded", "notched lapel", "cowl neck",
     "ruffle neck", "puritan collar"]),
    (1.7, ["button front", "zipper", "side zip", "double-breasted", "wrap front", "half placket", "lace-up",
           "side buttons", "snap button", "toggle"]),
    (1.6, ["long sleeve", "puff sleeve", "bell sleeve", "cold shoulder", "ruffle sleeve", "cuffed sleeve",
           "bishop sleeve", "raglan", "batwing", "lantern sleeve"]),
    (1.4, ["belted", "tie waist", "drawstring", "chain belt"]),
    (1.3, ["contrast trim", "ruffle hem", "lace trim", "scalloped hem", "fringe"]),
    (0.4, ["patch pocket", "side pocket", "chest pocket", "kangaroo pocket"]),
    (0.5, ["side slit", "front slit"]),
    (0.5, ["side cutout", "keyhole"]),
]
UMBRELLAS = ["pocket", "ruffle", "slit", "cutout"]
PART = [p for _, g in PART_GROUPS for p in g] + UMBRELLAS

# ----------------------------------------------------------------------------- style
STYLE_RULES = [  # (style, rule over the union F of the other labels and the labels L per attribute)
    ("casual", lambda F, L: "denim" in F and "pocket" in F),
    ("bodycon", lambda F, L: {"fit", "pencil"} <= F),
    ("boho", lambda F, L: bool(F & {"floral", "tribal print"}) and bool(F & {"maxi", "tiered", "bell sleeve"})),
    ("skater", lambda F, L: {"fit", "flare", "mini"} <= F),
    ("summer", lambda F, L: "sleeveless" in F and bool(F & {"floral", "chiffon", "linen"})),
    ("workwear", lambda F, L: "pencil" in F and bool(F & {"button front", "collar"})),
    ("party", lambda F, L: "sequin" in F or {"strappy", "mini"} <= F),
    ("romantic", lambda F, L: "ruffle" in F and bool(F & {"floral", "lace"})),
    ("sporty", lambda F, L: bool(F & {"zipper", "side zip"}) and bool(F & {"stripe", "knit"})),
    ("retro", lambda F, L: "dot" in F and "flare" in F),
    ("minimalist", lambda F, L: "boxy" in F and not L[0] and not L[3]),
    ("biker", lambda F, L: "faux leather" in F and bool(F & {"zipper", "side zip"})),
    ("preppy", lambda F, L: bool(F & {"plaid", "gingham"}) and bool(F & {"collar", "pleated", "peter pan collar"})),
    ("cozy", lambda F, L: bool(F & {"chunky knit", "cable knit"}) and bool(F & {"long sleeve", "turtleneck", "relaxed"})),
    ("elegant", lambda F, L: "mermaid" in F or ("maxi" in F and bool(F & {"satin", "velvet"}))),
    ("utility", lambda F, L: "chest pocket" in F and bool(F & {"zipper", "belted", "snap button"})),
    ("beach", lambda F, L: bool(F & {"crochet", "sheer"}) and bool(F & {"maxi", "sleeveless"})),
    ("vintage", lambda F, L: "peter pan collar" in F or {"polka dot", "a-line"} <= F),
    ("mod", lambda F, L: "colorblock" in F and bool(F & {"mini", "a-line"})),
    ("glam", lambda F, L: bool(F & {"metallic", "sequin"}) and "maxi" in F),
    ("cocktail", lambda F, L: "satin" in F and bool(F & {"sweetheart", "strappy", "off-the-shoulder", "halter"})),
    ("princess", lambda F, L: "puff sleeve" in F and ("tiered" in F or {"flare", "maxi"} <= F)),
    ("nautical", lambda F, L: bool(F & {"blue stripe", "white stripe"}) and bool(F & {"button front", "boat neck", "double-breasted"})),
    ("wild", lambda F, L: {"leopard", "fit"} <= F),
    ("western", lambda F, L: ("suede" in F and bool(F & {"fringe", "pocket"})) or {"plaid", "denim"} <= F),
    ("lounge", lambda F, L: "drawstring" in F and bool(F & {"knit", "relaxed"})),
    ("gothic", lambda F, L: bool(F & {"black lace", "black velvet"}) and bool(F & {"long sleeve", "maxi"})),
    ("edgy", lambda F, L: bool(F & {"cutout", "one-shoulder"}) and bool(F & {"faux leather", "mesh", "patent"})),
    ("folk", lambda F, L: bool(F & {"tribal print", "ditsy floral"}) and bool(F & {"bell sleeve", "puff sleeve", "tiered"})),
    ("grunge", lambda F, L: "plaid" in F and bool(F & {"distressed", "faux leather"})),
    ("festival", lambda F, L: "fringe" in F and bool(F & {"crochet", "tie-dye", "paisley", "suede"})),
    ("military", lambda F, L: bool(F & {"camo", "double-breasted"}) and bool(F & {"belted", "chest pocket"})),
    ("bridal", lambda F, L: "white lace" in F and bool(F & {"maxi", "mermaid"})),
    ("y2k", lambda F, L: bool(F & {"mesh", "metallic", "heart", "star"}) and bool(F & {"cropped", "mini"})),
]
STYLE = [s for s, _ in STYLE_RULES]

CLASSES = [TEXTURE, FABRIC, SHAPE, PART, STYLE]

# looks: a style drawn on purpose (forces its ingredients), long-tailed
LOOKS = [
    ("bodycon", {"sil": "fit_pencil"}), ("workwear", {"sil": "pencil", "parts": ["button front"]}),
    ("boho", {"tex": "floral", "len": "maxi"}), ("casual", {"fab": "denim", "parts": ["pocket"]}),
    ("summer", {"sleeveless": True, "tex": "floral"}), ("skater", {"sil": "fit_flare", "len": "mini"}),
    ("party", {"fab": "sequin"}), ("romantic", {"parts": ["ruffle hem"], "fab": "lace"}),
    ("sporty", {"tex": "stripes", "parts": ["zipper"]}), ("retro", {"tex": "bigdots", "sil": "fit_flare"}),
    ("elegant", {"sil": "mermaid"}), ("minimalist", {"sil": "boxy", "plain": True}),
]

NAMED_MOTIF = 0.25  # share of the motifs with a colour word drawn in one named colour
FAMILY_A = 1.7  # Zipf exponent of the colour families

KIND_WORD = {"dress": "Dress", "skirt": "Skirt", "top": "Blouse"}


def _far(a, b, d=160):
    return sum(abs(int(x) - int(y)) for x, y in zip(a, b)) > d


def _shade(rng, family):
    shades = dict(FAMILIES)[family]
    c = shades[int(rng.integers(len(shades)))]
    return tuple(int(v) for v in np.clip(np.array(c) + rng.integers(-15, 16, 3), 0, 255))


def _texture(rng, spec, L, look):
    tex = look.get("tex") or (zipf(rng, [m for m, _, _ in MOTIFS], 1.2) if rng.random() < 0.45 else None)
    if look.get("plain") or not tex:
        return
    _, classes, word = next(m for m in MOTIFS if m[0] == tex)
    spec["pattern"] = tex
    L[0].update(classes)
    if tex in SCALES:
        u = rng.random()
        scale = "small" if u < 0.08 else "large" if u < 0.14 else None
        cls = SCALES[tex][0 if scale == "small" else 1] if scale else None
        if cls:
            spec["pattern_scale"] = scale
            L[0].add(cls)
    if tex in ("floral", "animal") and "pattern_scale" not in spec:
        spec["pattern_scale"] = "medium"
    if word and rng.random() < NAMED_MOTIF:  # one shade of a named family, standing out from the garment
        fams = [f for f in FAMILY if "color" not in spec or _far(dict(FAMILIES)[f][0], spec["color"])]
        fam = zipf(rng, fams, FAMILY_A)
        spec["color2"] = _shade(rng, fam)
        L[0].add(f"{fam} {word}")
    elif word:
        spec["multicolor"] = True
    if tex == "floral" and rng.random() < 0.05:  # a tribal band above the hem
        spec["parts"].append("zigzag_border")
        L[0].add("tribal print")


def _fabric(rng, spec, L, look):
    fab = look.get("fab") or (zipf(rng, [f for f, _, _, _ in FABRICS], 1.2) if rng.random() < 0.44 else None)
    if not fab:
        return
    surface = next((f for f in FABRICS if f[0] == fab), None)
    finish = None
    if surface is None:  # a look names a finish: its surface
        surface = next(f for f in FABRICS if any(d == fab for d, _ in f[2]))
        finish = next((d, c) for d, c in surface[2] if d == fab)
    elif surface[2] and rng.random() < 0.18:
        finish = zipf(rng, surface[2], 0.8)
    key, classes, _, word = surface
    spec["fabric"] = finish[0] if finish else key
    L[1].update(classes)
    if finish:
        L[1].add(finish[1])
    if key == "denim":
        color = DENIM
        if spec["fabric"] != "acid" and rng.random() < 0.3:
            wash, color = zipf(rng, WASHES, 0.8)
            L[1].add(wash)
        spec["color"] = tuple(int(v) for v in np.clip(np.array(color) + rng.integers(-20, 21, 3), 0, 255))
        spec["parts"].append("stitch")
    if word:  # the garment colour is a shade of a named family
        fam = zipf(rng, FAMILY, FAMILY_A)
        spec["color"] = _shade(rng, fam)
        L[1].add(f"{fam} {word}")


def _shape(rng, spec, L, look, kind):
    spec["silhouette"], spec["waist_y"] = "straight", 0.22
    spec["hem_y"] = 0.5 if kind == "top" else 0.7
    if kind == "skirt":
        spec["waist_y"] = 0.26
    if not (rng.random() < 0.5 or "sil" in look or "len" in look or look.get("sleeveless")):
        return
    sil = look.get("sil") or (zipf(rng, [s for s, _ in SILS], 1.5) if rng.random() < 0.6 else None)
    if kind == "top" and sil not in TOP_SILS or kind == "skirt" and sil not in SKIRT_SILS:
        sil = None
    if sil:
        spec["silhouette"] = sil
        L[2].update(dict(SILS)[sil])
    ln = look.get("len")
    if kind == "top":
        if rng.random() < 0.5 or (not L[2] and rng.random() < 0.6):
            ln, spec["hem_y"] = zipf(rng, TOP_LENGTHS, 1.2)
            L[2].add(ln)
    elif ln or rng.random() < 0.42 or (not L[2] and rng.random() < 0.5):
        ln = ln or zipf(rng, [x for x, _ in LENGTHS], 0.25)
        spec["hem_y"] = dict(LENGTHS)[ln]
        L[2].add(ln)
        if ln != "knee-length":
            for s in L[2] & set(SIL_LENGTHS):
                L[2].add(f"{SIL_LENGTHS[s]} {ln}")
        if ln != "mini" and rng.random() < 0.12:
            spec["hem_shape"] = "highlow"
            L[2].add("high-low")
    if kind != "skirt" and (look.get("sleeveless") or rng.random() < 0.18):
        spec["sleeve_len"] = 0
        L[2].add("sleeveless")


def _parts(rng, spec, L, look, kind, any_label):
    forced = list(look.get("parts", []))
    n = len(forced) + (int(rng.choice([1, 1, 1, 1, 2, 2, 3])) if rng.random() < (0.52 if kind != "skirt" else 0.4) else 0)
    if not n and not any_label:  # every real image has at least one label
        n = 1
    groups = [(a, g) for a, g in ((a, [p for p in g if kind[0] in P[p][2]]) for a, g in PART_GROUPS) if g]
    bare = "sleeveless" in L[2] or spec.get("sleeve_len") == 0
    chosen, slots = [], set()
    tries = 0
    while len(chosen) < n and tries < 12:
        tries += 1
        if forced:  # a look's part, or any placement of a look's umbrella part
            p = forced.pop(0)
            if p in UMBRELLAS:
                p = zipf(rng, [c for _, g in groups for c in g if P[c][0] == p] or [p], 0.5)
                if p in UMBRELLAS:
                    continue
        else:
            a, group = zipf(rng, groups, 0.7)
            p = zipf(rng, group, a)
        umbrella, slot, kinds, changes, _, _ = P[p]
        if kind[0] not in kinds or slot in slots or (bare and (slot in ("sleeve", "sleeve_len") or changes.get("sleeves"))):
            continue
        if changes.get("bare") and (slots & {"sleeve", "sleeve_len"}):
            continue
        chosen.append(p)
        slots.add(slot)
        spec.update({a: v for a, v in changes.items() if a not in ("bare", "sleeves")})
        if changes.get("bare"):
            bare = True
            spec["sleeve_len"] = 0
            L[2].add("sleeveless")
    if spec.get("sleeve_len") == 1.0 and "long sleeve" not in chosen:  # a long sleeve shape is a long sleeve
        chosen.append("long sleeve")
    for p in chosen:
        umbrella, _, _, _, drawn, _ = P[p]
        L[3].add(p)
        if umbrella:
            L[3].add(umbrella)
        spec["parts"].extend(drawn)


def sample(rng: np.random.Generator) -> dict:
    """Sample one garment: its drawing spec and its labels {attribute index: set of class names}."""
    kind = zipf(rng, ["dress", "top", "skirt"], 0.6)
    look = dict(zipf(rng, LOOKS, 0.7)[1]) if rng.random() < 0.12 else {}
    if kind == "top" and ("len" in look or look.get("sil") not in (None, *TOP_SILS)):
        kind = "dress"
    if kind == "skirt" and (look.get("sleeveless") or look.get("sil") not in (None, *SKIRT_SILS)):
        kind = "dress"
    L = [set() for _ in ATTRIBUTES]
    spec = {"kind": kind, "parts": [], "hem_in_frame": True}  # lengths and hem parts show
    _fabric(rng, spec, L, look)
    _texture(rng, spec, L, look)
    _shape(rng, spec, L, look, kind)
    _parts(rng, spec, L, look, kind, any(L[:3]))
    flat = set().union(*L[:4])
    L[4].update(s for s, rule in STYLE_RULES if rule(flat, L))
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


HEM_CLASSES = {ln for ln, _ in LENGTHS + TOP_LENGTHS} | set(SIL_LENGTH) | {"high-low"}


def regions(rec: dict, boxes: dict) -> list:
    """Ground-truth boxes of the localised classes: every part (an umbrella class takes its placed
    part's box) and the length classes (the hem)."""
    out = []
    for p in sorted(rec["labels"][3], key=PART.index):
        if p in UMBRELLAS:
            continue
        umbrella, key = P[p][0], P[p][5]
        if key in boxes:
            for cls in (p, umbrella) if umbrella else (p,):
                out.append({"attribute": "part", "class": cls, "box": boxes[key]})
                if key == "sleeve" and "sleeve_right" in boxes:
                    out.append({"attribute": "part", "class": cls, "box": boxes["sleeve_right"]})
    for s in sorted(rec["labels"][2] & HEM_CLASSES, key=SHAPE.index):
        if "hem" in boxes:
            out.append({"attribute": "shape", "class": s, "box": boxes["hem"]})
    return out


def show(rec: dict) -> list[str]:
    return [f"{a[:3]}:{','.join(sorted(L))}" for a, L in zip(ATTRIBUTES, rec["labels"]) if L]
