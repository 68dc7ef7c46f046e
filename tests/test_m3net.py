"""M3-Net: the factored head against a loop over (image, attribute, class) written from the paper.

Float64, tiny sizes; the trunk is a single strided conv so that psi is cheap and exact.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.losses import cosine_triplet
from model.m3net import M3Net
from model.registry import build_model

from tests.references import eq7_loop

torch.set_num_threads(1)
CPA = [3, 4, 2]  # classes per attribute
C_TRUNK, D_INNER = 8, 6
TOL = dict(rtol=1e-9, atol=1e-11)


def tiny_model(variant, *, embed_dim=C_TRUNK, seed=0, **kw):
    torch.manual_seed(seed)
    trunk = nn.Conv2d(3, C_TRUNK, kernel_size=4, stride=4)  # 12 px -> 3 x 3, out_channels = c
    m = M3Net(classes_per_attribute=CPA, variant=variant, trunk=trunk, embed_dim=embed_dim,
              inner_dim=D_INNER, w_p=3.0, **kw).double()
    with torch.no_grad():  # non-zero biases so that a dropped bias would show
        for name, p in m.named_parameters():
            if "bias" in name or name.endswith(("b2", "b3", "b4", "g_b1", "g_b2")):
                p.normal_(0, 0.5)
    return m


# --- the reference: Algorithms 1, 2 and Eq. 1-6, one (image, attribute, class) at a time ------


def ref_sca(sca, g, feat_chw, label):
    d = sca.inner_dim
    p1 = torch.tanh(F.conv2d(feat_chw[None], sca.transform.weight[g * d:(g + 1) * d],
                             sca.transform.bias[g * d:(g + 1) * d]))[0]  # (d, h, w)
    p2 = torch.tanh(sca.label_embedding[g, label] @ sca.label_weight[g] + sca.label_bias[g])  # (d,)
    score = (p2[:, None, None] * p1).sum(0) / math.sqrt(d)
    return torch.softmax(score.flatten(), 0).view(score.shape)


def ref_cca(cca, g, feat, label):
    q1 = feat.flatten(1).sum(1) if feat.dim() == 3 else feat
    q2 = torch.relu(cca.label_embedding[g, label] @ cca.w2[g] + cca.b2[g])
    beta = torch.sigmoid(torch.relu(torch.cat([q1, q2]) @ cca.w3[g] + cca.b3[g]) @ cca.w4[g] + cca.b4[g])
    return beta * q1


def ref_attribute(m, psi_chw, n):
    """(alpha_n (h, w) or None, x_n (c,), logits of g_n (M_n,))."""
    if m.variant == "class":
        alpha, x = None, psi_chw.flatten(1).mean(1)
    else:
        alpha = ref_sca(m.spatial_attention_a, 0, psi_chw, n)
        x = ref_cca(m.channel_attention_a, 0, alpha * psi_chw, n)  # Eq. 1, 2
    hidden = torch.relu(x @ m.g_w1[n] + m.g_b1[n])
    logits = hidden @ m.g_w2[n, :, :CPA[n]] + m.g_b2[n, :CPA[n]]
    return alpha, x, logits


def ref_class(m, psi_chw, n, cls):
    """(alpha_bar (h, w), x_nm (c,)) for class cls of attribute n."""
    if m.variant == "attribute":
        return None, ref_attribute(m, psi_chw, n)[1]
    if m.variant == "class":
        phi_n = psi_chw
    else:
        phi_n = ref_attribute(m, psi_chw, n)[0] * psi_chw  # Eq. 1
    alpha_bar = ref_sca(m.spatial_attention_c, n, phi_n, cls)
    phi_bar = alpha_bar * phi_n  # Eq. 4
    v = ref_cca(m.channel_attention_a, 0, phi_bar, n) if m.variant == "full" else phi_bar.flatten(1).sum(1)  # Eq. 5
    return alpha_bar, ref_cca(m.channel_attention_c, n, v, cls)  # Eq. 6


def make_batch(B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    attribute = torch.tensor([0, 1, 2, 1, 0][:B])
    class_id = torch.tensor([CPA[a] - 1 - (i % CPA[a]) for i, a in enumerate(attribute.tolist())])
    return dict(
        images=torch.randn(3 * B, 3, 12, 12, generator=g, dtype=torch.float64),
        attribute=attribute, class_id=class_id,
        targets=(torch.rand(3 * B, sum(CPA), generator=g) > 0.5).double(),
        target_mask=torch.rand(3 * B, len(CPA), generator=g) > 0.3,
        index=torch.arange(3 * B),
    )


VARIANTS = ["full", "attribute", "class"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_attribute_branch_and_probs_match_reference(variant):
    m = tiny_model(variant)
    psi = m.trunk(make_batch()["images"][:4])  # (4, c, 3, 3)
    alpha, x = m.attribute_branch(psi.flatten(2))
    logits = m.class_logits(x)
    for i in range(4):
        for n in range(len(CPA)):
            ra, rx, rl = ref_attribute(m, psi[i], n)
            assert torch.allclose(x[i, n], rx, **TOL)
            off = sum(CPA[:n])
            assert torch.allclose(logits[i, off:off + CPA[n]], rl, **TOL)
            if ra is None:
                assert alpha is None
            else:
                assert torch.allclose(alpha[i, n].view(3, 3), ra, **TOL)


@pytest.mark.parametrize("variant", ["full", "class"])
def test_class_branch_fast_equals_reference_both_layouts(variant):
    m = tiny_model(variant)
    psi = m.trunk(make_batch()["images"][:3])
    psi_bcl = psi.flatten(2)
    alpha, _ = m.attribute_branch(psi_bcl)
    g = torch.Generator().manual_seed(5)
    K = 2
    classes = torch.stack([torch.randint(0, M, (3, K), generator=g) for M in CPA], dim=1)  # (B, N, K)
    x_all, abar_all = m.class_branch(psi_bcl, alpha, None, classes, return_attention=True)
    attrs = torch.tensor([[2], [0], [1]])
    alpha_sel = None if alpha is None else alpha[torch.arange(3), attrs[:, 0]][:, None]
    cls_sel = classes[torch.arange(3), attrs[:, 0]][:, None]  # (B, 1, K)
    x_sel = m.class_branch(psi_bcl, alpha_sel, attrs, cls_sel)
    for i in range(3):
        for n in range(len(CPA)):
            for k in range(K):
                ra, rx = ref_class(m, psi[i], n, classes[i, n, k])
                assert torch.allclose(x_all[i, n, k], rx, **TOL)
                assert torch.allclose(abar_all[i, n, k].view(3, 3), ra, **TOL)
                if n == attrs[i, 0]:
                    assert torch.allclose(x_sel[i, 0, k], rx, **TOL)


def seen_mean_loop(values, seen):
    kept = [v.item() for v, k in zip(values, seen) if k]
    return sum(kept) / len(kept) if kept else 0.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_losses_match_reference(variant):
    m = tiny_model(variant, lambda_ac=0.5, lambda_ai=0.25)
    m.eval()  # keeps the prototypes fixed between the two computations
    batch = make_batch()
    B = 3
    gid = m.class_offsets[batch["attribute"]] + batch["class_id"]
    # some prototypes updated once, the others still at their random start (left out of L_AC / L_CC)
    for bank in (m.prototypes_attribute, getattr(m, "prototypes_class", None)):
        if bank is not None:
            bank.seen[gid[:2]] = True
            bank.seen[gid[2:]] = False
    out = m(batch)
    psi = m.trunk(batch["images"])
    N = len(CPA)
    logits = torch.stack([torch.cat([ref_attribute(m, psi[i], n)[2] for n in range(N)]) for i in range(3 * B)])
    loss_m = torch.tensor(eq7_loop(logits, batch["targets"], 3.0, batch["target_mask"], CPA), dtype=torch.float64)
    a_of = lambda i: batch["attribute"][i % B]  # noqa: E731
    c_of = lambda i: batch["class_id"][i % B]  # noqa: E731
    xa = torch.stack([ref_attribute(m, psi[i], a_of(i))[1] for i in range(3 * B)])
    xc = torch.stack([ref_class(m, psi[i], a_of(i), c_of(i))[1] for i in range(3 * B)])
    pa = m.prototypes_attribute.prototypes[gid]
    seen_a = m.prototypes_attribute.seen[gid].tolist()
    loss_ai = cosine_triplet(xa[:B], xa[B:2 * B], xa[2 * B:], 0.4).mean()
    loss_ac = torch.tensor(seen_mean_loop(cosine_triplet(xa[:B], pa, xa[2 * B:], 0.4), seen_a), dtype=torch.float64)
    if variant == "attribute":
        loss_cc, loss_ci = loss_ac, loss_ai
        total = loss_m + loss_cc + loss_ci
    else:
        pc = m.prototypes_class.prototypes[gid]
        seen_c = m.prototypes_class.seen[gid].tolist()
        loss_ci = cosine_triplet(xc[:B], xc[B:2 * B], xc[2 * B:], 0.4).mean()
        loss_cc = torch.tensor(seen_mean_loop(cosine_triplet(xc[:B], pc, xc[2 * B:], 0.4), seen_c),
                               dtype=torch.float64)
        if variant == "class":
            loss_ac = loss_ai = torch.zeros((), dtype=torch.float64)
        total = loss_m + loss_cc + loss_ci + 0.5 * loss_ac + 0.25 * loss_ai
    want = dict(loss=total, loss_m=loss_m, loss_cc=loss_cc, loss_ci=loss_ci, loss_ac=loss_ac, loss_ai=loss_ai)
    assert set(out) == set(want)
    for k, v in want.items():
        assert torch.allclose(out[k], v, **TOL), k
    assert out["loss"].requires_grad and not out["loss_m"].requires_grad
    assert loss_m > 0 and loss_ci >= 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_embed_selects_classes_and_matches_reference(variant):
    m = tiny_model(variant).eval()
    images = make_batch()["images"][:3]
    psi = m.trunk(images)
    gamma = 0.55
    e = m.embed(images, gamma=gamma, max_classes=3)
    N = len(CPA)
    assert e.attribute.shape == (3, N, C_TRUNK) and e.probs.shape == (3, sum(CPA))
    assert torch.allclose(e.attribute.norm(dim=-1), torch.ones(3, N, dtype=torch.float64))
    assert torch.allclose(e.class_emb.norm(dim=-1), torch.ones(len(e.class_emb), dtype=torch.float64))
    want_rows = []
    for i in range(3):
        for n in range(N):
            _, rx, rl = ref_attribute(m, psi[i], n)
            assert torch.allclose(e.attribute[i, n], F.normalize(rx, dim=0), **TOL)
            probs = torch.sigmoid(rl)
            order = sorted(range(CPA[n]), key=lambda j: -probs[j].item())
            chosen = [j for j in order if probs[j] > gamma][:3] or order[:1]
            want_rows += [(i, n, j) for j in chosen]
    assert [tuple(r) for r in e.class_index.tolist()] == want_rows
    for (i, n, j), emb in zip(want_rows, e.class_emb):
        assert torch.allclose(emb, F.normalize(ref_class(m, psi[i], n, j)[1], dim=0), **TOL)


@pytest.mark.parametrize("variant", VARIANTS)
def test_embed_ranked_pairs_only(variant):
    """``ranked`` restricts the class level to the pairs the evaluation ranks: exactly the rows of
    the full extraction in those pairs, with the same embeddings; the attribute level is untouched."""
    m = tiny_model(variant).eval()
    images = make_batch(B=4)["images"][:4]
    N = len(CPA)
    full = m.embed(images, gamma=0.3, max_classes=3)
    ranked = torch.rand(4, N, generator=torch.Generator().manual_seed(3)) < 0.5
    ranked[0] = False  # an image ranked in no attribute
    part = m.embed(images, gamma=0.3, max_classes=3, ranked=ranked)
    assert torch.equal(part.attribute, full.attribute) and torch.equal(part.probs, full.probs)
    sel = ranked[full.class_index[:, 0], full.class_index[:, 1]]
    assert torch.equal(part.class_index, full.class_index[sel])
    assert torch.allclose(part.class_emb, full.class_emb[sel], **TOL)
    none = m.embed(images, ranked=torch.zeros(4, N, dtype=torch.bool))
    assert none.class_index.shape == (0, 3) and none.class_emb.shape[0] == 0


def test_embed_respects_max_classes_and_top1():
    m = tiny_model("full").eval()
    images = make_batch()["images"][:2]
    e_all = m.embed(images, gamma=-1.0, max_classes=2)  # every class passes: capped at 2
    counts = torch.zeros(2, len(CPA), dtype=torch.long)
    counts.index_put_((e_all.class_index[:, 0], e_all.class_index[:, 1]), torch.ones(len(e_all.class_index), dtype=torch.long), accumulate=True)
    assert (counts == 2).all()
    e_none = m.embed(images, gamma=1.0, max_classes=16)  # nothing passes: top-1 only
    assert len(e_none.class_index) == 2 * len(CPA)
    top1 = e_none.probs.split(CPA, dim=1)
    for i, n, j in e_none.class_index.tolist():
        assert j == top1[n][i].argmax().item()


def test_m3net_eq11_is_the_literal_equation_11():
    """m3net_eq11: the full model with lambda_ac = lambda_ai = 0, so L = L_M + L_CC + L_CI exactly,
    and the same network (and weights, same seed) as m3net; a non-zero attribute-level weight is refused."""
    kw = dict(classes_per_attribute=CPA, trunk=nn.Conv2d(3, C_TRUNK, kernel_size=4, stride=4), embed_dim=C_TRUNK,
              inner_dim=D_INNER, w_p=3.0, lambda_ac=0.0, lambda_ai=0.0)
    torch.manual_seed(0)
    eq11 = build_model("m3net_eq11", **kw).double().eval()
    assert eq11.variant == "full" and eq11.lambdas["ac"] == 0.0 and eq11.lambdas["ai"] == 0.0
    batch = make_batch()
    for bank in (eq11.prototypes_attribute, eq11.prototypes_class):
        bank.seen.fill_(True)
    out = eq11(batch)
    assert out["loss_ac"].item() > 0 or out["loss_ai"].item() > 0  # computed and logged, but not trained on
    torch.testing.assert_close(out["loss"], out["loss_m"] + out["loss_cc"] + out["loss_ci"], rtol=1e-12, atol=1e-12)
    full = build_model("m3net", **{**kw, "lambda_ac": 1.0, "lambda_ai": 1.0}).double().eval()
    full.load_state_dict(eq11.state_dict())
    out_full = full(batch)
    torch.testing.assert_close(out_full["loss"], out["loss"] + out["loss_ac"] + out["loss_ai"], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="literal Eq. 11"):
        build_model("m3net_eq11", **{**kw, "lambda_ac": 1.0})


@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_maps(variant):
    m = tiny_model(variant).eval()
    images = make_batch()["images"][:2]
    psi = m.trunk(images)
    attr, cls = torch.tensor([1, 2]), torch.tensor([3, 0])
    amap = m.attention_map(images, attr)
    cmap = m.attention_map(images, attr, cls)
    for i in range(2):
        if variant == "class":
            assert amap is None
        else:
            assert torch.allclose(amap[i], ref_attribute(m, psi[i], attr[i])[0], **TOL)
        if variant == "attribute":
            assert cmap is None
        else:
            assert cmap.shape == (2, 3, 3)
            assert torch.allclose(cmap[i], ref_class(m, psi[i], attr[i], cls[i])[0], **TOL)


@pytest.mark.parametrize("name", ["m3net", "m3net_a", "m3net_c"])
def test_registered_models_with_resnet18_trunk_and_projection(name):
    """Shapes through the real trunk; the trainer's keys (lr, ...) never reach the constructor."""
    torch.manual_seed(0)
    m = build_model(name, classes_per_attribute=CPA, backbone="resnet18_layer3", pretrained=False,
                    embed_dim=32, inner_dim=8, margin=0.4, w_p={"darn": 1, "deepfashion": 100},
                    dataset="deepfashion", lambda_m=1.0, lambda_cc=1.0, lambda_ci=1.0, lambda_ac=1.0,
                    lambda_ai=1.0, prototype_momentum=0.9)
    assert m.w_p == 100.0 and m.has_class_level and m.channels == 256
    batch = make_batch(B=2)
    batch = {k: (v.float() if v.is_floating_point() else v) for k, v in batch.items()}
    batch["images"] = torch.randn(6, 3, 32, 32)
    out = m(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert m.trunk[0].weight.grad is not None and m.trunk[0].weight.grad.abs().sum() > 0
    m.eval()
    e = m.embed(batch["images"][:2])
    assert e.attribute.shape == (2, 3, 32) and e.class_emb.shape[1] == 32
    assert e.class_index.shape[1] == 3 and len(e.class_index) >= 2 * 3


@pytest.mark.parametrize("variant", VARIANTS)
def test_never_updated_prototypes_are_left_out(variant):
    """A prototype still at its random start contributes nothing to L_AC / L_CC (as in MODC): with no
    prototype seen, those terms are exactly 0 whatever the random prototypes are."""
    m = tiny_model(variant).eval()
    batch = make_batch()
    out = m(batch)
    if variant != "class":
        assert out["loss_ac"].item() == 0.0
    if variant != "attribute":
        assert out["loss_cc"].item() == 0.0
    # once seen, the same prototypes give a non-zero hinge for at least one triplet
    for bank in (m.prototypes_attribute, getattr(m, "prototypes_class", None)):
        if bank is not None:
            bank.seen.fill_(True)
            bank.prototypes.copy_(-bank.prototypes.new_ones(bank.prototypes.shape) / bank.prototypes.shape[1] ** 0.5)
    out = m(batch)
    key = "loss_cc" if variant != "attribute" else "loss_ac"
    assert out[key].item() > 0.0


def test_prototypes_updated_in_training_only():
    m = tiny_model("full")
    batch = make_batch()
    before = m.prototypes_class.prototypes.clone()
    m.eval()
    m(batch)
    assert torch.equal(m.prototypes_class.prototypes, before)
    m.train()
    m(batch)
    gid = (m.class_offsets[batch["attribute"]] + batch["class_id"]).unique()
    changed = (m.prototypes_class.prototypes != before).any(1)
    assert changed[gid].all() and changed.sum() == len(gid)
    assert m.prototypes_attribute.seen[gid].all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_few_steps_reduce_the_loss(variant):
    m = tiny_model(variant, seed=3).float()
    batch = {k: (v.float() if v.is_floating_point() else v) for k, v in make_batch(B=4).items()}
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        out = m(batch)
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.7 * losses[0], losses


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_path_on_each_device_matches_the_cpu_reference(variant, device):
    """The same factored code on every device there is (CUDA on the GPU machine), in float64,
    against the paper-order loop on the CPU."""
    m = tiny_model(variant).eval()
    batch = make_batch()
    images = batch["images"][:3]
    psi = m.trunk(images)
    md = tiny_model(variant).eval().to(device)
    e = md.embed(images.to(device), gamma=0.0, max_classes=4).to("cpu")
    out = md({k: v.to(device) for k, v in batch.items()})
    ref_out = m(batch)
    for k in ref_out:
        assert torch.allclose(out[k].cpu(), ref_out[k], **TOL), k
    for i in range(3):
        for n in range(len(CPA)):
            _, rx, _ = ref_attribute(m, psi[i], n)
            assert torch.allclose(e.attribute[i, n], F.normalize(rx, dim=0), **TOL)
    for (i, n, j), emb in zip(e.class_index.tolist(), e.class_emb):
        assert torch.allclose(emb, F.normalize(ref_class(m, psi[i], n, j)[1], dim=0), **TOL)
