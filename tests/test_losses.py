"""model.losses against brute-force definitions (float64), gradcheck and property tests."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from model.losses import PrototypeBank, attribute_bce, cosine_triplet, seen_mean, weighted_bce

from tests.references import eq7_loop

torch.set_num_threads(1)


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# --- cosine_triplet ---------------------------------------------------------------------------


def test_triplet_matches_loop_and_is_per_sample():
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(7, 5, generator=g, dtype=torch.float64) for _ in range(3))
    out = cosine_triplet(a, p, n, 0.4)
    assert out.shape == (7,)
    for i in range(7):
        want = max(0.0, 0.4 + _cos(n[i].tolist(), a[i].tolist()) - _cos(p[i].tolist(), a[i].tolist()))
        assert out[i].item() == pytest.approx(want, abs=1e-12)


def test_triplet_zero_when_margin_holds_and_scale_invariant():
    a = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    p = torch.tensor([[5.0, 0.1, 0.0]], dtype=torch.float64)  # s ~ 1, unnormalised on purpose
    n = torch.tensor([[0.0, 3.0, 0.0]], dtype=torch.float64)  # s = 0
    assert cosine_triplet(a, p, n, 0.4).item() == 0.0
    # swapped roles: the margin is violated by 1 + 0.4
    assert cosine_triplet(a, n, p, 0.4).item() == pytest.approx(0.4 + _cos([5, 0.1, 0], [1, 0, 0]))
    assert cosine_triplet(3 * a, p, n, 0.4).item() == 0.0


def test_triplet_gradcheck():
    g = torch.Generator().manual_seed(1)
    a, p, n = (torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    # margin large enough that every sample is active (relu kink away from the test points)
    assert torch.autograd.gradcheck(lambda a, p, n: cosine_triplet(a, p, n, 3.0), (a, p, n))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 6), d=st.integers(2, 8), margin=st.floats(0.0, 2.0))
def test_triplet_properties(seed, b, d, margin):
    g = torch.Generator().manual_seed(seed)
    a, p, n = (torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(3))
    out = cosine_triplet(a, p, n, margin)
    assert (out >= 0).all()
    assert (out <= margin + 2 + 1e-9).all()
    # positive == anchor and negative == -anchor: zero whenever margin <= 2
    assert cosine_triplet(a, a, -a, min(margin, 2.0)).abs().max() < 1e-9


# --- weighted_bce -----------------------------------------------------------------------------


def _bce_loop(logits, targets, w_p, mask):
    tot, cnt = 0.0, 0
    for i in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            if mask is not None and not mask[i, j]:
                continue
            x = 1 / (1 + math.exp(-logits[i, j].item()))
            y = targets[i, j].item()
            tot += -(w_p * y * math.log(x) + (1 - y) * math.log(1 - x))
            cnt += 1
    return tot / max(cnt, 1)


def test_bce_matches_eq7_loop_with_and_without_mask():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(5, 4, generator=g) > 0.6).double()
    mask = torch.rand(5, 4, generator=g) > 0.3
    for w_p in (1.0, 100.0):
        assert weighted_bce(logits, targets, w_p).item() == pytest.approx(_bce_loop(logits, targets, w_p, None), rel=1e-10)
        assert weighted_bce(logits, targets, w_p, mask).item() == pytest.approx(
            _bce_loop(logits, targets, w_p, mask), rel=1e-10
        )
    # w_p = 1 is plain BCE
    assert weighted_bce(logits, targets, 1.0).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, targets).item(), rel=1e-10
    )


@pytest.mark.parametrize("cpa", [[5, 10], [3, 1, 6, 2], [4]])
def test_attribute_bce_is_eq7_averaged_within_each_attribute(cpa):
    g = torch.Generator().manual_seed(4)
    n_img, C = 6, sum(cpa)
    logits = torch.randn(n_img, C, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(n_img, C, generator=g) > 0.6).double()
    annotated = torch.rand(n_img, len(cpa), generator=g) > 0.3
    annotated[0] = True
    class_attr = torch.repeat_interleave(torch.arange(len(cpa)), torch.tensor(cpa))
    for w_p in (1.0, 100.0):
        got = attribute_bce(logits, targets, w_p, class_attr, annotated, cpa).item()
        assert got == pytest.approx(eq7_loop(logits, targets, w_p, annotated, cpa), rel=1e-10)
    if len(set(cpa)) > 1:  # unequal class counts: the per-entry mean weights attributes by M_n, Eq. 7 does not
        entry = weighted_bce(logits, targets, 100.0, annotated[:, class_attr]).item()
        assert entry != pytest.approx(attribute_bce(logits, targets, 100.0, class_attr, annotated, cpa).item(), rel=1e-6)
    else:  # one class count: both averages agree
        assert weighted_bce(logits, targets, 3.0, annotated[:, class_attr]).item() == pytest.approx(
            attribute_bce(logits, targets, 3.0, class_attr, annotated, cpa).item(), rel=1e-10)
    none = attribute_bce(logits.requires_grad_(), targets, 1.0, class_attr, torch.zeros_like(annotated), cpa)
    assert none.item() == 0.0 and none.requires_grad


def test_attribute_bce_weighs_attributes_equally():
    """FashionAI-like: a 5-class and a 10-class attribute with the same per-class loss contribute the
    same; the per-entry mean would give the 10-class one twice the weight."""
    cpa = [5, 10]
    class_attr = torch.repeat_interleave(torch.arange(2), torch.tensor(cpa))
    logits = torch.zeros(2, 15, dtype=torch.float64)
    logits[0, :5] = 4.0  # image 0 is wrong (target 0, high logit) everywhere in attribute 0
    logits[1, 5:] = 4.0  # image 1 the same in attribute 1
    targets = torch.zeros(2, 15, dtype=torch.float64)
    ann = torch.tensor([[True, False], [False, True]])
    per_attr = attribute_bce(logits, targets, 1.0, class_attr, ann, cpa)
    only0 = attribute_bce(logits[:1], targets[:1], 1.0, class_attr, ann[:1], cpa)
    only1 = attribute_bce(logits[1:], targets[1:], 1.0, class_attr, ann[1:], cpa)
    assert only0.item() == pytest.approx(only1.item(), rel=1e-12)
    assert per_attr.item() == pytest.approx(only0.item(), rel=1e-12)


def test_seen_mean_ignores_unseen_rows():
    v = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64, requires_grad=True)
    assert seen_mean(v, torch.tensor([True, False, True, False])).item() == pytest.approx(2.5)
    z = seen_mean(v, torch.zeros(4, dtype=torch.bool))
    assert z.item() == 0.0 and z.requires_grad


def test_bce_stable_and_empty_mask():
    logits = torch.tensor([[80.0, -80.0]], dtype=torch.float32, requires_grad=True)
    targets = torch.tensor([[1.0, 0.0]])
    out = weighted_bce(logits, targets, 100.0)
    assert torch.isfinite(out) and out.item() < 1e-20
    out = weighted_bce(logits, 1 - targets, 100.0)
    assert torch.isfinite(out) and out.item() == pytest.approx((100 * 80 + 80) / 2, rel=1e-4)
    empty = weighted_bce(logits, targets, 1.0, torch.zeros(1, 2, dtype=torch.bool))
    assert empty.item() == 0.0
    empty.backward()
    assert logits.grad is not None and (logits.grad == 0).all()


def test_bce_gradcheck():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = (torch.rand(3, 4, generator=g) > 0.5).double()
    mask = torch.rand(3, 4, generator=g) > 0.2
    assert torch.autograd.gradcheck(lambda z: weighted_bce(z, targets, 7.0, mask), (logits,))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), w_p=st.floats(0.5, 200.0))
def test_bce_properties(seed, w_p):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 3, generator=g, dtype=torch.float64) * 10
    targets = (torch.rand(4, 3, generator=g) > 0.5).double()
    out = weighted_bce(logits, targets, w_p)
    assert out.item() >= 0 and math.isfinite(out.item())
    # confident correct predictions give (almost) zero loss
    assert weighted_bce((targets * 2 - 1) * 50, targets, w_p).item() < 1e-15


# --- PrototypeBank ----------------------------------------------------------------------------


def test_prototypes_first_update_then_ema_unit_norm():
    bank = PrototypeBank(4, 3, momentum=0.9).double()
    assert torch.allclose(bank.prototypes.norm(dim=1), torch.ones(4, dtype=torch.float64))
    untouched = bank.prototypes[3].clone()
    e1 = torch.tensor([[2.0, 0, 0], [0, 0, 5.0], [0, 3.0, 0]], dtype=torch.float64)
    bank.update(torch.tensor([0, 1, 1]), e1)
    # first sight: the mean of the normalised embeddings, renormalised
    assert torch.allclose(bank.get(torch.tensor([0])), torch.tensor([[1.0, 0, 0]], dtype=torch.float64))
    s = 1 / math.sqrt(2)
    assert torch.allclose(bank(torch.tensor([1])), torch.tensor([[0, s, s]], dtype=torch.float64))
    assert torch.equal(bank.prototypes[3], untouched)
    assert bank.seen.tolist() == [True, True, False, False]
    # second update: EMA with the old prototype, then renormalised
    bank.update(torch.tensor([0]), torch.tensor([[0, 4.0, 0]], dtype=torch.float64))
    want = F.normalize(torch.tensor([0.9, 0.1, 0], dtype=torch.float64), dim=0)
    assert torch.allclose(bank.prototypes[0], want)


def test_prototypes_no_grad():
    bank = PrototypeBank(2, 3)
    e = torch.randn(2, 3, requires_grad=True)
    bank.update(torch.tensor([0, 1]), e)
    assert not bank.prototypes.requires_grad
    assert e.grad is None


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6), steps=st.integers(1, 5), m=st.floats(0.0, 0.99))
def test_prototypes_stay_unit_norm(seed, k, steps, m):
    g = torch.Generator().manual_seed(seed)
    bank = PrototypeBank(k, 5, momentum=m)
    for _ in range(steps):
        ids = torch.randint(0, k, (7,), generator=g)
        bank.update(ids, torch.randn(7, 5, generator=g) * 10)
        assert torch.allclose(bank.prototypes.norm(dim=1), torch.ones(k), atol=1e-5)
