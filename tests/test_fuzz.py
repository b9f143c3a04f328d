"""Property fuzzing of every public op and module (docs/semantics.md §1, checks).

Hypothesis draws shapes with 0 and 1 in every dimension, a floating dtype, a memory layout
(contiguous, a strided slice, a transposed view, rows expanded with stride 0; channels_last
for maps), NaN/Inf at a random place, labels and hash values at and past their bounds,
hyperparameters and mode strings valid and not. The property, per example:
  - a bad argument raises ValueError, TypeError or RuntimeError whose message names it;
  - otherwise the result on the drawn layout is bitwise the result on a contiguous copy (the
    ops copy to contiguous memory first, so the layout never changes a summation order; the
    pure-PyTorch modules agree within TOLERANCE, as torch's matmul picks kernels by layout),
    equals the reference (finegrained_ops.reference) on the contiguous float64 copy within
    TOLERANCE (the rows a NaN or Inf touches may be non-finite; the others must match).
Each example runs in-process. The direct `_C` calls that would reach memory with bad values
run in a subprocess, so a crash fails that test instead of ending the run. Examples per test:
the hypothesis profile's max_examples (40 in CI; HYPOTHESIS_PROFILE=thorough for 400).
"""
import copy
import importlib
import inspect
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import finegrained_ops as fo
from finegrained_ops import reference

from .helpers import assert_relative_close
from .registry import CALLS, NOT_OP_MODULES, NOT_OPS, REGISTRY
from .registry import results as registry_results

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# Relative to the result's largest entry: half types are computed in float32 and rounded back.
TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 2e-2, torch.float32: 1e-4, torch.float64: 1e-10}
LAYOUTS = ["contiguous", "strided", "transposed", "expanded"]
ERRORS = (ValueError, TypeError, RuntimeError)


def with_layout(t, layout):
    """t's values (or, for 'expanded', its first row repeated) in a non-contiguous layout."""
    if layout == "strided":
        wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == "transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "expanded" and t.shape[0] >= 1:
        return t[:1].expand_as(t)
    return t


def same_bits(a, b):
    return (a.shape == b.shape and a.dtype == b.dtype
            and bool(((a == b) | (a.isnan() & b.isnan())).all()))


def raises_naming(fn, *names):
    with pytest.raises(ERRORS) as error:
        fn()
    assert any(name in str(error.value) for name in names), (names, str(error.value))


@st.composite
def features(draw, shape, dtype):
    """Standard normal values of `shape` in `dtype`, seeded by hypothesis."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def poison(draw, t, value):
    """t with `value` at one random place (t unchanged when it is empty)."""
    t = t.clone()
    if t.numel():
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = value
    return t


# ---------------------------------------------------------------------------------------------
# Kernel pooling and compact bilinear pooling

@given(data=st.data(), n=st.integers(0, 3), locations=st.integers(0, 4),
       channels=st.integers(0, 5), dim=st.integers(1, 9), order=st.integers(1, 4),
       dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       fault=st.sampled_from([None, None, "nan", "inf", "hash_high", "hash_low", "sign"]))
def test_kernel_pooling(data, n, locations, channels, dim, order, dtype, layout, fault):
    x = data.draw(features((n, locations, channels), dtype))
    if channels:
        hash_index, hash_sign = fo.draw_hashes(channels, max(dim, 2), order, seed=3)
    else:  # draw_hashes wants channels; the op takes none
        hash_index, hash_sign = torch.empty(order, 0, dtype=torch.int64), torch.empty(order, 0)
    alpha = data.draw(features((order + 1,), dtype))
    if fault in ("nan", "inf"):
        x = poison(data.draw, x, math.nan if fault == "nan" else math.inf)
    elif fault == "hash_high":
        hash_index = poison(data.draw, hash_index, dim)
    elif fault == "hash_low":
        hash_index = poison(data.draw, hash_index, -1)
    elif fault == "sign":
        hash_sign = poison(data.draw, hash_sign, 0.5)
    hash_sign = hash_sign.to(dtype)
    xl = with_layout(x, layout)
    run = lambda t: fo.kernel_pooling(t, hash_index, hash_sign, alpha, dim)  # noqa: E731

    if dim < 2:
        return raises_naming(lambda: run(xl), "dim")
    if fault in ("hash_high", "hash_low", "sign") and channels:  # checked as the table is built
        return raises_naming(lambda: run(xl), "hash_sign" if fault == "sign" else "hash_index")
    if locations == 0:
        return raises_naming(lambda: run(xl), "location")
    y = run(xl)
    xc = xl.contiguous()
    assert same_bits(y, run(xc))
    assert y.shape == (n, 1 + channels + (order - 1) * dim) and y.dtype == dtype
    if n == 0:  # (the reference's FFT refuses an empty batch)
        return
    expected = reference.kernel_pooling(xc.double(), hash_index, hash_sign.double(),
                                        alpha.double(), dim)
    finite = torch.isfinite(xc).flatten(1).all(1)
    assert_relative_close(y[finite].double(), expected[finite], TOLERANCE[dtype])


@given(data=st.data(), n=st.integers(0, 3), locations=st.integers(1, 4),
       channels=st.integers(1, 5), y_channels=st.integers(1, 5), dim=st.integers(2, 9),
       dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS))
def test_two_input_compact_bilinear_pooling(data, n, locations, channels, y_channels, dim, dtype,
                                            layout):
    x = with_layout(data.draw(features((n, locations, channels), dtype)), layout)
    y = with_layout(data.draw(features((n, locations, y_channels), dtype)), layout)
    hash_index, hash_sign = fo.draw_two_input_hashes(channels, y_channels, dim, seed=3)
    out = fo.compact_bilinear_pooling(x, hash_index, hash_sign.to(dtype), dim, y=y)
    assert out.shape == (n, dim) and out.dtype == dtype
    if n == 0:
        return
    expected = reference.compact_bilinear_pooling(
        x.double(), y.double(), (hash_index[0, :channels], hash_sign[0, :channels]),
        (hash_index[1, channels:], hash_sign[1, channels:]), dim)
    finite = (torch.isfinite(x).flatten(1).all(1) & torch.isfinite(y).flatten(1).all(1))
    assert_relative_close(out[finite].double(), expected[finite], TOLERANCE[dtype])


@given(data=st.data(), n=st.integers(0, 3), channels=st.integers(1, 4), h=st.integers(1, 3),
       w=st.integers(1, 3), dtype=st.sampled_from([torch.float32, torch.float64]),
       order=st.integers(1, 3), bilinear=st.booleans())
def test_pooling_modules_take_any_memory_format(data, n, channels, h, w, dtype, order,
                                                bilinear):
    module = (fo.nn.CompactBilinearPooling(channels, 8) if bilinear
              else fo.nn.KernelPooling(channels, 8, order=order, alpha="ones")).to(dtype)
    maps = data.draw(features((n, channels, h, w), dtype))
    y = module(maps)
    assert y.shape == (n, module.output_dim)
    assert same_bits(module(maps.to(memory_format=torch.channels_last)), y)
    assert same_bits(module(with_layout(maps, "strided")), module(with_layout(maps, "strided")
                                                                  .contiguous()))


# ---------------------------------------------------------------------------------------------
# Class-balanced loss

CB_FAULTS = {"label_high": "target", "label_low": "target", "target_two": "target",
             "zero_count": "samples_per_class", "loss_type": "loss_type",
             "reduction": "reduction", "beta": "beta", "beta_one": "beta"}


@given(data=st.data(), n=st.integers(0, 5), c=st.integers(1, 6), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), loss_type=st.sampled_from(["softmax", "sigmoid", "focal"]),
       reduction=st.sampled_from(["mean", "sum", "none"]), multi_hot=st.booleans(),
       beta=st.sampled_from([0.0, 0.9, 0.9999]),
       fault=st.sampled_from([None] * 6 + ["nan", "ignored"] + list(CB_FAULTS)))
def test_class_balanced_loss(data, n, c, dtype, layout, loss_type, reduction, multi_hot, beta,
                             fault):
    logits = data.draw(features((n, c), dtype)) * 4
    counts = torch.arange(1, c + 1) * 7
    if multi_hot:
        loss_type = "sigmoid" if loss_type == "softmax" else loss_type
        target = (data.draw(features((n, c), torch.float64)) > 0.5).to(dtype)
    else:
        target = torch.arange(n) % c
    if fault == "nan":
        logits = poison(data.draw, logits, math.nan)
    elif fault in ("label_high", "label_low", "ignored") and not multi_hot:
        target = poison(data.draw, target,
                        {"label_high": c, "label_low": -2, "ignored": -100}[fault])
    elif fault == "target_two" and multi_hot:
        target = poison(data.draw, target, 2.0)
    elif fault == "zero_count":
        counts = poison(data.draw, counts, 0)
    loss_type = "hinge" if fault == "loss_type" else loss_type
    reduction = "avg" if fault == "reduction" else reduction
    beta = {"beta": -0.5, "beta_one": 1.0}.get(fault, beta)
    zl = with_layout(logits, layout).requires_grad_(dtype in (torch.float32, torch.float64))
    run = lambda z: fo.class_balanced_loss(z, target, counts, beta=beta, gamma=0.5, loss_type=loss_type,  # noqa: E731
                                           reduction=reduction)

    # Target faults need a sample, of the target's kind (index or multi-hot).
    applies = fault in CB_FAULTS and not (CB_FAULTS[fault] == "target" and (
        n == 0 or multi_hot != (fault == "target_two")))
    if applies:
        return raises_naming(lambda: run(zl), CB_FAULTS[fault])
    loss = run(zl)
    zc = zl.detach().contiguous().requires_grad_(zl.requires_grad)
    loss_c = run(zc)
    assert same_bits(loss, loss_c)
    if zl.requires_grad and torch.isfinite(loss_c).all():
        assert same_bits(torch.autograd.grad(loss.sum(), zl)[0],
                         torch.autograd.grad(loss_c.sum(), zc)[0])
    expected = reference.class_balanced_loss(zc.detach().double(), target.double()
                                             if multi_hot else target, counts, beta, 0.5,
                                             loss_type, reduction)
    rows = torch.isfinite(zc.detach()).all(1)
    if reduction == "none":
        assert_relative_close(loss.detach()[rows].double(), expected[rows], TOLERANCE[dtype])
    elif bool(rows.all()):
        assert_relative_close(loss.detach().double(), expected, TOLERANCE[dtype])


# ---------------------------------------------------------------------------------------------
# The long-tail softmax family (same native loss: offsets, margins, scale, focal, soft targets)

LONG_TAIL = {  # name: (native, reference, keyword arguments, takes counts, takes soft targets)
    "logit_adjusted_loss": (fo.logit_adjusted_loss, reference.logit_adjusted_loss,
                            dict(tau=1.0), True, True),
    "balanced_softmax_loss": (fo.balanced_softmax_loss, reference.balanced_softmax_loss, {},
                              True, True),
    "ldam_loss": (fo.ldam_loss, reference.ldam_loss, dict(scale=5.0), True, False),
    "softmax_focal_loss": (fo.softmax_focal_loss, reference.softmax_focal_loss,
                           dict(gamma=0.5), False, True),
}
LONG_TAIL_FAULTS = {"label_high": "target", "soft_sum": "summing to 1",
                    "zero_count": "samples_per_class", "hyperparameter": ("tau", "scale", "gamma"),
                    "reduction": "reduction"}


@given(data=st.data(), name=st.sampled_from(sorted(LONG_TAIL)), n=st.integers(0, 5),
       c=st.integers(1, 6), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       reduction=st.sampled_from(["mean", "sum", "none"]), soft=st.booleans(),
       fault=st.sampled_from([None] * 5 + ["nan", "ignored"] + list(LONG_TAIL_FAULTS)))
def test_long_tail_losses(data, name, n, c, dtype, layout, reduction, soft, fault):
    native, ref, kwargs, takes_counts, takes_soft = LONG_TAIL[name]
    soft = soft and takes_soft
    logits = data.draw(features((n, c), dtype)) * 4
    counts = torch.arange(1, c + 1) * 7
    if soft:
        target = torch.softmax(data.draw(features((n, c), torch.float64)), 1).to(dtype)
    else:
        target = torch.arange(n) % c
    if fault == "nan":
        logits = poison(data.draw, logits, math.nan)
    elif fault in ("label_high", "ignored") and not soft:
        target = poison(data.draw, target, {"label_high": c, "ignored": -100}[fault])
    elif fault == "soft_sum" and soft:
        target = target * 2
    elif fault == "zero_count":
        counts = poison(data.draw, counts, 0)
    if fault == "hyperparameter":
        kwargs = {key: -1.0 for key in kwargs}
    if fault == "reduction":
        reduction = "avg"
    zl = with_layout(logits, layout).requires_grad_(dtype in (torch.float32, torch.float64))

    def run(f, z, t):
        return f(*((z, t, counts) if takes_counts else (z, t)), reduction=reduction, **kwargs)

    applies = fault in LONG_TAIL_FAULTS and not (
        (fault == "label_high" and (n == 0 or soft)) or (fault == "soft_sum" and (n == 0 or not soft))
        or (fault == "zero_count" and not takes_counts) or (fault == "hyperparameter" and not kwargs))
    if applies:
        names = LONG_TAIL_FAULTS[fault]
        return raises_naming(lambda: run(native, zl, target),
                             *(names if isinstance(names, tuple) else (names,)))
    loss = run(native, zl, target)
    zc = zl.detach().contiguous().requires_grad_(zl.requires_grad)
    loss_c = run(native, zc, target)
    assert same_bits(loss, loss_c)
    if zl.requires_grad and torch.isfinite(loss_c).all():
        assert same_bits(torch.autograd.grad(loss.sum(), zl)[0],
                         torch.autograd.grad(loss_c.sum(), zc)[0])
    # Compared where the reference is accurate: its float64 log-sum-exp cancels for losses
    # below ~1e-12 (LDAM's scaled margins), where ours keeps its precision (log1p; tested in
    # test_long_tail_losses.py). The reference is rounded to the result's dtype (float16
    # underflows there too).
    expected = run(ref, zc.detach().double(), target.double() if soft else target)
    expected = expected.to(dtype).double()
    rows = torch.isfinite(zc.detach()).all(1)
    if reduction == "none":
        rows &= expected.abs() > 1e-12
        assert_relative_close(loss.detach()[rows].double(), expected[rows], TOLERANCE[dtype])
    elif bool(rows.all()) and torch.isfinite(expected) and expected.abs() > 1e-12:
        assert_relative_close(loss.detach().double(), expected, TOLERANCE[dtype])


# ---------------------------------------------------------------------------------------------
# Confident rows: every loss of the family, exact where p_y -> 1 and at |s z| up to 1e30

SCALES = (1.0, 30.0, 64.0)
# name: (native, reference, keyword arguments); LDAM takes the scale, the others see s z.
CONFIDENT_FAMILY = {
    **{name: (native, ref, kwargs) for name, (native, ref, kwargs, _, _) in LONG_TAIL.items()},
    **{f"class_balanced_{loss_type}": (
        lambda z, t, counts, loss_type=loss_type, **kw: fo.class_balanced_loss(
            z, t, counts, loss_type=loss_type, gamma=0.5, **kw),
        lambda z, t, counts, loss_type=loss_type, **kw: reference.class_balanced_loss(
            z, t, counts, loss_type=loss_type, gamma=0.5, **kw), {})
       for loss_type in ("softmax", "sigmoid", "focal")},
}


def confident_rows(scale, c=10):
    """(N, c) float32 logits z, (N,) targets and counts for losses that see s z: the outside
    report's sweep (the true class leads -1 by 0.5..1), random rows led by the true class,
    rows tied at the maximum, the same rows with the true class not leading, and all of them
    again with |s z| growing to 1e30."""
    g = torch.Generator().manual_seed(0)
    sweep = torch.full((501, c), -1.0)
    sweep[:, 0] = torch.linspace(0.5, 1.0, 501)
    led = torch.rand(64, c, generator=g) * 2 - 1
    led[:, 0] = 1.0
    tied = led[:8].clone()
    tied[:, 1] = 1.0
    base = torch.cat([sweep, led, tied])
    target = torch.zeros(len(base), dtype=torch.int64)
    target[-40:] = c - 1  # the true class below the maximum
    growth = torch.logspace(0, 30, 31, dtype=torch.float64) / scale
    big = (base[::16, None].double() * growth[None, :, None]).flatten(0, 1).float()
    logits = torch.cat([base, big])
    target = torch.cat([target, target[::16].repeat_interleave(len(growth))])
    counts = (1000 * 0.6 ** torch.arange(c, dtype=torch.float64)).ceil().long()
    return logits, target, counts


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", sorted(CONFIDENT_FAMILY))
def test_confident_rows_are_exact_and_nonnegative(name, scale):
    """Per sample: loss >= 0, finite, and equal to the float64 reference; the gradient equal
    to the reference's. Caught LDAM's contracted scale (negative and -inf losses)."""
    assert_confident_rows_exact(*CONFIDENT_FAMILY[name], name, scale)


def assert_confident_rows_exact(native, ref, kwargs, name, scale, c=10):
    """The loss of each row within rtol = 1e-4 + 4 eps s max|z| of the reference's (1e-13
    absolute where the reference's log-sum-exp cancels), its gradient within rtol of the
    row's largest entry. The s max|z| term is the loss's own float32 conditioning: rounding the
    adjusted logits z + b - m (a relative eps each) moves s (z - max z) by eps s |z|."""
    logits, target, counts = confident_rows(scale, c)
    kwargs = dict(kwargs)
    if name == "ldam_loss":
        kwargs["scale"] = scale
    else:
        logits = logits * scale
    results = []
    for fn, z in ((native, logits), (ref, logits.double())):
        z = z.clone().requires_grad_()
        args = (z, target) if name == "softmax_focal_loss" else (z, target, counts)
        loss = fn(*args, reduction="none", **kwargs)
        results.append((loss.detach().double(), torch.autograd.grad(loss.sum(), z)[0].double()))
    (loss, grad), (expected, expected_grad) = results
    assert bool(torch.isfinite(loss).all()) and bool((loss >= 0).all()), \
        f"{int((loss < 0).sum())} negative, {int((~torch.isfinite(loss)).sum())} non-finite"
    s = kwargs.get("scale", 1.0)
    rtol = 1e-4 + 4 * torch.finfo(torch.float32).eps * s * (logits.double().abs().amax(1) + 10)
    error = (loss - expected).abs()
    bad = error > rtol * expected.abs() + 1e-13
    assert not bad.any(), f"{int(bad.sum())} rows differ, worst {float((error / expected).max())}"
    row_scale = expected_grad.abs().amax(dim=1)
    bad = (grad - expected_grad).abs().amax(dim=1) > rtol * row_scale + 1e-13 * s * c
    assert not bad.any(), f"{int(bad.sum())} rows' gradients differ"


# ---------------------------------------------------------------------------------------------
# Triplet loss and mining

# One fault per example (None: a valid call): each bad argument and the message naming it.
TRIPLET_FAULTS = {"nan": "embeddings", "inf": "embeddings", "float_labels": "labels",
                  "short_labels": "labels", "negatives": "negatives", "margin": "margin",
                  "nan_margin": "margin", "fraction": "positive_fraction",
                  "reduction": "reduction"}


@given(data=st.data(), b=st.integers(0, 9), d=st.integers(1, 4), classes=st.integers(1, 3),
       dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       negatives=st.sampled_from(["violating", "semihard", "hardest", "all"]),
       reduction=st.sampled_from(["mean_nonzero", "mean", "sum"]),
       margin=st.sampled_from([0.0, 0.2, 1.0]), positive_fraction=st.sampled_from([1.0, 0.5]),
       squared=st.booleans(), normalize=st.booleans(),
       fault=st.sampled_from([None] * 6 + list(TRIPLET_FAULTS)))
def test_triplet_loss_and_mining(data, b, d, classes, dtype, layout, negatives, reduction,
                                 margin, positive_fraction, squared, normalize, fault):
    emb = data.draw(features((b, d), dtype))
    labels = torch.arange(b) % classes
    if fault in ("nan", "inf"):
        emb = poison(data.draw, emb, math.nan if fault == "nan" else math.inf)
        layout = "strided" if layout == "expanded" else layout  # keep the poisoned row
    elif fault == "float_labels":
        labels = labels.double()
    elif fault == "short_labels":
        labels = labels[:-1] if b else torch.zeros(1, dtype=torch.int64)
    negatives = "hard" if fault == "negatives" else negatives
    margin = {"margin": -0.1, "nan_margin": math.nan}.get(fault, margin)
    positive_fraction = 0.0 if fault == "fraction" else positive_fraction
    reduction = "max" if fault == "reduction" else reduction
    el = with_layout(emb, layout).requires_grad_(dtype in (torch.float32, torch.float64))
    options = dict(margin=margin, negatives=negatives, positive_fraction=positive_fraction,
                   squared=squared, normalize=normalize)
    loss = lambda e: fo.triplet_margin_loss(e, labels, reduction=reduction,  # noqa: E731
                                            **options)
    mine = lambda e: fo.mine_triplets(e, labels, **options)  # noqa: E731

    if fault and not (fault in ("nan", "inf") and b == 0):
        return raises_naming(lambda: loss(el), TRIPLET_FAULTS[fault])
    ec = el.detach().contiguous().requires_grad_(el.requires_grad)
    mined = mine(el)
    assert all(torch.equal(a, c) for a, c in zip(mined, mine(ec)))
    counts = fo.count_triplets(el, labels, **options)
    assert torch.equal(counts, torch.bincount(mined[0], minlength=b))
    value, value_c = loss(el), loss(ec)
    assert same_bits(value, value_c)
    if el.requires_grad:
        assert same_bits(torch.autograd.grad(value, el)[0], torch.autograd.grad(value_c, ec)[0])
    if b == 0:  # (the reference's reductions refuse an empty batch)
        assert value == 0 and mined[0].numel() == 0
        return
    expected = reference.triplet_margin_loss(ec.detach().double(), labels, reduction=reduction,
                                             **options)
    assert_relative_close(value.detach().double(), expected.detach(), TOLERANCE[dtype])
    if dtype == torch.float64:
        assert all(torch.equal(a, c) for a, c in
                   zip(mined, reference.mine_triplets(ec.detach(), labels, **options)))


@given(data=st.data(), q=st.integers(0, 6), n=st.integers(0, 8), classes=st.integers(1, 3),
       chunk_size=st.integers(1, 7), layout=st.sampled_from(LAYOUTS),
       fault=st.sampled_from([None, None, "index_high", "index_low", "chunk_zero"]))
def test_mine_from_bank(data, q, n, classes, chunk_size, layout, fault):
    bank = data.draw(features((n, 3), torch.float64))
    query = data.draw(features((q, 3), torch.float64))
    bank_labels, query_labels = torch.arange(n) % classes, torch.arange(q) % classes
    query_indices = torch.full((q,), -1)
    if fault == "index_high":
        query_indices = poison(data.draw, query_indices, n)
    elif fault == "index_low":
        query_indices = poison(data.draw, query_indices, -2)
    elif fault == "chunk_zero":
        chunk_size = 0
    run = lambda b: fo.mine_from_bank(query, query_labels, b, bank_labels,  # noqa: E731
                                      per_anchor=None, query_indices=query_indices,
                                      chunk_size=chunk_size)
    bl = with_layout(bank, layout)
    if fault == "chunk_zero":
        return raises_naming(lambda: run(bl), "chunk_size")
    if q and fault in ("index_high", "index_low"):
        return raises_naming(lambda: run(bl), "query_indices")
    mined = run(bl)
    assert all(torch.equal(a, c) for a, c in zip(mined, run(bl.contiguous())))
    expected = reference.mine_from_bank(query, query_labels, bl.contiguous(), bank_labels,
                                        query_indices=query_indices)
    assert all(torch.equal(a, c) for a, c in zip(mined, expected))


# ---------------------------------------------------------------------------------------------
# The pure-PyTorch retrieval surface: descriptors, iSQRT-COV, post-processing, losses

DESCRIPTOR_FNS = {"mac": fo.retrieval.mac, "spoc": fo.retrieval.spoc, "gem": fo.retrieval.gem,
                  "rmac": fo.retrieval.rmac, "crow": fo.retrieval.crow,
                  "isqrt_cov": fo.retrieval.isqrt_cov}


@given(data=st.data(), name=st.sampled_from(sorted(DESCRIPTOR_FNS)), n=st.integers(0, 2),
       c=st.integers(1, 3), h=st.integers(0, 3), w=st.integers(1, 3),
       dtype=st.sampled_from(DTYPES + [torch.int64, torch.complex64]),
       layout=st.sampled_from(LAYOUTS), fault=st.sampled_from([None, None, "nan", "negative"]))
def test_descriptors(data, name, n, c, h, w, dtype, layout, fault):
    """A bad map (not floating, H or W = 0, negative for CroW) raises naming x; otherwise a
    (N, C) or (N, C (C + 1) / 2) result in x's dtype, finite where x is, equal across layouts."""
    fn = DESCRIPTOR_FNS[name]
    x = data.draw(features((n, c, h, w), torch.float64)).relu()
    if fault == "nan":
        x = poison(data.draw, x, math.nan)
    elif fault == "negative":
        x = poison(data.draw, x, -1.0)
    x = with_layout(x.to(dtype) if dtype.is_floating_point else x.to(dtype), layout)
    negative = bool((x.real < 0).any()) if x.numel() else False
    if not dtype.is_floating_point or h == 0 or (name == "crow" and negative):
        return raises_naming(lambda: fn(x), "x")
    out = fn(x)
    width = c * (c + 1) // 2 if name == "isqrt_cov" else c
    assert out.shape == (n, width) and out.dtype == dtype
    finite = torch.isfinite(x.flatten(1)).all(dim=1)
    assert bool(torch.isfinite(out[finite]).all()), name
    assert_relative_close(out[finite].double(), fn(x.contiguous())[finite].double(),
                          TOLERANCE[dtype])


@given(data=st.data(), b=st.integers(0, 6), d=st.integers(1, 4),
       dtype=st.sampled_from(DTYPES + [torch.int64]),
       fault=st.sampled_from([None, None, "nan", "labels", "k", "alpha"]))
def test_retrieval_post_processing_and_contrastive_loss(data, b, d, dtype, fault):
    """query expansion, DBA and the contrastive loss: each bad argument raises naming it;
    otherwise finite results in the input's dtype."""
    x = data.draw(features((b, d), torch.float64))
    if fault == "nan":
        x = poison(data.draw, x, math.nan)
    x = x.to(dtype)
    labels = torch.arange(b) % 2
    if fault == "labels":
        labels = labels.float()
    k = b + 1 if fault == "k" else 1
    alpha = -1.0 if fault == "alpha" else 3.0
    calls = {"query_expansion": lambda: fo.retrieval.query_expansion(x, x, k=k, alpha=alpha),
             "database_augmentation": lambda: fo.retrieval.database_augmentation(
                 x, k=k, alpha=alpha),
             "contrastive_loss": lambda: fo.retrieval.contrastive_loss(x, labels)}
    for name, call in calls.items():
        loss = name == "contrastive_loss"
        if not dtype.is_floating_point:
            names = ("embeddings",) if loss else ("query", "gallery")
        elif loss:
            names = ("labels",) if fault == "labels" else ()
        elif fault == "nan" and b > 0:
            names = ("query", "gallery")
        elif fault in ("k", "alpha") or b == 0:  # k = 1 is past an empty gallery
            names = ("alpha",) if fault == "alpha" and b > 0 else ("k",)
        else:
            names = ()
        if names:
            raises_naming(call, *names)
            continue
        out = call()
        assert out.dtype == dtype, name
        if fault != "nan":  # the contrastive loss of NaN embeddings is NaN, as torch's losses
            assert bool(torch.isfinite(out).all()), name


# ---------------------------------------------------------------------------------------------
# Loss and classifier modules

@given(data=st.data(), b=st.integers(0, 7), classes=st.integers(1, 3),
       dtype=st.sampled_from([torch.float32, torch.float64]), layout=st.sampled_from(LAYOUTS),
       fault=st.sampled_from([None, None, "nan", "label_high"]))
def test_loss_and_classifier_modules(data, b, classes, dtype, layout, fault):
    dim = 4
    emb = data.draw(features((b, dim), dtype))
    labels = torch.arange(b) % classes
    if fault == "nan":
        emb = poison(data.draw, emb, math.nan)
    elif fault == "label_high":
        labels = poison(data.draw, labels, classes)
    el = with_layout(emb, layout)
    torch.manual_seed(0)
    modules = {
        "triplet": fo.nn.TripletMarginLoss(negatives="all"),
        "anchor points": fo.nn.TripletAnchorPointLoss(classes, dim).to(dtype),
        "super-class": fo.nn.SuperClassInstanceLoss(dim, torch.arange(classes) % 2).to(dtype),
        "class-balanced": fo.nn.ClassBalancedLoss(torch.arange(1, classes + 1) * 3,
                                                  loss_type="softmax"),
    }
    super_of = modules["super-class"].instance_super
    targets = {"super-class": (super_of[labels.clamp_max(classes - 1)], labels)}
    for name, module in modules.items():
        inputs = el[:, :classes] if name == "class-balanced" else el
        target = targets.get(name, labels)
        if b == 0 and name in ("super-class", "anchor points"):
            continue
        if b and fault == "label_high" and name != "triplet":  # triplet labels are any ids
            raises_naming(lambda: module(inputs, target), "labels", "target", "instance")
            continue
        try:  # on copies: a module may update its state (anchors) in forward
            out = copy.deepcopy(module)(inputs, target)
        except ERRORS as error:  # NaN features may be refused, by a message naming them
            message = str(error)
            assert fault == "nan" and ("NaN" in message or "finite" in message), (name, message)
            assert "embeddings" in message or "features" in message, (name, message)
            continue
        again = copy.deepcopy(module)(inputs.contiguous(), target)
        if name in ("triplet", "class-balanced"):
            assert same_bits(out, again), name
        elif torch.isfinite(out).all():  # pure PyTorch: torch's matmul picks kernels by layout
            assert_relative_close(out.detach(), again.detach(), TOLERANCE[dtype])
        else:
            assert torch.equal(out.isnan(), again.isnan()), name
        if fault is None:
            assert torch.isfinite(out).all(), name


# ---------------------------------------------------------------------------------------------
# Direct native calls with bad values: in a subprocess, so a crash fails the test, not the run

NATIVE_ABUSE = textwrap.dedent("""
    import torch
    from finegrained_ops._native import _C
    x = torch.randn(2, 3, 4)
    sign = torch.ones(3, 4)
    table = _C.sketch_table(torch.zeros(3, 4, dtype=torch.long), sign, 8)
    bad_table = table.clone()
    bad_table[0, 5] = 1 << 40  # a bin offset far past the channels
    calls = {  # name: (the call, the argument its message must name)
        "hash past dim": (lambda: _C.sketch_table(torch.full((3, 4), 99), sign, 8),
                          "hash_index"),
        "negative hash": (lambda: _C.sketch_table(torch.full((3, 4), -5), sign, 8),
                          "hash_index"),
        "bad table": (lambda: _C.kernel_pooling(x, bad_table, None, 8, False), "sketch_table"),
        "backward table": (lambda: _C.kernel_pooling_backward(
            torch.zeros(2, 16), x, bad_table, None, torch.zeros(2, 16), torch.zeros(2, 16), 8,
            False), "sketch_table"),
        "wrong grad": (lambda: _C.kernel_pooling_backward(
            torch.zeros(2, 5), x, table, None, torch.zeros(2, 16), torch.zeros(2, 16), 8, False),
            "grad"),
        "label past C": (lambda: _C.class_loss(
            torch.zeros(2, 3), torch.tensor([0, 1 << 40]), torch.ones(3), None, None, 1.0, 0.5,
            "softmax", "mean", -100, True), "target"),
        "weights short": (lambda: _C.class_loss(
            torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(2), None, None, 1.0, 0.5,
            "softmax", "mean", -100, True), "class_weights"),
        "margins short": (lambda: _C.class_loss(
            torch.zeros(2, 3), torch.tensor([0, 1]), None, None, torch.ones(2), 30.0, 0.0,
            "softmax", "mean", -100, True), "target_margins"),
        "query index": (lambda: _C.triplet_mine(
            torch.randn(3, 2), torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 1 << 40]),
            torch.randn(4, 2), torch.zeros(4, dtype=torch.long), torch.zeros(0, 2),
            torch.zeros(0, dtype=torch.long), 0.2, "all", 1.0, True, True, -1, -1, -1, 0, 0),
            "query_indices"),
        "labels short": (lambda: _C.triplet_margin_loss(
            torch.randn(3, 2), torch.zeros(2, dtype=torch.long), torch.zeros(0, 2),
            torch.zeros(0, dtype=torch.long), 0.2, "all", 1.0, "mean", True, True, True),
            "labels"),
    }
    for name, (call, argument) in calls.items():
        try:
            call()
        except (RuntimeError, ValueError, TypeError) as error:
            if argument not in str(error):
                raise SystemExit(f"{name}: the message does not name {argument}: {error}")
            continue
        raise SystemExit(f"{name}: no error")
    print("all refused")
""")


def test_direct_native_calls_with_bad_values_are_refused_without_a_crash():
    result = subprocess.run([sys.executable, "-c", NATIVE_ABUSE], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    assert "all refused" in result.stdout


def test_every_public_op_is_registered():
    """Each public function is an op of tests/registry.py or a helper it names, and each nn
    module computes a registered op or is one it names: a new op cannot miss the suites."""
    for module_name, not_ops in NOT_OPS.items():
        module = importlib.import_module(module_name)
        prefix = module_name.removeprefix("finegrained_ops").lstrip(".")
        functions = {f"{prefix}.{name}".lstrip(".") for name in module.__all__
                     if inspect.isfunction(getattr(module, name))
                     or inspect.isclass(getattr(module, name))}
        registered = {name for name in REGISTRY if name.rpartition(".")[0] == prefix}
        assert functions - {f"{prefix}.{name}".lstrip(".") for name in not_ops} == registered
    modules = [name for op in REGISTRY.values() for name in op.modules]
    assert len(modules) == len(set(modules)) and not set(modules) & NOT_OP_MODULES
    assert set(fo.nn.__all__) == set(modules) | NOT_OP_MODULES
    root = Path(__file__).resolve().parents[1]
    for op in REGISTRY.values():
        assert (root / op.tests).is_file(), op.tests


@pytest.mark.parametrize("key", sorted(CALLS))
@given(rows=st.integers(0, 7), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS))
def test_registered_op(key, rows, dtype, layout):
    """Every registered op in every dtype and layout: the outputs and gradients on the layout
    are those on a contiguous copy (bitwise for a native op), floating outputs keep the dtype,
    and both equal the reference's on float64 copies within TOLERANCE of a scale of at least
    1e-6 (a loss of 0 may round to 1e-21 in bfloat16); integer outputs, the mined triplets,
    exactly in float64. An empty batch is not compared: the references' reductions refuse one."""
    op = CALLS[key]
    example = op.example(rows, dtype, "cpu")
    laid_out = example.with_inputs(lambda t: with_layout(t, layout))
    got = sum(registry_results(op, laid_out), [])
    contiguous = sum(registry_results(op, laid_out.with_inputs(torch.Tensor.contiguous)), [])
    assert len(got) == len(contiguous)
    for a, b in zip(got, contiguous):
        if op.native or not a.is_floating_point():
            assert same_bits(a, b), key
        else:
            assert a.shape == b.shape and a.dtype == b.dtype
            assert_relative_close(a.double(), b.double(), TOLERANCE[dtype])
        assert not a.is_floating_point() or a.dtype == dtype, key
    if op.spec is None or rows == 0:
        return
    expected = sum(registry_results(lambda ex: op.spec(*ex.args, **ex.kwargs),
                                    laid_out.with_inputs(torch.Tensor.contiguous).in_float64()),
                   [])
    for a, e in zip(got, expected):
        if a.is_floating_point():
            assert_relative_close(a.double(), e, TOLERANCE[dtype], smallest_scale=1e-6)
        elif dtype == torch.float64:
            assert torch.equal(a, e), key


@pytest.mark.parametrize("key", sorted(k for k, op in REGISTRY.items() if op.module))
def test_registered_module(key):
    """The op's module on the example's inputs gives the function's bits."""
    op = REGISTRY[key]
    example = op.example(6, torch.float64, "cpu")
    assert same_bits(op.module(example)(), op(example))
