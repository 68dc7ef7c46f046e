"""SCA (Alg. 1) and CCA (Alg. 2) modules against loops written straight from the paper, float64."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model.attention import ChannelConditionalAttention, SpatialConditionalAttention, grouped_linear

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


def test_sca_factored_equals_algorithm_1_including_attended_input():
    """alpha * (W psi) + b == T(alpha_prev * psi): the factoring the class branch relies on."""
    sca = _sca()
    g = torch.Generator().manual_seed(2)
    psi = torch.randn(2, C, H, W, generator=g, dtype=torch.float64)
    prev = torch.softmax(torch.randn(2, H * W, generator=g, dtype=torch.float64), -1)  # an earlier map
    labels = torch.tensor([[[1, 4], [0, 0], [3, 2]], [[2, 2], [4, 1], [0, 3]]])  # (B, R=G, K=2)
    lin = sca.linear_part(psi.flatten(2))  # (B, G, d, L)
    _, bias = sca.transform_weight()
    p1 = torch.tanh(prev[:, None, None, :] * lin + bias[None, :, :, None])
    p2 = sca.label_features()[torch.arange(G)[None, :, None], labels]  # (B, G, K, d)
    alpha = sca.attention(p1, p2)
    assert alpha.shape == (2, G, 2, H * W)
    for i in range(2):
        attended = prev[i].view(H, W) * psi[i]
        for r in range(G):
            for k in range(2):
                want = ref_sca(sca, r, attended, labels[i, r, k])
                assert torch.allclose(alpha[i, r, k].view(H, W), want, atol=1e-12)
    assert torch.allclose(alpha.sum(-1), torch.ones(2, G, 2, dtype=torch.float64))


def test_cca_matches_algorithm_2_in_both_layouts():
    torch.manual_seed(3)
    cca = ChannelConditionalAttention(in_channels=C, inner_dim=D, num_labels=LABELS, groups=G).double()
    g = torch.Generator().manual_seed(4)
    maps = torch.randn(2, G, 2, C, H, W, generator=g, dtype=torch.float64)
    labels = torch.randint(0, LABELS, (2, G, 2), generator=g)
    groups = torch.tensor([[1], [2]])
    q1 = maps.flatten(-2).sum(-1)  # (B, G, K, c)
    q2 = cca.label_features()[torch.arange(G)[None, :, None], labels]
    out_full = cca(q1, q2)
    q2_sel = cca.label_features()[groups[:, :, None], labels[:, :1]]  # (B, 1, 2, d)
    out_sel = cca(q1[:, :1], q2_sel, groups)
    for i in range(2):
        for k in range(2):
            for r in range(G):
                assert torch.allclose(out_full[i, r, k], ref_cca(cca, r, maps[i, r, k], labels[i, r, k]), atol=1e-12)
            want = ref_cca(cca, groups[i, 0], maps[i, 0, k], labels[i, 0, k])
            assert torch.allclose(out_sel[i, 0, k], want, atol=1e-12)
    # the gate is in (0, 1): |output| < |q1| elementwise
    assert (out_full.abs() < q1.abs() + 1e-15).all()
