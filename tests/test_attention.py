"""SCA (Alg. 1) and CCA (Alg. 2) modules against loops written straight from the paper, float64."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model.attention import ChannelConditionalAttention, SpatialConditionalAttention, grouped_linear, pool

torch.set_num_threads(1)
C, D, G, LABELS, H, W = 6, 4, 3, 5, 3, 2


def _sca():
    torch.manual_seed(0)
    sca = SpatialConditionalAttention(in_channels=C, inner_dim=D, num_labels=LABELS, groups=G).double()
    with torch.no_grad():
        sca.transform.bias.normal_()
        sca.label_bias.normal_()
    return sca


def ref_sca(sca, g, feat_chw, label):
    """Algorithm 1 for one map, one group, one label: returns alpha (h, w)."""
    d = sca.inner_dim
    weight = sca.transform.weight[g * d : (g + 1) * d]  # (d, c, 1, 1)
    bias = sca.transform.bias[g * d : (g + 1) * d]
    p1 = torch.tanh(F.conv2d(feat_chw[None], weight, bias))[0]  # step 5, (d, h, w)
    p2 = torch.tanh(sca.label_embedding[g, label] @ sca.label_weight[g] + sca.label_bias[g])  # step 6, (d,)
    score = torch.zeros(p1.shape[1:], dtype=p1.dtype)
    for i in range(d):  # sum over channels of the Hadamard product
        score = score + p2[i] * p1[i]
    return torch.softmax((score / math.sqrt(d)).flatten(), 0).view(p1.shape[1:])  # step 7


def ref_cca(cca, g, feat, label):
    """Algorithm 2 (and Eq. 2): a map (c, h, w) or a vector (c,) -> beta * q1 (c,)."""
    q1 = feat.flatten(1).sum(1) if feat.dim() == 3 else feat  # step 5
    q2 = torch.relu(cca.label_embedding[g, label] @ cca.w2[g] + cca.b2[g])  # step 6
    hidden = torch.relu(torch.cat([q1, q2]) @ cca.w3[g] + cca.b3[g])
    beta = torch.sigmoid(hidden @ cca.w4[g] + cca.b4[g])  # step 7
    return beta * q1


def test_grouped_linear_both_layouts_match_loop():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, G, 4, 5, generator=g, dtype=torch.float64)
    w = torch.randn(G, 5, 7, generator=g, dtype=torch.float64)
    b = torch.randn(G, 7, generator=g, dtype=torch.float64)
    groups = torch.tensor([[2, 0, 1], [1, 1, 2]])
    full = grouped_linear(x, w, b, None)
    sel = grouped_linear(x, w, b, groups)
    for i in range(2):
        for r in range(G):
            for k in range(4):
                assert torch.allclose(full[i, r, k], x[i, r, k] @ w[r] + b[r])
                gg = groups[i, r]
                assert torch.allclose(sel[i, r, k], x[i, r, k] @ w[gg] + b[gg])
    assert torch.allclose(grouped_linear(x, w[:1], b[:1], groups), x @ w[0] + b[0])
    # no bias: the same maps without it, in all three layouts
    zero = torch.zeros_like(b)
    for grp in (None, groups):
        assert torch.equal(grouped_linear(x, w, None, grp), grouped_linear(x, w, zero, grp))
    assert torch.equal(grouped_linear(x, w[:1], None, groups), x @ w[0])


def test_sca_forward_equals_algorithm_1_including_attended_input():
    """SCA's forward on prior * psi, never built (alpha * (W psi) + b == T(alpha_prev * psi)): the
    factoring the class branch relies on; rows in group order, and rows naming their group."""
    sca = _sca()
    g = torch.Generator().manual_seed(2)
    psi = torch.randn(2, C, H, W, generator=g, dtype=torch.float64)
    prev = torch.softmax(torch.randn(2, G, H * W, generator=g, dtype=torch.float64), -1)  # an earlier map per row
    labels = torch.tensor([[[1, 4], [0, 0], [3, 2]], [[2, 2], [4, 1], [0, 3]]])  # (B, R=G, K=2)
    alpha = sca(psi.flatten(2), labels, None, prior_brl=prev)
    assert alpha.shape == (2, G, 2, H * W)
    groups = torch.tensor([[2], [0]])  # one row per image, naming its group
    alpha_sel = sca(psi.flatten(2), labels[:, :1], groups, prior_brl=prev[:, :1])
    for i in range(2):
        for r in range(G):
            attended = prev[i, r].view(H, W) * psi[i]
            for k in range(2):
                want = ref_sca(sca, r, attended, labels[i, r, k])
                assert torch.allclose(alpha[i, r, k].view(H, W), want, atol=1e-12)
        for k in range(2):
            want = ref_sca(sca, groups[i, 0], prev[i, 0].view(H, W) * psi[i], labels[i, 0, k])
            assert torch.allclose(alpha_sel[i, 0, k].view(H, W), want, atol=1e-12)
    assert torch.allclose(alpha.sum(-1), torch.ones(2, G, 2, dtype=torch.float64))


def test_sca_one_group_shared_labels_broadcast():
    """One copy (SCA-A): labels given once for all images, (1, 1, K), equal the per-image table."""
    torch.manual_seed(5)
    sca = SpatialConditionalAttention(in_channels=C, inner_dim=D, num_labels=LABELS).double()
    psi = torch.randn(3, C, H, W, dtype=torch.float64)
    shared = sca(psi.flatten(2), torch.arange(LABELS)[None, None, :])
    assert torch.equal(shared, sca(psi.flatten(2), torch.arange(LABELS).expand(3, 1, LABELS)))
    for i in range(3):
        for lab in range(LABELS):
            assert torch.allclose(shared[i, 0, lab].view(H, W), ref_sca(sca, 0, psi[i], lab), atol=1e-12)


def test_cca_matches_algorithm_2_in_both_layouts():
    torch.manual_seed(3)
    cca = ChannelConditionalAttention(in_channels=C, inner_dim=D, num_labels=LABELS, groups=G).double()
    g = torch.Generator().manual_seed(4)
    maps = torch.randn(2, G, 2, C, H, W, generator=g, dtype=torch.float64)
    labels = torch.randint(0, LABELS, (2, G, 2), generator=g)
    groups = torch.tensor([[1], [2]])
    q1 = maps.flatten(-2).sum(-1)  # (B, G, K, c)
    out_full = cca(q1, labels)
    out_sel = cca(q1[:, :1], labels[:, :1], groups)
    # the pooled form of step 5: q1 of weight * map from the weights and the map, never the product
    weight = torch.rand(2, G, 2, H * W, generator=g, dtype=torch.float64)
    feat = torch.randn(2, C, H * W, generator=g, dtype=torch.float64)
    pooled = pool(weight, feat)
    for i in range(2):
        for k in range(2):
            for r in range(G):
                assert torch.allclose(out_full[i, r, k], ref_cca(cca, r, maps[i, r, k], labels[i, r, k]), atol=1e-12)
                attended = (weight[i, r, k] * feat[i]).view(C, H, W)
                assert torch.allclose(pooled[i, r, k], attended.flatten(1).sum(1), atol=1e-12)
            want = ref_cca(cca, groups[i, 0], maps[i, 0, k], labels[i, 0, k])
            assert torch.allclose(out_sel[i, 0, k], want, atol=1e-12)
    # the gate is in (0, 1): |output| < |q1| elementwise
    assert (out_full.abs() < q1.abs() + 1e-15).all()
