"""Procedural garment drawing for the twins: one `render(spec, size, rng)` that turns a spec (what
the labels say) into an image plus the ground-truth boxes of the localised parts.

Geometry is in units of the image side (0..1) around a jittered centre, so every class maps to a
visible drawing parameter: silhouettes are width profiles, lengths are hem heights, sleeve
lengths are fractions of the (skin) arm, patterns (with their scale and colours) and fabrics (with
their finish) are surface fills/overlays, parts are drawn on top and boxed. Backgrounds, colours,
positions and noise are random (unless the spec fixes a colour) so that no two clean images are
perceptual near-duplicates. A spec key that a twin does not set draws as before, so adding drawing
parameters for one twin leaves the others' images unchanged.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

cv2.setNumThreads(1)

SKIN = [(150, 180, 225), (110, 150, 200), (70, 100, 150), (170, 200, 235), (95, 125, 175)]

# named fill colours (BGR) with their hue family; DARN's colour classes use these names
COLORS = {
    "red": (40, 40, 200), "orange": (30, 130, 240), "yellow": (40, 210, 235), "green": (60, 150, 50),
    "cyan": (200, 190, 40), "blue": (200, 90, 30), "purple": (140, 40, 120), "pink": (180, 130, 245),
    "brown": (40, 75, 120), "black": (30, 30, 30), "white": (245, 245, 245), "grey": (140, 140, 140),
}


def _jit(rng, c, amount=18):
    # clipped in Python: np.clip on one number costs more than the rest of the call
    return tuple(min(255, max(0, int(v + rng.integers(-amount, amount + 1)))) for v in c)


def random_color(rng, avoid=None):
    while True:
        c = tuple(int(v) for v in rng.integers(20, 236, size=3))
        if avoid is None or sum(abs(a - b) for a, b in zip(c, avoid)) > 160:
            return c


class Canvas:
    """Maps unit coordinates to pixels with a per-image centre, scale and offset."""

    def __init__(self, size, cx, top, k):
        self.S, self.cx, self.top, self.k = size, cx, top, k

    def p(self, x, y):
        """x: offset from the centre line, y: offset from the shoulder line (units of the side)."""
        return (int(round((self.cx + x * self.k) * self.S)), int(round((self.top + y * self.k) * self.S)))

    def d(self, v):
        return max(1, int(round(v * self.k * self.S)))


def _box(points, S):
    pts = np.asarray(points).reshape(-1, 2)
    x0, y0 = np.clip(pts.min(0), 0, S - 1)
    x1, y1 = np.clip(pts.max(0), 0, S - 1)
    return [int(x0), int(y0), int(x1), int(y1)]


# ----------------------------------------------------------------------------- surfaces

def pattern_fill(name, S, base, second, rng, scale=None, multi=False):
    """A full-canvas pattern image; the garment mask cuts it out. ``scale`` ('small' or 'large', for
    stripes, dots, checks, floral and abstract) draws the motif finer or coarser than the default
    ('medium', for floral and animal: the default motif, dense enough that a small garment shows it);
    ``multi`` draws each flower, dot, stripe or shape in one of four colours instead of ``second``."""
    img = np.empty((S, S, 3), np.uint8)
    img[:] = base
    ph = int(rng.integers(0, 12))
    palette = [random_color(rng, avoid=base) for _ in range(4)] if multi else None

    def col(i):  # the colour of the i-th motif element
        return palette[i % 4] if multi else second

    if name == "stripes" and scale == "small":
        name = "pinstripes"
    if name in ("stripes", "pinstripes"):
        period = int(rng.integers(9, 13)) if name == "stripes" else 5
        if scale == "large":
            period = int(rng.integers(18, 23))
        width = period // 2 if name == "stripes" else 1
        for i, y in enumerate(range(-ph, S, period)):
            img[max(0, y):max(0, y + width)] = col(i)
    elif name == "vstripes":
        period = int(rng.integers(9, 13))
        for i, x in enumerate(range(-ph, S, period)):
            img[:, max(0, x):max(0, x + period // 2)] = col(i)
    elif name in ("dots", "bigdots"):
        period, r = (7, 1) if name == "dots" else (13, 4)
        if scale:  # dense pin dots or large, sparse dots
            period, r = (5, 1) if scale == "small" else (19, 6)
        for i, y in enumerate(range(-ph, S + period, period)):
            for j, x in enumerate(range(-ph + (period // 2) * (i % 2), S + period, period)):
                cv2.circle(img, (x, y), r, col(i + j), -1, cv2.LINE_AA)
    elif name in ("checks", "plaid"):
        period = int(rng.integers(9, 13))
        if scale:
            period = int(rng.integers(4, 6)) if scale == "small" else int(rng.integers(20, 25))
        yy, xx = np.mgrid[0:S, 0:S]
        m = (((yy + ph) // period + (xx + ph) // period) % 2).astype(bool)
        img[m] = second
        if name == "plaid":
            third = _jit(rng, (255 - base[0], 255 - base[1], 255 - base[2]), 30)
            for v in range(ph % period + period // 2, S, period * 2):
                img[v:v + 1, :] = third
                img[:, v:v + 1] = third
    elif name == "floral":
        count, radius = {None: ((10, 16), (3, 6)), "medium": ((30, 40), (3, 6)), "small": ((70, 90), (2, 3)),
                         "large": ((12, 16), (8, 11))}[scale]
        for i in range(int(rng.integers(*count))):
            x, y = (int(v) for v in rng.integers(0, S, 2))
            r = int(rng.integers(*radius))
            for a in range(5):
                ang = a * 2 * math.pi / 5 + rng.random()
                cv2.circle(img, (int(x + r * math.cos(ang)), int(y + r * math.sin(ang))), max(2, r - 1), col(i), -1, cv2.LINE_AA)
            cv2.circle(img, (x, y), 2 if scale != "large" else 4, (40, 200, 240), -1)
    elif name == "zigzag":
        period = int(rng.integers(12, 17))
        third = _jit(rng, (20, 20, 20), 10)
        for k, y in enumerate(range(-ph, S + period, period)):
            pts = np.array([[x, y + (4 if (x // 6) % 2 else -4) * (1 if k % 2 else -1)] for x in range(0, S + 6, 6)], np.int32)
            cv2.polylines(img, [pts], False, second if k % 2 else third, 2, cv2.LINE_AA)
    elif name == "colorblock":
        if rng.random() < 0.5:
            img[:, S // 2 + int(rng.integers(-6, 7)):] = second
        else:
            img[S // 2 + int(rng.integers(-6, 7)):] = second
    elif name == "abstract":
        for i in range(int(rng.integers(7, 11)) if scale != "large" else int(rng.integers(3, 5))):
            pts = rng.integers(0, S, size=(3, 2)).astype(np.int32)
            if scale == "large":  # fewer, bigger shapes
                pts = ((pts - pts.mean(0)) * 2 + pts.mean(0)).astype(np.int32)
            cv2.fillPoly(img, [pts], _jit(rng, col(i), 60 if not multi else 10), cv2.LINE_AA)
    elif name == "animal":
        for _ in range(int(rng.integers(14, 20)) if scale != "medium" else int(rng.integers(50, 65))):
            c = tuple(int(v) for v in rng.integers(0, S, 2))
            ax = (int(rng.integers(3, 6)), int(rng.integers(2, 4)))
            cv2.ellipse(img, c, ax, float(rng.integers(0, 180)), 0, 360, second, -1)
            cv2.ellipse(img, c, ax, float(rng.integers(0, 180)), 0, 290, (25, 25, 25), 1)
    elif name == "paisley":  # teardrops with a curled tail and an eye
        for i in range(int(rng.integers(35, 45))):
            c = tuple(int(v) for v in rng.integers(0, S, 2))
            ang = float(rng.integers(0, 360))
            cv2.ellipse(img, c, (6, 4), ang, 0, 360, col(i), -1, cv2.LINE_AA)
            t = math.radians(ang)
            cv2.ellipse(img, (int(c[0] + 6 * math.cos(t)), int(c[1] + 6 * math.sin(t))), (4, 3), ang, 180, 330, col(i), 2, cv2.LINE_AA)
            cv2.circle(img, c, 1, base, -1)
    elif name == "hearts":
        for i in range(int(rng.integers(40, 50))):
            x, y = (int(v) for v in rng.integers(0, S, 2))
            cv2.circle(img, (x - 2, y), 3, col(i), -1, cv2.LINE_AA)
            cv2.circle(img, (x + 2, y), 3, col(i), -1, cv2.LINE_AA)
            cv2.fillPoly(img, [np.array([(x - 5, y + 1), (x + 5, y + 1), (x, y + 7)], np.int32)], col(i), cv2.LINE_AA)
    elif name == "stars":
        for i in range(int(rng.integers(40, 50))):
            x, y = (int(v) for v in rng.integers(0, S, 2))
            star = [(x + (6 if k % 2 == 0 else 2.5) * math.sin(k * math.pi / 5), y - (6 if k % 2 == 0 else 2.5) * math.cos(k * math.pi / 5))
                    for k in range(10)]
            cv2.fillPoly(img, [np.array(star, np.int32)], col(i), cv2.LINE_AA)
    elif name == "camo":  # three layers of soft blobs: the second colour, a darker and a lighter shade of it
        for i, shade in enumerate((0.55, 1.0, 1.35)):
            blob = np.zeros((S, S), np.float32)
            for _ in range(22):
                cv2.circle(blob, tuple(int(v) for v in rng.integers(0, S, 2)), int(rng.integers(5, 10)), 1.0, -1)
            blob = cv2.GaussianBlur(blob, (0, 0), 3.0) > 0.5
            c = col(i) if multi else tuple(int(min(255, v * shade)) for v in second)
            img[blob] = c
    elif name == "tiedye":  # rings spreading from a centre
        cx, cy = (int(v) for v in rng.integers(S // 4, 3 * S // 4, 2))
        yy, xx = np.mgrid[0:S, 0:S]
        w = (np.sin(np.hypot(xx - cx, yy - cy) / 3.0 + np.arctan2(yy - cy, xx - cx) * 2) + 1)[..., None] / 2
        img = (img * (1 - w) + np.array(col(0), np.float32) * w).astype(np.uint8)
    elif name == "graphic":
        pass  # drawn after the garment, on the chest
    # gentle shading so no fill is perfectly flat
    shade = np.linspace(-12, 12, S, dtype=np.float32)[:, None, None] * (1 if rng.random() < .5 else -1)
    return np.clip(img.astype(np.float32) + shade, 0, 255).astype(np.uint8)


def apply_fabric(img, mask, fabric, rng, outline_pts=None):
    """Fabric as a surface texture on the masked garment pixels."""
    S = img.shape[0]
    m = mask > 0
    f = img.astype(np.float32)
    yy, xx = np.mgrid[0:S, 0:S]
    if fabric in ("denim", "acid", "distressed"):
        hatch = (((xx + yy) % 3) == 0)[..., None] * -35.0
        f = np.where(m[..., None], f * 0.85 + hatch, f)
        if fabric == "distressed":  # frayed rips: clusters of short white threads
            rips = np.zeros((S, S), np.uint8)
            for _ in range(int(rng.integers(3, 6))):
                x, y = (int(v) for v in rng.integers(S // 4, 3 * S // 4, 2))
                for j in range(4):
                    cv2.line(rips, (x - 4 + j, y + 2 * j), (x + 3 + j, y + 2 * j), 255, 1)
            f[m & (rips > 0)] = 235
        if fabric == "acid":
            blot = np.zeros((S, S), np.float32)
            for _ in range(10):
                cv2.circle(blot, tuple(int(v) for v in rng.integers(0, S, 2)), int(rng.integers(3, 8)), 70.0, -1)
            blot = cv2.GaussianBlur(blot, (0, 0), 2.0)
            f = np.where(m[..., None], f + blot[..., None], f)
    elif fabric in ("knit", "cable", "rib", "chunky"):
        rib = ((xx % 4) < 1)[..., None] * -45.0
        if fabric == "rib":  # narrow, deep ribs with a highlight beside each
            rib = ((xx % 3) < 1)[..., None] * -70.0 + ((xx % 3) == 1)[..., None] * 25.0
        if fabric == "chunky":  # big loops in rows: a coarse gauge
            layer = np.zeros((S, S), np.float32)
            for y in range(0, S + 8, 8):
                for x in range((y // 8 % 2) * 4, S + 8, 8):
                    cv2.ellipse(layer, (x, y), (4, 3), 0, 0, 360, 1.0, 2)
            rib = layer[..., None] * -60.0
        f = np.where(m[..., None], f + rib, f)
        if fabric == "cable":
            layer = np.zeros((S, S), np.float32)
            for x in range(int(rng.integers(4, 9)), S, 14):
                for y in range(0, S, 8):
                    cv2.ellipse(layer, (x, y), (3, 5), 30 if (y // 8) % 2 else -30, 0, 360, 1.0, 1)
            f = np.where((m & (layer > 0))[..., None], f * 0.55, f)
    elif fabric == "eyelet":  # embroidered holes: a light ring around a dark hole, in a sparse grid
        ring, hole = np.zeros((S, S), np.uint8), np.zeros((S, S), bool)
        for y in range(3, S, 10):
            for x in range(3 + (y // 10 % 2) * 5, S, 10):
                cv2.circle(ring, (x, y), 2, 255, 1)
                hole[y, x] = True
        f[m & (ring > 0)] = 245 if not (m.any() and f[m].mean() > 170) else 70
        f[m & hole] *= 0.3
    elif fabric in ("lace", "crochet"):
        layer = np.zeros((S, S), np.uint8)
        step = 7 if fabric == "lace" else 6
        for y in range(0, S, step):
            for x in range((y // step % 2) * 3, S, step):
                if fabric == "lace":
                    cv2.circle(layer, (x, y), 2, 255, 1)
                else:
                    layer[y:y + 3, x:x + 3] = 255
        sel = m & (layer > 0)
        light = f[m].mean() > 170 if m.any() else False  # on a pale garment the lace is dark
        f[sel] = (60 if light else 250) if fabric == "lace" else f[sel] * 0.3 + (20 if light else 180)
    elif fabric in ("leather", "patent", "quilted"):
        f = np.where(m[..., None], f * 0.8, f)
        sheen = np.zeros((S, S), np.float32)
        x0 = int(rng.integers(S // 3, 2 * S // 3))
        cv2.line(sheen, (x0, 0), (x0 + 20, S), 120.0, 4)
        if fabric == "patent":  # high gloss: a second, sharper streak
            cv2.line(sheen, (x0 - 14, 0), (x0 + 6, S), 200.0, 2)
        sheen = cv2.GaussianBlur(sheen, (0, 0), 2.5 if fabric != "patent" else 1.2)
        f = np.where(m[..., None], f + sheen[..., None], f)
        if fabric == "quilted":  # diamond stitching
            seam = (((xx + yy) % 11) == 0) | (((xx - yy) % 11) == 0)
            f = np.where((m & seam)[..., None], f * 0.4, f)
    elif fabric == "suede":  # matte nap: darker, fine grain, no sheen
        grain = cv2.GaussianBlur(rng.normal(0, 14, (S, S)).astype(np.float32), (0, 0), 0.7)
        f = np.where(m[..., None], f * 0.75 + grain[..., None], f)
    elif fabric in ("satin", "metallic"):  # smooth diagonal sheen bands (metallic: harder, with glints)
        amp, period = (55.0, 38.0) if fabric == "satin" else (95.0, 22.0)
        band = np.sin((xx + yy * 0.6) * (2 * math.pi / period) + rng.random() * 6.3).astype(np.float32) * amp
        f = np.where(m[..., None], f + band[..., None], f)
        if fabric == "metallic":
            f[(rng.random((S, S)) < 0.05) & m] = 255
    elif fabric in ("velvet", "crushed"):  # deep pile with a soft highlight (crushed: blotchy)
        glow = np.zeros((S, S), np.float32)
        cv2.circle(glow, tuple(int(v) for v in rng.integers(S // 3, 2 * S // 3, 2)), S // 6, 90.0, -1)
        glow = cv2.GaussianBlur(glow, (0, 0), S / 10)
        if fabric == "crushed":
            glow += cv2.GaussianBlur(rng.normal(0, 60, (S, S)).astype(np.float32), (0, 0), 2.5)
        f = np.where(m[..., None], f * 0.75 + glow[..., None], f)
    elif fabric == "mesh":  # an open grid (the render blends it with what lies behind)
        grid = ((xx % 4) == 0) | ((yy % 4) == 0)
        f = np.where((m & grid)[..., None], f * 0.35, f)
    elif fabric == "corduroy":  # vertical wales
        wale = (((xx % 4) < 2) * 36.0 - 18.0).astype(np.float32)
        f = np.where(m[..., None], f + cv2.GaussianBlur(wale, (0, 0), 0.6)[..., None], f)
    elif fabric == "tweed":  # flecks of other colours
        fleck = (rng.random((S, S)) < 0.22) & m
        f[fleck] = rng.integers(30, 240, (int(fleck.sum()), 3))
    elif fabric == "linen":  # slubs: short, lighter horizontal threads
        slub = np.zeros((S, S), np.uint8)
        for _ in range(int(rng.integers(60, 80))):
            x, y = (int(v) for v in rng.integers(0, S, 2))
            cv2.line(slub, (x, y), (x + int(rng.integers(6, 16)), y), 255, 1)
        f = np.where(m[..., None], f * 0.92 + (slub > 0)[..., None] * 45.0, f)
    elif fabric == "pleated":  # knife pleats: a saw-tooth of light across the width
        saw = ((xx % 6) * 9.0 - 22.0).astype(np.float32)
        f = np.where(m[..., None], f + saw[..., None], f)
    elif fabric == "sequin":
        spark = (rng.random((S, S)) < 0.18) & m
        f[spark] = 255
        f[(rng.random((S, S)) < 0.1) & m] = (200, 220, 240)
    elif fabric == "fur":
        noise = rng.normal(0, 28, (S, S)).astype(np.float32)
        f = np.where(m[..., None], f + noise[..., None], f)
    return np.clip(f, 0, 255).astype(np.uint8)


# fabrics that let what lies behind show through: key -> opacity
SHEER = {"chiffon": 0.55, "pleated": 0.6, "sheer": 0.35, "mesh": 0.7}

# ----------------------------------------------------------------------------- garment pieces

SILHOUETTES = {
    # name: (shoulder, waist, hip, hem) half-widths at scale 1; hem may be overridden
    "straight": (0.14, 0.13, 0.14, 0.15),
    "fit": (0.14, 0.085, 0.12, 0.13),
    "fit_flare": (0.14, 0.08, 0.14, 0.27),
    "fit_pencil": (0.14, 0.08, 0.12, 0.085),
    "flare": (0.14, 0.12, 0.16, 0.27),
    "pencil": (0.14, 0.12, 0.13, 0.085),
    "aline": (0.13, 0.13, 0.17, 0.23),
    "boxy": (0.18, 0.18, 0.18, 0.18),
    "loose": (0.17, 0.17, 0.19, 0.2),
    "slim": (0.13, 0.08, 0.1, 0.1),
    "cocoon": (0.14, 0.2, 0.2, 0.1),
    "peplum": (0.14, 0.075, 0.17, 0.09),
    "mermaid": (0.14, 0.09, 0.1, 0.25),
    "tiered": (0.14, 0.11, 0.15, 0.24),
}


def body_profile(sil, top_y, waist_y, hem_y, skirt=False):
    sw, ww, hw, hemw = SILHOUETTES[sil]
    hip_y = waist_y + 0.09
    pts = []
    if not skirt:
        pts.append((sw, top_y))
        pts.append((sw * 0.97, top_y + 0.08))
    if sil == "peplum":
        pts += [(ww, waist_y), (hw, hip_y), (hw * 0.6, hip_y + 0.02), (hemw, hem_y)]
    elif sil == "mermaid":
        knee = waist_y + 0.7 * (hem_y - waist_y)
        pts += [(ww, waist_y), (hw, hip_y), (hw * 0.8, knee), (hemw, hem_y)]
    elif sil == "cocoon":
        pts += [(ww, waist_y), (hw, min(hip_y, hem_y - 0.01)), (hemw, hem_y)]
    else:
        pts += [(ww, waist_y)]
        if hip_y < hem_y - 0.02:
            t = (hip_y - waist_y) / max(hem_y - waist_y, 1e-6)
            pts.append((max(hw, ww + (hemw - ww) * t), hip_y))
        pts.append((hemw, hem_y))
    return pts


def _hem_arc(cv, prof, on):
    """Points of a high-low hem between the two hem corners (none for a straight hem)."""
    if not on:
        return []
    (hw, hem_y), (_, y_above) = prof[-1], prof[-2]
    depth = min(0.12, (hem_y - y_above) * 0.6)
    return [cv.p(t * hw, hem_y - depth * (1 - t * t) ** 0.5) for t in np.linspace(-1, 1, 11)[1:-1]]


def render(spec, size, rng):
    """Draw one garment spec. Returns (BGR uint8 image, {part name: [x0, y0, x1, y1]})."""
    S = size
    boxes = {}
    # background: colour, gradient, a faint prop, noise
    bg = np.array(spec.get("bg") or random_color(rng), np.float32)
    g = np.linspace(0, 1, S, dtype=np.float32)
    ang = rng.random() * 2 * math.pi
    grad = (math.cos(ang) * g[None, :] + math.sin(ang) * g[:, None])[..., None] * rng.uniform(-60, 60, 3).astype(np.float32)
    img = np.clip(bg + grad, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        c = tuple(int(v) for v in rng.integers(0, S, 2))
        cv2.circle(img, c, int(rng.integers(S // 8, S // 3)), _jit(rng, tuple(int(v) for v in bg), 90), -1, cv2.LINE_AA)
    if rng.random() < 0.6:  # floor / wall panel at a random height
        y = int(rng.integers(S // 2, S))
        img[y:] = _jit(rng, tuple(int(v) for v in bg), 100)

    zoom = spec.get("zoom", 1.0)
    k = rng.uniform(0.9, 1.04) * zoom
    cx = 0.5 + rng.uniform(-0.09, 0.09)
    top = rng.uniform(0.16, 0.21) if zoom == 1.0 else rng.uniform(0.02, 0.08) + spec.get("zoom_top", 0.0)
    if spec.get("hem_in_frame"):  # the hem and what hangs below it (fringe, ruffles) stay in the image
        need = spec.get("hem_y", 0.5) + 0.05
        if top + need * k > 0.96:
            top = max(0.12, 0.96 - need * k)
            k = min(k, (0.96 - top) / need)
    cv = Canvas(S, cx, top, k)
    skin = _jit(rng, SKIN[int(rng.integers(len(SKIN)))], 10)
    color = spec.get("color") or random_color(rng, avoid=tuple(int(v) for v in bg))
    while "color2" in spec and "color" not in spec and sum(abs(a - b) for a, b in zip(color, spec["color2"])) <= 160:
        color = random_color(rng, avoid=tuple(int(v) for v in bg))  # keep the ground away from a given motif colour
    second = spec.get("color2") or random_color(rng, avoid=color)
    kind = spec.get("kind", "dress")
    sil = spec.get("silhouette", "straight")
    waist_y, hem_y = spec.get("waist_y", 0.22), spec.get("hem_y", 0.5)

    # mannequin: head, neck, arms, legs (skin, so sleeve and hem lengths read against it)
    cv2.circle(img, cv.p(0, -0.1), cv.d(0.065), skin, -1, cv2.LINE_AA)
    hair = _jit(rng, (30, 40, 60), 25)
    cv2.ellipse(img, cv.p(0, -0.12), (cv.d(0.07), cv.d(0.05)), 0, 180, 360, hair, -1, cv2.LINE_AA)
    cv2.rectangle(img, cv.p(-0.025, -0.05), cv.p(0.025, 0.02), skin, -1)
    arm_spread = 0.11 if spec.get("sleeve_shape") != "batwing" else 0.13
    arms = []
    for side in (-1, 1):
        sh = (side * 0.13, 0.02)
        hand = (side * (0.13 + arm_spread), 0.5)
        arms.append((sh, hand))
        cv2.line(img, cv.p(*sh), cv.p(*hand), skin, cv.d(0.045), cv2.LINE_AA)
        cv2.circle(img, cv.p(*hand), cv.d(0.028), skin, -1, cv2.LINE_AA)
    for side in (-1, 1):
        cv2.line(img, cv.p(side * 0.05, 0.45), cv.p(side * 0.06, 1.0), skin, cv.d(0.05), cv2.LINE_AA)
        cv2.ellipse(img, cv.p(side * 0.07, 0.95), (cv.d(0.035), cv.d(0.015)), 0, 0, 360, (30, 30, 30), -1)

    # garment mask
    mask = np.zeros((S, S), np.uint8)
    outline = []
    highlow = spec.get("hem_shape") == "highlow"  # high-low hem: shorter in front, an arc up from the sides
    if kind in ("dress", "top", "coat", "jumpsuit"):
        prof = body_profile(sil, 0.0, waist_y, hem_y if kind != "jumpsuit" else 0.42)
        poly = [cv.p(-x, y) for x, y in prof] + _hem_arc(cv, prof, highlow) + [cv.p(x, y) for x, y in reversed(prof)]
        cv2.fillPoly(mask, [np.array(poly, np.int32)], 255, cv2.LINE_AA)
        outline.append(poly)
        if sil == "tiered":
            boxes["tiers"] = _box(poly, S)
    if kind in ("skirt",):
        prof = body_profile(sil, 0.0, waist_y, hem_y, skirt=True)
        poly = [cv.p(-x, y) for x, y in prof] + _hem_arc(cv, prof, highlow) + [cv.p(x, y) for x, y in reversed(prof)]
        cv2.fillPoly(mask, [np.array(poly, np.int32)], 255, cv2.LINE_AA)
        outline.append(poly)
    if kind in ("pants", "jumpsuit"):
        wy = waist_y if kind == "pants" else 0.3
        for side in (-1, 1):
            leg = [cv.p(side * 0.005, wy + 0.12), cv.p(side * 0.12, wy), cv.p(side * 0.125, wy + 0.14),
                   cv.p(side * 0.11, hem_y), cv.p(side * 0.025, hem_y)]
            cv2.fillPoly(mask, [np.array(leg, np.int32)], 255, cv2.LINE_AA)
            outline.append(leg)
        cv2.rectangle(mask, cv.p(-0.12, wy), cv.p(0.12, wy + 0.1), 255, -1)

    # sleeves
    sl = spec.get("sleeve_len", 0.3 if kind in ("dress", "top", "coat", "jumpsuit") else None)
    sshape = spec.get("sleeve_shape", "straight")
    if sl and kind in ("dress", "top", "coat", "jumpsuit"):
        for side, (sh, hand) in zip((-1, 1), arms):
            sh = (sh[0] + side * 0.01, sh[1] - 0.01)
            ex, ey = sh[0] + (hand[0] - sh[0]) * sl, sh[1] + (hand[1] - sh[1]) * sl
            L = math.hypot(hand[0] - sh[0], hand[1] - sh[1])
            nx, ny = -(hand[1] - sh[1]) / L, (hand[0] - sh[0]) / L
            w0, w1 = 0.04, 0.035
            if sshape in ("bell", "ruffle"):
                w1 = 0.075
            elif sshape == "tight":
                w0, w1 = 0.03, 0.026
            elif sshape == "bishop":
                w1 = 0.06
            poly = [(sh[0] + nx * w0, sh[1] + ny * w0), (ex + nx * w1, ey + ny * w1),
                    (ex - nx * w1, ey - ny * w1), (sh[0] - nx * w0, sh[1] - ny * w0)]
            if sshape == "batwing":
                poly = [(sh[0] + nx * w0, sh[1] + ny * w0), (ex + nx * w1, ey + ny * w1),
                        (ex - nx * w1, ey - ny * w1), (side * 0.1, waist_y)]
            pts = [cv.p(*q) for q in poly]
            cv2.fillPoly(mask, [np.array(pts, np.int32)], 255, cv2.LINE_AA)
            if sshape == "puff":
                cv2.circle(mask, cv.p(sh[0] + side * 0.01, sh[1] + 0.03), cv.d(0.06), 255, -1, cv2.LINE_AA)
                pts = pts + [cv.p(sh[0] + side * 0.07, sh[1] + 0.09)]
            if sshape == "lantern":
                mx, my = (sh[0] + ex) / 2, (sh[1] + ey) / 2
                cv2.ellipse(mask, cv.p(mx, my), (cv.d(0.06), cv.d(0.06 * max(sl, 0.4))), 0, 0, 360, 255, -1)
            if sshape == "bishop":
                cv2.circle(mask, cv.p(ex, ey), cv.d(0.05), 255, -1, cv2.LINE_AA)
            outline.append(pts)
            boxes.setdefault("sleeves", []).append(_box(pts, S))
    if "sleeves" in boxes:
        bs = boxes.pop("sleeves")
        boxes["sleeve"] = bs[0]
        boxes["sleeve_right"] = bs[1]

    # surface: pattern, then fabric
    pat = spec.get("pattern", "solid")
    fill = pattern_fill(pat, S, color, second, rng, spec.get("pattern_scale"), spec.get("multicolor", False))
    m3 = (mask > 127)[..., None]
    garment = np.where(m3, fill, img)
    fabric = spec.get("fabric")
    if fabric:
        garment = apply_fabric(garment, mask, fabric, rng)
    if fabric in SHEER:
        a = SHEER[fabric]
        garment = np.where(m3, (a * garment + (1 - a) * img).astype(np.uint8), img)
    img = garment
    for poly in outline:
        cv2.polylines(img, [np.array(poly, np.int32)], True, _jit(rng, tuple(int(v * 0.5) for v in color), 5), 1, cv2.LINE_AA)
    if fabric == "fur":
        for poly in outline:
            for (x0, y0), (x1, y1) in zip(poly, poly[1:] + poly[:1]):
                for t in np.linspace(0, 1, 8):
                    x, y = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
                    dx, dy = rng.integers(-4, 5, 2)
                    cv2.line(img, (int(x), int(y)), (int(x + dx), int(y + dy)), _jit(rng, color, 40), 1)
    if spec.get("sleeve_shape") == "cuffed" and "sleeve" in boxes:
        for side, (sh, hand) in zip((-1, 1), arms):
            ex, ey = sh[0] + (hand[0] - sh[0]) * sl, sh[1] + (hand[1] - sh[1]) * sl
            cv2.circle(img, cv.p(ex, ey), cv.d(0.035), _jit(rng, second, 5), -1, cv2.LINE_AA)
    if spec.get("sleeve_shape") == "ruffle" and "sleeve" in boxes:
        for side, (sh, hand) in zip((-1, 1), arms):
            ex, ey = sh[0] + (hand[0] - sh[0]) * sl, sh[1] + (hand[1] - sh[1]) * sl
            for j in range(-2, 3):
                cv2.circle(img, cv.p(ex + j * 0.025, ey + 0.01), cv.d(0.015), (250, 250, 250), 1, cv2.LINE_AA)
    if spec.get("sleeve_shape") == "cold_shoulder" and "sleeve" in boxes:
        for side in (-1, 1):
            cv2.ellipse(img, cv.p(side * 0.16, 0.06), (cv.d(0.025), cv.d(0.03)), 0, 0, 360, skin, -1, cv2.LINE_AA)
    if spec.get("sleeve_shape") == "raglan" and "sleeve" in boxes:
        for side in (-1, 1):
            cv2.line(img, cv.p(side * 0.04, 0.0), cv.p(side * 0.13, 0.13), _jit(rng, second, 5), cv.d(0.018), cv2.LINE_AA)
    if spec.get("sleeve_shape") == "split" and "sleeve" in boxes:
        for side, (sh, hand) in zip((-1, 1), arms):
            ex, ey = sh[0] + (hand[0] - sh[0]) * sl, sh[1] + (hand[1] - sh[1]) * sl
            mx, my = sh[0] + (hand[0] - sh[0]) * sl * 0.5, sh[1] + (hand[1] - sh[1]) * sl * 0.5
            cv2.line(img, cv.p(mx, my), cv.p(ex, ey), skin, cv.d(0.015))
    if sil == "tiered" and kind in ("dress", "skirt"):
        for t in (0.45, 0.72):
            y = waist_y + (hem_y - waist_y) * t
            tier = img.copy()
            cv2.line(tier, cv.p(-0.3, y), cv.p(0.3, y), _jit(rng, tuple(int(v * 0.5) for v in color), 5), cv.d(0.015))
            img = np.where(m3, tier, img)
    if pat == "graphic":
        c = cv.p(0, 0.13)
        cv2.circle(img, c, cv.d(0.06), second, -1, cv2.LINE_AA)
        cv2.drawMarker(img, c, (255, 255, 255), cv2.MARKER_STAR, cv.d(0.07), 2)
        boxes["graphic"] = _box([cv.p(-0.06, 0.07), cv.p(0.06, 0.19)], S)

    top_cover = kind in ("dress", "top", "coat", "jumpsuit")
    # necklines: skin cut into the garment
    nl = spec.get("neckline", "round" if top_cover else None)
    if nl and top_cover:
        pts = None
        if nl == "round":
            cv2.ellipse(img, cv.p(0, 0.0), (cv.d(0.055), cv.d(0.045)), 0, 0, 180, skin, -1, cv2.LINE_AA)
            pts = [cv.p(-0.055, 0), cv.p(0.055, 0.045)]
        elif nl in ("v", "deepv"):
            depth = 0.1 if nl == "v" else 0.2
            pts = [cv.p(-0.06, -0.005), cv.p(0.06, -0.005), cv.p(0, depth)]
            cv2.fillPoly(img, [np.array(pts, np.int32)], skin, cv2.LINE_AA)
        elif nl == "square":
            pts = [cv.p(-0.065, -0.005), cv.p(0.065, 0.08)]
            cv2.rectangle(img, pts[0], pts[1], skin, -1)
        elif nl == "straight":
            pts = [cv.p(-0.11, -0.005), cv.p(0.11, 0.025)]
            cv2.rectangle(img, pts[0], pts[1], skin, -1)
        elif nl in ("strapless", "sweetheart", "off_shoulder"):
            y = 0.08 if nl != "off_shoulder" else 0.055
            pts = [cv.p(-0.2, -0.03), cv.p(0.2, y)]
            cv2.rectangle(img, pts[0], pts[1], skin, -1)
            for side in (-1, 1):  # skin arms back over the removed shoulders
                cv2.line(img, cv.p(side * 0.13, 0.02), cv.p(side * 0.16, y), skin, cv.d(0.045))
            if nl == "sweetheart":
                for side in (-1, 1):
                    cv2.circle(img, cv.p(side * 0.04, y), cv.d(0.04), skin, -1, cv2.LINE_AA)
                pts = [cv.p(-0.2, -0.03), cv.p(0.2, y + 0.04)]
            if nl == "off_shoulder":
                cv2.rectangle(img, cv.p(-0.22, y), cv.p(0.22, y + 0.03), color, -1)
                pts = [cv.p(-0.22, -0.03), cv.p(0.22, y + 0.03)]
        elif nl == "one_shoulder":
            pts = [cv.p(-0.2, -0.03), cv.p(0.05, -0.03), cv.p(-0.16, 0.1), cv.p(-0.2, 0.1)]
            cv2.fillPoly(img, [np.array(pts, np.int32)], skin, cv2.LINE_AA)
            cv2.line(img, cv.p(-0.13, 0.02), cv.p(-0.2, 0.1), skin, cv.d(0.045))
        elif nl == "halter":
            for side in (-1, 1):
                tri = [cv.p(side * 0.03, -0.03), cv.p(side * 0.2, -0.03), cv.p(side * 0.2, 0.12), cv.p(side * 0.09, 0.12)]
                cv2.fillPoly(img, [np.array(tri, np.int32)], skin, cv2.LINE_AA)
            pts = [cv.p(-0.2, -0.03), cv.p(0.2, 0.12)]
        elif nl == "boat":
            cv2.ellipse(img, cv.p(0, -0.005), (cv.d(0.11), cv.d(0.025)), 0, 0, 180, skin, -1, cv2.LINE_AA)
            pts = [cv.p(-0.11, -0.005), cv.p(0.11, 0.02)]
        if pts is not None:
            boxes["neckline"] = _box(pts, S)

    dark = tuple(int(v * 0.45) for v in color)
    light = (235, 235, 235)
    # neck designs
    nd = spec.get("neck")
    if nd:
        h = {"turtle": 0.075, "lowturtle": 0.035, "ruffle": 0.05, "draped": 0.0}[nd]
        if nd == "draped":
            for j in range(3):
                cv2.ellipse(img, cv.p(0, 0.0), (cv.d(0.08 - 0.02 * j), cv.d(0.05 + 0.03 * j)), 0, 20, 160, dark, cv.d(0.012), cv2.LINE_AA)
            boxes["neck"] = _box([cv.p(-0.08, 0.0), cv.p(0.08, 0.14)], S)
        else:
            p0, p1 = cv.p(-0.04, -h), cv.p(0.04, 0.015)
            cv2.rectangle(img, p0, p1, color, -1)
            for y in range(p0[1], p1[1], 3):
                cv2.line(img, (p0[0], y), (p1[0], y), dark, 1)
            if nd == "ruffle":
                for j in range(-2, 3):
                    cv2.circle(img, cv.p(j * 0.02, -h), cv.d(0.013), light, -1, cv2.LINE_AA)
            boxes["neck"] = _box([p0, p1], S)
    # collars
    col = spec.get("collar")
    if col:
        if col == "shirt":
            for side in (-1, 1):
                tri = [cv.p(side * 0.005, 0.0), cv.p(side * 0.06, -0.02), cv.p(side * 0.045, 0.06)]
                cv2.fillPoly(img, [np.array(tri, np.int32)], light, cv2.LINE_AA)
                cv2.polylines(img, [np.array(tri, np.int32)], True, dark, 1, cv2.LINE_AA)
            boxes["collar"] = _box([cv.p(-0.06, -0.02), cv.p(0.06, 0.06)], S)
        elif col == "peterpan":
            for side in (-1, 1):
                cv2.ellipse(img, cv.p(side * 0.03, 0.0), (cv.d(0.035), cv.d(0.035)), 0, 0, 180, light, -1, cv2.LINE_AA)
                cv2.ellipse(img, cv.p(side * 0.03, 0.0), (cv.d(0.035), cv.d(0.035)), 0, 0, 180, dark, 1, cv2.LINE_AA)
            boxes["collar"] = _box([cv.p(-0.065, 0.0), cv.p(0.065, 0.035)], S)
        elif col == "puritan":
            cv2.ellipse(img, cv.p(0, -0.005), (cv.d(0.15), cv.d(0.09)), 0, 0, 180, light, -1, cv2.LINE_AA)
            cv2.ellipse(img, cv.p(0, -0.005), (cv.d(0.04), cv.d(0.03)), 0, 0, 180, skin, -1, cv2.LINE_AA)
            boxes["collar"] = _box([cv.p(-0.15, -0.005), cv.p(0.15, 0.085)], S)
        elif col in ("rib", "stand"):
            p0, p1 = cv.p(-0.05, -0.03 if col == "stand" else -0.01), cv.p(0.05, 0.02)
            cv2.rectangle(img, p0, p1, dark if col == "rib" else light, -1)
            if col == "rib":
                for x in range(p0[0], p1[0], 2):
                    cv2.line(img, (x, p0[1]), (x, p1[1]), color, 1)
            boxes["collar"] = _box([p0, p1], S)
        elif col == "hood":
            cv2.ellipse(img, cv.p(0, -0.08), (cv.d(0.1), cv.d(0.11)), 0, 180, 360, color, cv.d(0.035), cv2.LINE_AA)
            cv2.line(img, cv.p(-0.1, -0.08), cv.p(-0.08, 0.02), color, cv.d(0.035))
            cv2.line(img, cv.p(0.1, -0.08), cv.p(0.08, 0.02), color, cv.d(0.035))
            boxes["collar"] = _box([cv.p(-0.12, -0.2), cv.p(0.12, 0.02)], S)
    # lapels (open front)
    lap = spec.get("lapel")
    if lap:
        inner = _jit(rng, (230, 230, 230) if sum(color) < 400 else (40, 40, 40), 10)
        y_end = min(hem_y, 0.45) if kind != "skirt" else 0.3
        cv2.fillPoly(img, [np.array([cv.p(-0.045, 0.0), cv.p(0.045, 0.0), cv.p(0.0, 0.2)], np.int32)], inner)
        cv2.line(img, cv.p(0, 0.2), cv.p(0, y_end), dark, 1)
        if lap == "notched":
            for side in (-1, 1):
                tri = [cv.p(side * 0.045, 0.0), cv.p(side * 0.1, 0.02), cv.p(side * 0.075, 0.06), cv.p(side * 0.095, 0.075), cv.p(side * 0.005, 0.2)]
                cv2.fillPoly(img, [np.array(tri, np.int32)], dark, cv2.LINE_AA)
        elif lap in ("shawl", "plusshawl"):
            w = 0.035 if lap == "shawl" else 0.07
            for side in (-1, 1):
                cv2.ellipse(img, cv.p(side * 0.045, 0.1), (cv.d(w), cv.d(0.1)), 0, 90 - side * 90, 90 + side * 90 if side > 0 else 270, dark, -1, cv2.LINE_AA)
        boxes["lapel"] = _box([cv.p(-0.11, 0.0), cv.p(0.11, 0.2)], S)
    # parts
    parts = spec.get("parts", [])
    wy = 0.0 if kind != "skirt" else waist_y
    if "belt" in parts:
        hw = SILHOUETTES[sil][1] + 0.01
        p0, p1 = cv.p(-hw, waist_y - 0.015), cv.p(hw, waist_y + 0.015)
        cv2.rectangle(img, p0, p1, (25, 25, 25), -1)
        cv2.rectangle(img, cv.p(-0.018, waist_y - 0.02), cv.p(0.018, waist_y + 0.02), (60, 200, 230), 1)
        boxes["belt"] = _box([p0, p1], S)
    if "buttons" in parts or "buttons2" in parts or "one_button" in parts or "two_buttons" in parts or "three_buttons" in parts:
        y0 = 0.06 if kind != "skirt" else waist_y + 0.02
        y1 = min(hem_y - 0.04, 0.42)
        if "one_button" in parts:
            ys, xs = [waist_y], [0.0]
        elif "two_buttons" in parts:
            ys, xs = [waist_y - 0.04, waist_y + 0.04], [0.0]
        elif "three_buttons" in parts:
            ys, xs = [waist_y - 0.06, waist_y, waist_y + 0.06], [0.0]
        else:
            ys = list(np.linspace(y0, y1, 5))
            xs = [0.0] if "buttons" in parts else [-0.035, 0.035]
        pts = []
        for x in xs:
            for y in ys:
                cv2.circle(img, cv.p(x, y), cv.d(0.013), light if sum(color) < 450 else (20, 20, 20), -1, cv2.LINE_AA)
                pts += [cv.p(x - 0.015, y - 0.015), cv.p(x + 0.015, y + 0.015)]
        boxes["buttons"] = _box(pts, S)
    if "zipper" in parts:
        y0 = 0.02 if kind != "skirt" else waist_y
        y1 = min(hem_y - 0.02, 0.45) if kind != "skirt" else waist_y + 0.12
        cv2.line(img, cv.p(0, y0), cv.p(0, y1), (190, 190, 190), cv.d(0.01))
        for y in np.arange(y0, y1, 0.018):
            cv2.line(img, cv.p(-0.012, y), cv.p(0.012, y), (110, 110, 110), 1)
        cv2.rectangle(img, cv.p(-0.012, y0), cv.p(0.012, y0 + 0.03), (200, 200, 200), -1)
        boxes["zipper"] = _box([cv.p(-0.015, y0), cv.p(0.015, y1)], S)
    if "pocket" in parts:
        py = min(waist_y + 0.07, hem_y - 0.08)
        pts = []
        for side in ((-1, 1) if rng.random() < 0.7 else (-1,)):
            p0, p1 = cv.p(side * 0.06 - 0.03, py), cv.p(side * 0.06 + 0.03, py + 0.06)
            cv2.rectangle(img, p0, p1, dark, 1)
            cv2.line(img, p0, (p1[0], p0[1]), dark, 2)
            pts += [p0, p1]
        boxes["pocket"] = _box(pts, S)
    if "side_pocket" in parts:  # slanted openings at both hips
        hy = min(waist_y + 0.03, hem_y - 0.1)
        hw = SILHOUETTES[sil][2] - 0.01
        pts = []
        for side in (-1, 1):
            a, b = cv.p(side * (hw - 0.05), hy), cv.p(side * hw, hy + 0.07)
            cv2.line(img, a, b, dark, 2, cv2.LINE_AA)
            pts += [a, b]
        boxes["pocket"] = _box(pts, S)
    if "chest_pocket" in parts:  # one small pocket on the left of the chest
        p0, p1 = cv.p(-0.1, 0.07), cv.p(-0.05, 0.12)
        cv2.rectangle(img, p0, p1, dark, 1)
        cv2.line(img, p0, (p1[0], p0[1]), dark, 2)
        boxes["pocket"] = _box([p0, p1], S)
    if "side_zip" in parts:  # a short zip down one side from the waist
        x = SILHOUETTES[sil][1] - 0.015
        cv2.line(img, cv.p(x, waist_y - 0.08), cv.p(x, waist_y + 0.08), (190, 190, 190), cv.d(0.01))
        for y in np.arange(waist_y - 0.08, waist_y + 0.08, 0.018):
            cv2.line(img, cv.p(x - 0.01, y), cv.p(x + 0.01, y), (110, 110, 110), 1)
        boxes["zipper"] = _box([cv.p(x - 0.015, waist_y - 0.08), cv.p(x + 0.015, waist_y + 0.08)], S)
    if "kangaroo" in parts:
        p0, p1 = cv.p(-0.08, waist_y + 0.02), cv.p(0.08, waist_y + 0.1)
        cv2.rectangle(img, p0, p1, dark, 1)
        boxes["pocket"] = _box([p0, p1], S)
    if "drawstring" in parts:
        for side in (-1, 1):
            cv2.line(img, cv.p(side * 0.02, 0.01), cv.p(side * 0.025, 0.12), light, 1)
        boxes["buttons"] = boxes["drawstring"] = _box([cv.p(-0.03, 0.01), cv.p(0.03, 0.12)], S)
    if "bow" in parts:  # tie waist: a sash in the second colour, knotted in a bow
        hw = SILHOUETTES[sil][1] + 0.01
        cv2.rectangle(img, cv.p(-hw, waist_y - 0.012), cv.p(hw, waist_y + 0.012), second, -1)
        for side in (-1, 1):
            tri = [cv.p(0, waist_y), cv.p(side * 0.05, waist_y - 0.03), cv.p(side * 0.05, waist_y + 0.03)]
            cv2.fillPoly(img, [np.array(tri, np.int32)], second, cv2.LINE_AA)
            cv2.line(img, cv.p(side * 0.01, waist_y), cv.p(side * 0.03, waist_y + 0.09), second, cv.d(0.012), cv2.LINE_AA)
        cv2.circle(img, cv.p(0, waist_y), cv.d(0.012), dark, -1)
        boxes["belt"] = _box([cv.p(-hw, waist_y - 0.03), cv.p(hw, waist_y + 0.09)], S)
    if "toggle" in parts:
        pts = []
        for y in (0.08, 0.16, 0.24):
            cv2.ellipse(img, cv.p(0, y), (cv.d(0.025), cv.d(0.008)), 0, 0, 360, (60, 120, 170), -1)
            pts += [cv.p(-0.03, y - 0.01), cv.p(0.03, y + 0.01)]
        boxes["buttons"] = _box(pts, S)
    if "half_placket" in parts:
        cv2.rectangle(img, cv.p(-0.015, 0.0), cv.p(0.015, 0.12), dark, 1)
        for y in (0.03, 0.07, 0.1):
            cv2.circle(img, cv.p(0, y), cv.d(0.009), light, -1)
        boxes["buttons"] = _box([cv.p(-0.015, 0.0), cv.p(0.015, 0.12)], S)
    if "side_buttons" in parts:
        for y in np.linspace(0.05, 0.3, 5):
            cv2.circle(img, cv.p(0.09, y), cv.d(0.011), light, -1)
        boxes["buttons"] = _box([cv.p(0.075, 0.04), cv.p(0.105, 0.31)], S)
    if "snap" in parts:
        pts = []
        for y in np.linspace(0.05, 0.35, 4):
            cv2.circle(img, cv.p(0, y), cv.d(0.016), (200, 200, 200), 1)
            cv2.circle(img, cv.p(0, y), 1, (200, 200, 200), -1)
            pts += [cv.p(-0.017, y - 0.017), cv.p(0.017, y + 0.017)]
        boxes["buttons"] = _box(pts, S)
    if "trim" in parts:
        hw_ = SILHOUETTES[sil][3] + 0.01
        p0, p1 = cv.p(-hw_, hem_y - 0.035), cv.p(hw_, hem_y)
        band = np.zeros((S, S), np.uint8)
        cv2.rectangle(band, p0, p1, 255, -1)
        sel = (band > 0) & (mask > 127)
        img[sel] = _jit(rng, (255 - color[0], 255 - color[1], 255 - color[2]), 5)
        boxes["trim"] = _box([p0, p1], S)
    if "lace_trim" in parts:  # a lace band along the hem (white; dark on a pale garment)
        hw_ = SILHOUETTES[sil][3]
        band = img.copy()
        lace = (245, 245, 245) if sum(color) < 500 else (60, 60, 60)
        for x in np.arange(-hw_, hw_ + 0.001, 0.022):
            cv2.circle(band, cv.p(x, hem_y - 0.015), cv.d(0.011), lace, 1, cv2.LINE_AA)
        cv2.line(band, cv.p(-hw_, hem_y - 0.03), cv.p(hw_, hem_y - 0.03), lace, 1)
        img = np.where(m3, band, img)
        boxes["trim"] = _box([cv.p(-hw_, hem_y - 0.035), cv.p(hw_, hem_y)], S)
    if "ruffle" in parts:
        hw_ = SILHOUETTES[sil][3]
        pts = []
        for x in np.arange(-hw_, hw_ + 0.001, 0.035):
            cv2.circle(img, cv.p(x, hem_y), cv.d(0.02), light, -1, cv2.LINE_AA)
            pts += [cv.p(x - 0.02, hem_y - 0.02), cv.p(x + 0.02, hem_y + 0.02)]
        boxes["ruffle"] = _box(pts, S)
    if "slit" in parts:
        side = 1 if rng.random() < 0.5 else -1
        hw_ = SILHOUETTES[sil][3]
        x = side * hw_ * 0.5 if spec.get("slit_at") != "front" else 0.0
        tri = [cv.p(x - 0.025, hem_y + 0.003), cv.p(x + 0.025, hem_y + 0.003), cv.p(x, hem_y - 0.16)]
        cv2.fillPoly(img, [np.array(tri, np.int32)], skin, cv2.LINE_AA)
        boxes["slit"] = _box(tri, S)
    if "cutout" in parts:
        side = 1 if rng.random() < 0.5 else -1
        c = cv.p(side * 0.06, waist_y)
        cv2.ellipse(img, c, (cv.d(0.035), cv.d(0.025)), 0, 0, 360, skin, -1, cv2.LINE_AA)
        boxes["cutout"] = _box([cv.p(side * 0.06 - 0.035, waist_y - 0.025), cv.p(side * 0.06 + 0.035, waist_y + 0.025)], S)
    if "laceup" in parts:  # criss-cross laces down the front
        pts = []
        for y in np.arange(0.03, 0.2, 0.03):
            cv2.line(img, cv.p(-0.02, y), cv.p(0.02, y + 0.03), light, 1, cv2.LINE_AA)
            cv2.line(img, cv.p(0.02, y), cv.p(-0.02, y + 0.03), light, 1, cv2.LINE_AA)
            pts += [cv.p(-0.025, y), cv.p(0.025, y + 0.03)]
        boxes["laceup"] = _box(pts, S)
    if "wrap" in parts:  # wrap front: the overlap runs from one shoulder to the other side of the waist
        a, b = cv.p(-0.1, 0.0), cv.p(0.1, waist_y)
        cv2.line(img, a, b, dark, max(1, cv.d(0.012)), cv2.LINE_AA)
        cv2.circle(img, b, cv.d(0.015), dark, -1, cv2.LINE_AA)
        boxes["wrap"] = _box([a, b, cv.p(0.115, waist_y + 0.015)], S)
    if "chain" in parts:  # chain belt: gold links across the waist
        hw = SILHOUETTES[sil][1] + 0.01
        for x in np.arange(-hw, hw + 0.001, 0.02):
            cv2.circle(img, cv.p(x, waist_y), cv.d(0.008), (60, 190, 225), 1, cv2.LINE_AA)
        boxes["belt"] = _box([cv.p(-hw, waist_y - 0.012), cv.p(hw, waist_y + 0.012)], S)
    if "fringe" in parts:  # threads hanging below the hem
        hw_ = SILHOUETTES[sil][3]
        for x in np.arange(-hw_, hw_ + 0.001, 0.012):
            cv2.line(img, cv.p(x, hem_y), cv.p(x, hem_y + 0.045), dark, 1, cv2.LINE_AA)
        boxes["fringe"] = _box([cv.p(-hw_, hem_y - 0.005), cv.p(hw_, hem_y + 0.045)], S)
    if "scallop" in parts:  # scalloped hem: half discs of the garment below the hem line
        hw_ = SILHOUETTES[sil][3]
        for x in np.arange(-hw_ + 0.02, hw_, 0.04):
            cv2.ellipse(img, cv.p(x, hem_y), (cv.d(0.02), cv.d(0.02)), 0, 0, 180, color, -1, cv2.LINE_AA)
            cv2.ellipse(img, cv.p(x, hem_y), (cv.d(0.02), cv.d(0.02)), 0, 0, 180, dark, 1, cv2.LINE_AA)
        boxes["scallop"] = _box([cv.p(-hw_, hem_y - 0.01), cv.p(hw_, hem_y + 0.022)], S)
    if "keyhole" in parts:  # a small opening below the neckline
        cv2.ellipse(img, cv.p(0, 0.075), (cv.d(0.018), cv.d(0.03)), 0, 0, 360, skin, -1, cv2.LINE_AA)
        boxes["cutout"] = _box([cv.p(-0.02, 0.045), cv.p(0.02, 0.105)], S)
    if "strap" in parts:
        pts = []
        for side in (-1, 1):
            a, b = cv.p(side * 0.09, 0.085), cv.p(side * 0.1, -0.01)
            cv2.line(img, a, b, dark, max(1, cv.d(0.012)), cv2.LINE_AA)
            cv2.line(img, cv.p(side * 0.05, 0.085), b, dark, max(1, cv.d(0.008)), cv2.LINE_AA)
            pts += [a, b, cv.p(side * 0.05, 0.085)]
        boxes["strap"] = _box(pts, S)
    if "zigzag_border" in parts:  # tribal band above the hem
        hw_ = SILHOUETTES[sil][3]
        band = img.copy()
        y = hem_y - 0.06
        pts = np.array([cv.p(x, y + (0.015 if j % 2 else -0.015)) for j, x in enumerate(np.arange(-hw_ - 0.05, hw_ + 0.05, 0.025))], np.int32)
        cv2.polylines(band, [pts], False, (20, 20, 20), max(1, cv.d(0.015)), cv2.LINE_AA)
        cv2.polylines(band, [pts + np.array([0, cv.d(0.03)])], False, _jit(rng, second, 5), max(1, cv.d(0.012)), cv2.LINE_AA)
        img = np.where(m3, band, img)
    if "stitch" in parts:  # denim topstitching
        hw_ = SILHOUETTES[sil][3]
        for x in np.arange(-hw_, hw_, 0.03):
            cv2.line(img, cv.p(x, hem_y - 0.02), cv.p(x + 0.015, hem_y - 0.02), (60, 150, 230), 1)
    # hem box (for length classes)
    if kind != "pants":
        hw_ = SILHOUETTES[sil][3]
        boxes["hem"] = _box([cv.p(-hw_ - 0.02, hem_y - 0.04), cv.p(hw_ + 0.02, hem_y + 0.02)], S)
    else:
        boxes["hem"] = _box([cv.p(-0.14, hem_y - 0.04), cv.p(0.14, hem_y + 0.02)], S)
    if kind in ("dress", "skirt", "top", "coat", "jumpsuit"):
        boxes["body"] = _box(np.concatenate([np.array(p).reshape(-1, 2) for p in outline]), S)
    # occluder (FashionAI 'Invisible'): a hand bag / hair / out of frame
    occ = spec.get("occlude")
    if occ == "neck":
        cv2.ellipse(img, cv.p(0, -0.02), (cv.d(0.12), cv.d(0.1)), 0, 0, 360, hair, -1, cv2.LINE_AA)
        for side in (-1, 1):
            cv2.line(img, cv.p(side * 0.09, -0.05), cv.p(side * 0.11, 0.14), hair, cv.d(0.05))

    # sensor noise
    noise = rng.normal(0, 3.0, img.shape).astype(np.float32)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    # clip boxes to degenerate-free form
    clean = {}
    for k_, b in boxes.items():
        if b[2] > b[0] and b[3] > b[1]:
            clean[k_] = b
    return img, clean
