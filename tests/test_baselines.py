"""The baselines (ASEN, ASEN_v2, ASEN++, MODC): shapes, attention against float64 loops, loss
properties, ASEN++'s crop against a brute-force box, MODC's nearest-prototype assignment, and
each model learning a tiny synthetic problem."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model import build_model, list_models
from model.asenpp import attention_crop_boxes, crop_and_resize
from model.blocks import ChannelAttention, SpatialAttention

torch.set_num_threads(1)

BASELINES = ("asen", "asen_v2", "asenpp", "modc")
CLASSES = [3, 2, 4]  # classes per attribute of the tiny problems
SIDE = 32


def make(name: str, **overrides):
    kw = dict(classes_per_attribute=CLASSES, backbone="resnet18_layer3", pretrained=False, embed_dim=32,
              margin=0.2, inner_dim=16)
    if name == "asenpp":  # each constructor takes its own keywords only (an unknown one is a TypeError)
        kw["local_inner_dim"] = 8
    kw.update(overrides)
    torch.manual_seed(0)
    return build_model(name, **kw)


def random_batch(b: int = 4, side: int = SIDE, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    attribute = torch.randint(0, len(CLASSES), (b,), generator=g)
    class_id = torch.stack([torch.randint(0, CLASSES[a], (1,), generator=g)[0] for a in attribute.tolist()])
    offsets = torch.tensor([0] + CLASSES[:-1]).cumsum(0)
    targets = torch.zeros(3 * b, sum(CLASSES))
    rows = torch.arange(b)
    gid = offsets[attribute] + class_id
    targets[rows, gid] = 1
    targets[b + rows, gid] = 1
    other = offsets[attribute] + (class_id + 1) % torch.tensor(CLASSES)[attribute]
    targets[2 * b + rows, other] = 1
    return dict(images=torch.randn(3 * b, 3, side, side, generator=g), attribute=attribute, class_id=class_id,
                targets=targets, target_mask=torch.ones(3 * b, len(CLASSES), dtype=torch.bool),
                index=torch.arange(3 * b))


# --- registry and shapes -------------------------------------------------------------------------

def test_registered():
    assert set(BASELINES) <= set(list_models())


@pytest.mark.parametrize("name", BASELINES)
def test_shapes(name):
    model = make(name)
    for phase in model.phases:
        model.set_phase(phase)
        model.train()
        out = model(random_batch())
        assert out["loss"].dim() == 0 and out["loss"].requires_grad
        terms = [k for k in out if k.startswith("loss_")]
        assert terms and all(not out[k].requires_grad and out[k].dim() == 0 for k in terms)
    model.eval()
    with torch.no_grad():
        emb = model.embed(torch.randn(5, 3, SIDE, SIDE))
        attn = model.attention_map(torch.randn(5, 3, SIDE, SIDE), torch.tensor([0, 1, 2, 0, 1]))
    d = {"asen": 32, "asen_v2": 256, "asenpp": 64, "modc": 32}[name]
    assert emb.attribute.shape == (5, len(CLASSES), d)
    torch.testing.assert_close(emb.attribute.norm(dim=-1), torch.ones(5, len(CLASSES)))
    assert attn.shape == (5, SIDE // 16, SIDE // 16)
    torch.testing.assert_close(attn.sum((1, 2)), torch.ones(5))
    if name == "modc":
        assert model.has_class_level
        assert emb.class_index.shape == (5 * len(CLASSES), 3) and emb.class_emb.shape == (5 * len(CLASSES), d)
        assert emb.probs is None  # the class level is the nearest prototype, for every gamma
    else:
        assert not model.has_class_level and emb.class_index is None


@pytest.mark.parametrize("name", BASELINES)
def test_embed_matches_per_attribute_path(name):
    """The all-attributes-at-once inference equals the training path run one attribute at a time."""
    model = make(name).eval()
    images = torch.randn(3, 3, SIDE, SIDE)
    with torch.no_grad():
        emb = model.embed(images).attribute
        for n in range(len(CLASSES)):
            attr = torch.full((3,), n)
            if name == "asenpp":
                g, attn = model.global_branch(images, attr[:, None])
                l = model.local_branch(images, attn, attr[:, None])
                one = torch.cat([math.sqrt(0.6) * F.normalize(g, dim=-1), math.sqrt(0.4) * F.normalize(l, dim=-1)], -1)
            else:
                one = model.attribute_embedding(images, attr[:, None])[0]
            torch.testing.assert_close(emb[:, n], one[:, 0], atol=1e-5, rtol=1e-5)
    # different attributes give different embeddings (the conditioning is not ignored)
    assert (emb[:, 0] - emb[:, 1]).abs().max() > 1e-4


# --- attention modules against float64 loops ------------------------------------------------------

@pytest.mark.parametrize("score,batch_norm,attribute_bias",
                         [("conv", False, False), ("conv", False, True), ("scaled_dot", True, True), ("scaled_dot", False, True)])
def test_spatial_attention_matches_loops(score, batch_norm, attribute_bias):
    torch.manual_seed(1)
    c, d, inner, h, w, b, k = 6, 5, 4, 3, 2, 2, 3
    sa = SpatialAttention(in_channels=c, attr_dim=d, inner_dim=inner, score=score, batch_norm=batch_norm,
                          attribute_bias=attribute_bias).double()
    if score == "conv":  # large weights: without ASEN's tanh after the score conv the logits would leave [-1, 1]
        sa.score_conv.weight.data.mul_(20.0)
    if batch_norm:  # non-trivial running statistics, eval mode
        sa.feature_bn.running_mean.uniform_(-1, 1)
        sa.feature_bn.running_var.uniform_(0.5, 2)
        sa.feature_bn.weight.data.uniform_(0.5, 1.5)
        sa.feature_bn.bias.data.uniform_(-0.5, 0.5)
    sa.eval()
    feat = torch.randn(b, c, h, w, dtype=torch.float64)
    attr = torch.randn(b, k, d, dtype=torch.float64)
    pooled, attn = sa(feat, attr)

    W, bW = sa.feature_proj.weight[:, :, 0, 0], sa.feature_proj.bias
    A, bA = sa.attribute_proj.weight, sa.attribute_proj.bias
    for bi in range(b):
        for ki in range(k):
            u = [math.tanh(sum(A[i, j].item() * attr[bi, ki, j].item() for j in range(d))
                           + (bA[i].item() if bA is not None else 0.0)) for i in range(inner)]
            logits = []
            for y in range(h):
                for x in range(w):
                    s = 0.0
                    for i in range(inner):
                        t = sum(W[i, ch].item() * feat[bi, ch, y, x].item() for ch in range(c)) + bW[i].item()
                        if batch_norm:
                            bn = sa.feature_bn
                            t = (t - bn.running_mean[i].item()) / math.sqrt(bn.running_var[i].item() + bn.eps)
                            t = t * bn.weight[i].item() + bn.bias[i].item()
                        t = math.tanh(t)
                        s += (sa.score_conv.weight[0, i, 0, 0].item() if score == "conv" else 1.0) * t * u[i]
                    # ASEN: conv2 -> tanh -> softmax; ASEN_v2 / ASEN++: scaled dot product, no tanh
                    s = math.tanh(s + sa.score_conv.bias[0].item()) if score == "conv" else s / math.sqrt(inner)
                    logits.append(s)
            z = sum(math.exp(v) for v in logits)
            alpha = [math.exp(v) / z for v in logits]
            for p, a in enumerate(alpha):
                assert attn[bi, ki].flatten()[p].item() == pytest.approx(a, rel=1e-10, abs=1e-12)
            for ch in range(c):
                ref = sum(alpha[p] * feat[bi, ch].flatten()[p].item() for p in range(h * w))
                assert pooled[bi, ki, ch].item() == pytest.approx(ref, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("attribute_bias", [True, False])
def test_channel_attention_matches_loops(attribute_bias):
    torch.manual_seed(2)
    c, d, ah, hid, b, k = 6, 4, 5, 3, 2, 2
    ca = ChannelAttention(in_channels=c, attr_dim=d, attr_hidden=ah, hidden=hid, attribute_bias=attribute_bias).double()
    x = torch.randn(b, k, c, dtype=torch.float64)
    attr = torch.randn(b, k, d, dtype=torch.float64)
    out = ca(x, attr)
    P, F1, F2 = ca.attribute_proj, ca.fc1, ca.fc2
    for bi in range(b):
        for ki in range(k):
            a = [max(0.0, sum(P.weight[i, j].item() * attr[bi, ki, j].item() for j in range(d))
                     + (P.bias[i].item() if P.bias is not None else 0.0)) for i in range(ah)]
            cat = [x[bi, ki, ch].item() for ch in range(c)] + a
            hidden = [max(0.0, sum(F1.weight[i, j].item() * cat[j] for j in range(c + ah)) + F1.bias[i].item())
                      for i in range(hid)]
            for ch in range(c):
                z = sum(F2.weight[ch, i].item() * hidden[i] for i in range(hid)) + F2.bias[ch].item()
                ref = x[bi, ki, ch].item() / (1.0 + math.exp(-z))
                assert out[bi, ki, ch].item() == pytest.approx(ref, rel=1e-10, abs=1e-12)


def test_asen_attention_is_nearly_flat_at_most_e_squared():
    """ASEN's tanh before the softmax bounds the logits to [-1, 1]: max / min weight <= e^2 over the
    positions, however large the weights (the authors' conv2 -> tanh -> softmax)."""
    model = make("asen").eval()
    with torch.no_grad():
        for mod in (model.head.spatial_attention.score_conv, model.head.spatial_attention.feature_proj):
            mod.weight.mul_(50.0)
        images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 3
        attn = model.attention_map(images, torch.tensor([0, 1, 2, 0]))  # (4, 4, 4)
        logits = model.head.spatial_attention.logits(model.trunk(images), model.head.attribute_vector(
            torch.tensor([0, 1, 2, 0])[:, None]))
    assert logits.abs().max() <= 1.0
    ratio = attn.flatten(1).amax(1) / attn.flatten(1).amin(1)
    assert (ratio <= math.exp(2.0) * (1 + 1e-6)).all()
    assert (ratio > 1.5).any()  # the map is not trivially uniform: the bound is what holds it


def test_asen_channel_attention_sizes_follow_the_authors_code():
    """ASENet: mask_fc1 Linear(N, 512, bias=False), mask_fc2 Linear(N, c, bias=False), fc1 2c -> c/2;
    ASEN_v2 / ASEN++ keep a 512-d attribute embedding with biased transforms (fc1 c + 512 -> c/2)."""
    asen = make("asen", inner_dim=512)
    c = 256  # resnet18_layer3
    sa, ca = asen.head.spatial_attention, asen.head.channel_attention
    assert sa.attribute_proj.bias is None and tuple(sa.attribute_proj.weight.shape) == (512, len(CLASSES))
    assert ca.attribute_proj.bias is None and tuple(ca.attribute_proj.weight.shape) == (c, len(CLASSES))
    assert tuple(ca.fc1.weight.shape) == (c // 2, 2 * c) and tuple(ca.fc2.weight.shape) == (c, c // 2)
    v2 = make("asen_v2")
    ca2 = v2.head.channel_attention
    assert ca2.attribute_proj.bias is not None and tuple(ca2.attribute_proj.weight.shape) == (512, 512)
    assert tuple(ca2.fc1.weight.shape) == (c // 2, c + 512)
    assert v2.head.spatial_attention.attribute_proj.bias is not None


# --- loss properties --------------------------------------------------------------------------------

def identical_triplets(b: int = 3) -> dict:
    """Anchor, positive and negative are the same picture: s(a, p) = s(a, n)."""
    batch = random_batch(b)
    batch["images"] = batch["images"][:b].repeat(3, 1, 1, 1)
    return batch


@pytest.mark.parametrize("name", BASELINES)
def test_loss_nonnegative_and_hinge(name):
    model = make(name).eval()  # BN from running stats: rows of one picture get one embedding
    for phase in model.phases:
        model.set_phase(phase)
        # identical pictures: every triplet term is exactly its margin, and zero at margin 0
        for margin in (0.2, 0.0):
            model.margin = margin
            out = model(identical_triplets())
            for term in ("loss_triplet", "loss_global", "loss_local", "loss_instance"):
                if term in out:
                    assert out[term].item() == pytest.approx(margin, abs=1e-5), (term, margin)
            if "loss_align" in out:
                assert 0.0 <= out["loss_align"].item() <= 6.0
        model.margin = 0.2
        for seed in range(3):
            out = model(random_batch(seed=seed))
            assert all(v.item() >= 0 for k, v in out.items())


def test_modc_prototypical_triplet_uses_the_anchor_class_prototype():
    model = make("modc", margin=0.3).eval()
    batch = random_batch(b=5, seed=3)
    b = 5
    with torch.no_grad():
        x = model.attribute_embedding(batch["images"], batch["attribute"].repeat(3)[:, None])[0][:, 0]
        protos = F.normalize(torch.randn(sum(CLASSES), x.shape[1], dtype=torch.float64), dim=-1).float()
        model.prototypes.prototypes.copy_(protos)
        model.prototypes.seen.fill_(True)
        out = model(batch)
    offsets = [0, 3, 5]
    ref = []
    for i in range(b):
        gid = offsets[batch["attribute"][i].item()] + batch["class_id"][i].item()
        s_p = F.cosine_similarity(x[i], protos[gid], dim=0).item()
        s_n = F.cosine_similarity(x[i], x[2 * b + i], dim=0).item()
        ref.append(max(0.0, 0.3 + s_n - s_p))
    assert out["loss_proto"].item() == pytest.approx(sum(ref) / b, abs=1e-5)
    # eval mode: no prototype update; unseen prototypes are left out of the term
    torch.testing.assert_close(model.prototypes.prototypes, protos)
    model.prototypes.seen.fill_(False)
    assert model(batch)["loss_proto"].item() == 0.0


def test_modc_training_updates_prototypes_of_labelled_classes():
    model = make("modc").train()
    batch = random_batch(b=4, seed=5)
    before = model.prototypes.prototypes.clone()
    model(batch)
    attr3 = batch["attribute"].repeat(3)
    offsets = torch.tensor([0, 3, 5])
    touched = set()
    for r in range(12):
        a = attr3[r].item()
        for gid in range(offsets[a], offsets[a] + CLASSES[a]):
            if batch["targets"][r, gid] > 0:
                touched.add(gid)
    changed = {i for i in range(sum(CLASSES)) if not torch.equal(before[i], model.prototypes.prototypes[i])}
    assert changed == touched
    assert model.prototypes.seen.nonzero().flatten().tolist() == sorted(touched)


# --- ASEN++: the crop and the stages -------------------------------------------------------------

def brute_force_box(attn_hw: torch.Tensor, height: int, width: int, threshold: float):
    """The authors' recipe, one image, pixel by pixel (cv2.boundingRect + the squaring rules)."""
    up = F.interpolate(attn_hw[None, None].double(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    lo, hi = up.min().item(), up.max().item()
    xs, ys = [], []
    for y in range(height):
        for x in range(width):
            v = (up[y, x].item() - lo) / max(hi - lo, 1e-12)
            if v > threshold:
                xs.append(x)
                ys.append(y)
    if not xs:
        x0, y0, w, h = 0, 0, width, height
    else:
        x0, y0, w, h = min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1
    xc, yc, d = x0 + w // 2, y0 + h // 2, min(max(w, h), min(height, width))
    x = width - d if xc + d // 2 > width else max(0, xc - d // 2)
    y = height - d if yc + d // 2 > height else max(0, yc - d // 2)
    return [x, y, x + d, y + d]


@pytest.mark.parametrize("height,width,threshold", [(32, 32, 0.1), (64, 64, 0.5), (30, 40, 0.1), (32, 32, 0.9)])
def test_crop_box_matches_brute_force(height, width, threshold):
    g = torch.Generator().manual_seed(height + width)
    maps = [torch.rand(4, 4, generator=g).softmax(-1) for _ in range(5)]
    maps.append(torch.full((4, 4), 1 / 16))  # flat: the whole image (then squared)
    corner = torch.full((4, 4), 0.001)
    corner[0, 3] = 1.0  # a peak in a corner: the square is pushed back inside the image
    maps.append(corner)
    edge = torch.full((4, 4), 0.001)
    edge[3, 1:3] = 1.0
    maps.append(edge)
    maps.append(torch.rand(2, 2, generator=g))
    for attn in maps:
        got = attention_crop_boxes(attn[None], height, width, threshold)[0].tolist()
        assert got == brute_force_box(attn, height, width, threshold), attn
        x0, y0, x1, y1 = got
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and x1 - x0 == y1 - y0


def test_crop_box_batched_equals_one_by_one():
    attn = torch.rand(6, 2, 2)
    batched = attention_crop_boxes(attn, 32, 32, 0.1)
    for i in range(6):
        torch.testing.assert_close(batched[i], attention_crop_boxes(attn[i : i + 1], 32, 32, 0.1)[0])


def test_crop_and_resize_is_the_box_of_the_right_image():
    images = torch.randn(2, 3, 32, 32)
    boxes = torch.tensor([[3.0, 5.0, 19.0, 21.0], [10.0, 0.0, 26.0, 16.0]])
    rows = torch.tensor([1, 0])
    same = crop_and_resize(images, rows, boxes, 16)  # no resize: the exact pixels
    torch.testing.assert_close(same[0], images[1, :, 5:21, 3:19])
    torch.testing.assert_close(same[1], images[0, :, 0:16, 10:26])
    half = crop_and_resize(images, rows, boxes, 8)  # half size: 2x2 area means
    torch.testing.assert_close(half[0], F.avg_pool2d(images[1:2, :, 5:21, 3:19], 2)[0])


def test_asenpp_phases_and_param_groups():
    model = make("asenpp")
    assert model.phases == ("global", "joint")
    everything = {id(p) for p in model.parameters()}
    local = {id(p) for p in model.local_trunk.parameters()}
    groups = model.param_groups(1e-4)
    assert len(groups) == 1 and not local & {id(p) for p in groups[0]["params"]}
    assert "loss_local" not in model(random_batch())
    model.set_phase("joint")
    groups = model.param_groups(1e-4)
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-5])
    assert local <= ids[0] and not ids[0] & ids[1] and ids[0] | ids[1] == everything
    # the shared attribute embedding is listed once (an optimizer refuses duplicates)
    torch.optim.Adam(groups)
    assert {"loss_global", "loss_local", "loss_align"} <= set(model(random_batch()))
    with pytest.raises(ValueError):
        model.set_phase("local")


# --- MODC: nearest-prototype class level -------------------------------------------------------

def test_modc_class_assignment_is_the_nearest_prototype():
    model = make("modc").eval()
    torch.manual_seed(4)
    model.prototypes.prototypes.copy_(F.normalize(torch.randn(sum(CLASSES), 32), dim=-1))
    images = torch.randn(6, 3, SIDE, SIDE)
    with torch.no_grad():
        emb = model.embed(images)
    x, protos = emb.attribute.double(), model.prototypes.prototypes.double()
    offsets = [0, 3, 5]
    rows = emb.class_index.tolist()
    assert len(rows) == 6 * len(CLASSES)
    for r, (i, n, m) in enumerate(rows):
        sims = [torch.dot(x[i, n], protos[offsets[n] + j]).item() for j in range(CLASSES[n])]
        assert m == max(range(CLASSES[n]), key=lambda j: sims[j])
        torch.testing.assert_close(emb.class_emb[r], emb.attribute[i, n])
    assert sorted({(i, n) for i, n, _ in rows}) == [(i, n) for i in range(6) for n in range(len(CLASSES))]


def test_modc_never_assigns_a_prototype_never_updated():
    """A class absent from training keeps its random prototype: it must not be assigned, even when
    it is the nearest (issue 25, item 5); an attribute with no updated prototype keeps them all."""
    model = make("modc").eval()
    torch.manual_seed(5)
    model.prototypes.prototypes.copy_(F.normalize(torch.randn(sum(CLASSES), 32), dim=-1))
    images = torch.randn(6, 3, SIDE, SIDE)
    with torch.no_grad():
        x = model.embed(images).attribute  # (6, N, D): prototypes do not change the embeddings
    offsets = [0, 3, 5]
    unseen = offsets[0] + 2  # attribute 0, class 2: the nearest prototype of every image, never updated
    model.prototypes.prototypes[unseen] = F.normalize(x[:, 0].mean(0), dim=-1)
    model.prototypes.seen.fill_(True)
    model.prototypes.seen[unseen] = False
    model.prototypes.seen[offsets[2]:] = False  # attribute 2: no prototype updated at all
    protos = model.prototypes.prototypes.double()
    with torch.no_grad():
        rows = model.embed(images).class_index.tolist()
    sims0 = x[:, 0].double() @ protos[: CLASSES[0]].t()  # (6, 3)
    assert (sims0.argmax(1) == 2).all()  # the unmasked nearest would be the unseen class
    for i, n, m in rows:
        sims = x[i, n].double() @ protos[offsets[n]: offsets[n] + CLASSES[n]].t()
        if n == 0:
            assert m != 2 and m == sims[:2].argmax().item()
        else:
            assert m == sims.argmax().item()


# --- learning a tiny synthetic problem ------------------------------------------------------------

COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])


def squares_batch(g: torch.Generator, b: int = 8) -> dict:
    """Attribute 0 = the square's colour (3 classes), attribute 1 = its side (left / right half)."""
    n = 3 * b
    colour = torch.randint(0, 3, (n,), generator=g)
    side = torch.randint(0, 2, (n,), generator=g)
    attribute = torch.randint(0, 2, (b,), generator=g)
    labels = torch.stack([colour, side], 1)  # (3B, 2)
    for i in range(b):  # positives share the anchor's class, negatives do not
        a = attribute[i].item()
        labels[b + i, a] = labels[i, a]
        if labels[2 * b + i, a] == labels[i, a]:
            labels[2 * b + i, a] = (labels[i, a] + 1) % (3 if a == 0 else 2)
    images = 0.3 * torch.randn(n, 3, SIDE, SIDE, generator=g)
    for r in range(n):
        x0 = 2 if labels[r, 1] == 0 else 18
        y0 = torch.randint(2, 18, (1,), generator=g).item()
        images[r, :, y0 : y0 + 12, x0 : x0 + 12] += COLOURS[labels[r, 0]][:, None, None]
    classes = [3, 2]
    targets = torch.zeros(n, 5)
    targets[torch.arange(n), labels[:, 0]] = 1
    targets[torch.arange(n), 3 + labels[:, 1]] = 1
    return dict(images=images, attribute=attribute, class_id=labels[torch.arange(b), attribute],
                targets=targets, target_mask=torch.ones(n, len(classes), dtype=torch.bool), index=torch.arange(n))


def train_losses(model, batches, steps: int, lr: float = 1e-3) -> list[float]:
    model.train()
    opt = torch.optim.Adam(model.param_groups(lr))
    losses = []
    for s in range(steps):
        out = model(batches[s % len(batches)])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    return losses


@pytest.mark.parametrize("name", BASELINES)
def test_training_loss_falls(name):
    g = torch.Generator().manual_seed(0)
    batches = [squares_batch(g) for _ in range(4)]
    model = make(name, classes_per_attribute=[3, 2], embed_dim=16, margin=0.3)
    first = train_losses(model, batches, 24)
    assert sum(first[-4:]) < 0.5 * sum(first[:4]), first
    if name == "asenpp":  # stage 2: the local branch learns too
        model.set_phase("joint")
        joint = train_losses(model, batches, 12)
        assert sum(joint[-3:]) < 0.5 * sum(joint[:3]), joint
