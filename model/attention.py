"""Spatial and channel-wise conditional attention (paper Algorithms 1 and 2), factored to be cheap.

    SCA(F, l):  p1 = tanh(T(F))                        Alg. 1 step 5   (c' x L)
                p2 = tanh(W1 E1(l) + b1)               Alg. 1 step 6   (c')
                alpha_l = softmax_L(p2 . p1 / sqrt(c'))  Alg. 1 step 7   (L); SCA(F, l) = alpha_l * F
    CCA(F, l):  q1 = sum over positions of F           Alg. 2 step 5   (c; a vector stays itself)
                q2 = relu(W2 E2(l) + b2)               Alg. 2 step 6   (c')
                beta_l = sigmoid(W4 relu(W3 [q1; q2] + b3) + b4)  Alg. 2 step 7; CCA(F, l) = beta_l * q1

:class:`SpatialConditionalAttention` and :class:`ChannelConditionalAttention` each compute one of
them in ``forward``; :func:`pool` is Alg. 2 step 5 on an attended map. Each module holds ``groups``
independent copies (1 for the attribute-conditional SCA-A / CCA-A, N for the per-attribute
class-conditional SCA-C_n / CCA-C_n) and a label table per copy (attributes, or the classes of
that attribute padded to the largest M_n).

Why the factoring (docs/PROTOCOL.md#m3-net, the last choice listed there): the spatial attention
map is one scalar per position, so the attended map alpha * psi is never built; every later use
of it is a pooled vector, i.e. a (rows x hw) @ (hw x c) batched product against the map it came
from (:func:`pool`). T is a 1x1 conv, hence T(alpha * psi) = alpha * (W psi) + b: the conv runs on
psi once per image, never per class (``prior_brl`` of SCA's forward). Label-side transforms (p2,
q2) depend on the label only, so they are computed once per call for the whole label table and
then gathered as vectors; per-pair weight matrices are never gathered.

Rows and labels: the modules take (B, R, K) label ids, K labels for each of R rows per image,
and ``group_br`` (B, R), the copy (group) each row uses. ``group_br`` None means one copy
(G == 1) or, with G copies, that the R == G rows are the groups in order.

Shape names: B images, R rows per image (attributes), K labels per row (classes, or the N
attributes of SCA-A's one row), L = h*w positions, G groups, c trunk channels, d = c' inner channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def grouped_linear(
    x: torch.Tensor, weight_gio: torch.Tensor, bias_go: torch.Tensor | None, group_br: torch.Tensor | None
) -> torch.Tensor:
    """Apply group g's linear map to x (B, R, K, in) -> (B, R, K, out); ``bias_go`` may be None.

    ``group_br`` None means the R axis *is* the group axis (R == G, rows in group order: one
    einsum, each row pays for its own group only). Otherwise (B, R) group ids: every group is
    applied and the row's group is selected -- G times the arithmetic on small vectors, cheaper
    than gathering a weight matrix per row.
    """
    G = weight_gio.shape[0]
    if G == 1:
        out = x @ weight_gio[0]
        return out if bias_go is None else out + bias_go[0]
    if group_br is None:
        out = torch.einsum("brki,rio->brko", x, weight_gio)
        return out if bias_go is None else out + bias_go[None, :, None, :]
    B, R, K, _ = x.shape
    all_brkgo = torch.einsum("brki,gio->brkgo", x, weight_gio)  # (B, R, K, G, out)
    if bias_go is not None:
        all_brkgo = all_brkgo + bias_go
    idx = group_br[:, :, None, None, None].expand(B, R, K, 1, all_brkgo.shape[-1])
    return all_brkgo.gather(3, idx).squeeze(3)


def gather_labels(table_gld: torch.Tensor, label_brk: torch.Tensor, group_br: torch.Tensor | None,
                  size: tuple[int, int, int] | torch.Size) -> torch.Tensor:
    """Rows of a per-group label table (G, labels, d) for label ids -> (*size, d), size = (B, R, K).

    ``label_brk`` may be any shape that broadcasts to ``size`` (e.g. (1, 1, N): the same N labels
    for every image): rows are gathered at its shape, then expanded, so a shared label is looked
    up once. ``group_br`` as in the module docstring."""
    if table_gld.shape[0] == 1:
        rows = table_gld[0][label_brk]
    else:
        if group_br is None:  # rows are the groups in order
            group_br = torch.arange(label_brk.shape[1], device=label_brk.device)[None, :]
        rows = table_gld[group_br[:, :, None], label_brk]
    return rows.expand(*size, rows.shape[-1])


def pool(weight_brkl: torch.Tensor, feat_bcl: torch.Tensor) -> torch.Tensor:
    """q1 (Alg. 2 step 5) of the attended maps weight * feat without building them:
    sum_l weight_l feat_l for every row and label, (B, R, K, L), (B, c, L) -> (B, R, K, c), one
    (R*K x L) @ (L x c) product per image."""
    B, R, K, L = weight_brkl.shape
    return torch.bmm(weight_brkl.reshape(B, R * K, L), feat_bcl.transpose(1, 2)).view(B, R, K, -1)


class SpatialConditionalAttention(nn.Module):
    """Algorithm 1 (SCA): alpha_l = softmax_positions(sum_i [tanh(W1 E1(l)) * tanh(T psi)]_i / sqrt(c'))."""

    def __init__(self, *, in_channels: int, inner_dim: int, num_labels: int, groups: int = 1):
        super().__init__()
        self.groups, self.inner_dim = groups, inner_dim
        # T: one 1x1 conv with G*c' outputs, so all groups' transforms are one matmul per image
        self.transform = nn.Conv2d(in_channels, groups * inner_dim, kernel_size=1)
        self.label_embedding = nn.Parameter(torch.randn(groups, num_labels, inner_dim))  # E1
        self.label_weight = nn.Parameter(torch.empty(groups, inner_dim, inner_dim))  # W1 (in, out)
        self.label_bias = nn.Parameter(torch.zeros(groups, inner_dim))
        nn.init.uniform_(self.label_weight, -1 / math.sqrt(inner_dim), 1 / math.sqrt(inner_dim))

    def forward(self, feat_bcl: torch.Tensor, label_brk: torch.Tensor, group_br: torch.Tensor | None = None,
                prior_brl: torch.Tensor | None = None) -> torch.Tensor:
        """alpha (B, R, K, L) of SCA(F, l) for the map F = prior * feat of each row and its K labels
        (``label_brk`` (B, R, K), or any shape that broadcasts to it along B).

        ``feat_bcl`` (B, c, L) is the map all rows start from; ``prior_brl`` (B, R, L) an earlier
        attention map the row's input is weighted by (None: F = feat). F is never built:
        T(prior * feat) = prior * (W feat) + b.
        """
        _, bias_gd = self.transform_weight()
        lin_bgdl = self.linear_part(feat_bcl)  # W feat for every group, (B, G, d, L)
        if group_br is not None and self.groups > 1:
            B, R = group_br.shape
            lin_brdl = lin_bgdl.gather(1, group_br[:, :, None, None].expand(B, R, *lin_bgdl.shape[2:]))
            bias_brd1 = bias_gd[group_br][..., None]
        else:
            lin_brdl, bias_brd1 = lin_bgdl, bias_gd[None, :, :, None]
        if prior_brl is not None:
            lin_brdl = prior_brl[:, :, None, :] * lin_brdl
        p1_brdl = torch.tanh(lin_brdl + bias_brd1)  # step 5, (B, R, d, L)
        size = (feat_bcl.shape[0], *label_brk.shape[1:])
        p2_brkd = gather_labels(self.label_features(), label_brk, group_br, size)  # step 6, (B, R, K, d)
        return self.attention(p1_brdl, p2_brkd)  # step 7

    def label_features(self) -> torch.Tensor:
        """p2 for every label of every group (step 6): (G, labels, d)."""
        return torch.tanh(torch.bmm(self.label_embedding, self.label_weight) + self.label_bias[:, None, :])

    def transform_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """T as a matrix: W (G, d, c) and b (G, d)."""
        G, d = self.groups, self.inner_dim
        return self.transform.weight.view(G, d, -1), self.transform.bias.view(G, d)

    def linear_part(self, feat_bcl: torch.Tensor) -> torch.Tensor:
        """W psi without the bias, for every group at once: (B, c, L) -> (B, G, d, L), a view.

        One GEMM over all B*L positions, (B*L, c) @ (c, G*d): with a channels_last trunk, psi's
        (B, L, c) transpose is already contiguous, so nothing is copied and the GEMM is large
        (as a per-image batched product it ran as sm80 CUTLASS kernels in an H200 profile)."""
        B, _, L = feat_bcl.shape
        weight_gdc, _ = self.transform_weight()
        out_blo = F.linear(feat_bcl.transpose(1, 2), weight_gdc.reshape(-1, weight_gdc.shape[-1]))  # (B, L, G*d)
        return out_blo.view(B, L, self.groups, -1).permute(0, 2, 3, 1)

    def attention(self, image_brdl: torch.Tensor, label_brkd: torch.Tensor) -> torch.Tensor:
        """Step 7 for K labels per row: p1 (B, R, d, L), p2 (B, R, K, d) -> alpha (B, R, K, L)."""
        logits_brkl = torch.matmul(label_brkd, image_brdl) / math.sqrt(self.inner_dim)
        return logits_brkl.softmax(dim=-1)


class ChannelConditionalAttention(nn.Module):
    """Algorithm 2 (CCA): beta_l = sigmoid(W4 relu(W3 [q1; relu(W2 E2(l))])); output beta_l * q1.

    W3 [q1; q2] = W3_q q1 + W3_l q2: the second half depends on the label only, so it is computed
    once per label (:meth:`label_features`) and the per-(image, label) work is W3_q q1 (c inputs,
    not c + d) with no concatenated copy of q1.
    """

    def __init__(self, *, in_channels: int, inner_dim: int, num_labels: int, groups: int = 1):
        super().__init__()
        c, d = in_channels, inner_dim
        self.groups, self.in_channels = groups, c
        self.label_embedding = nn.Parameter(torch.randn(groups, num_labels, d))  # E2
        self.w2 = nn.Parameter(torch.empty(groups, d, d))
        self.b2 = nn.Parameter(torch.zeros(groups, d))
        self.w3 = nn.Parameter(torch.empty(groups, c + d, d))
        self.b3 = nn.Parameter(torch.zeros(groups, d))
        self.w4 = nn.Parameter(torch.empty(groups, d, c))
        self.b4 = nn.Parameter(torch.zeros(groups, c))
        for w in (self.w2, self.w3, self.w4):  # nn.Linear's default range, fan_in = w.shape[1]
            nn.init.uniform_(w, -1 / math.sqrt(w.shape[1]), 1 / math.sqrt(w.shape[1]))

    def forward(self, q1_brkc: torch.Tensor, label_brk: torch.Tensor, group_br: torch.Tensor | None = None):
        """CCA(F, l) = beta_l * q1 (Eq. 2, 5, 6) for K labels per row: q1 (B, R, K, c), the pooled
        input (:func:`pool`; a vector is its own q1), and label ids broadcastable to (B, R, K)
        -> (B, R, K, c)."""
        label_brkd = gather_labels(self.label_features(), label_brk, group_br, q1_brkc.shape[:-1])
        return self.gate(q1_brkc, label_brkd, group_br)

    def label_features(self) -> torch.Tensor:
        """For every label of every group, q2 = relu(W2 E2 + b2) (step 6) carried through W3's label
        half: W3_l q2 + b3, (G, labels, d)."""
        q2_gld = F.relu(torch.bmm(self.label_embedding, self.w2) + self.b2[:, None, :])
        return torch.bmm(q2_gld, self.w3[:, self.in_channels:]) + self.b3[:, None, :]

    def gate(self, q1_brkc: torch.Tensor, label_brkd: torch.Tensor, group_br: torch.Tensor | None = None):
        """Step 7 on (B, R, K, c) pooled features and (B, R, K, d) rows of :meth:`label_features`
        -> beta * q1, (B, R, K, c)."""
        w3q_gcd = self.w3[:, : self.in_channels]
        hidden_brkd = F.relu(grouped_linear(q1_brkc, w3q_gcd, None, group_br) + label_brkd)
        beta_brkc = torch.sigmoid(grouped_linear(hidden_brkd, self.w4, self.b4, group_br))
        return beta_brkc * q1_brkc
