"""The long-tail softmax family (logit adjustment, Balanced Softmax, LDAM, softmax focal, soft
targets) on the fused native loss, against references written from the papers' formulas."""
import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import finegrained_ops as fo
from finegrained_ops import nn as fnn
from finegrained_ops import reference
from finegrained_ops.train import DeferredReweighting, fit

from .helpers import check_gradients

# name: (native, reference, extra keyword arguments, takes counts, takes soft targets)
MEMBERS = {
    "logit_adjusted": (fo.logit_adjusted_loss, reference.logit_adjusted_loss,
                       dict(tau=0.7), True, True),
    "balanced_softmax": (fo.balanced_softmax_loss, reference.balanced_softmax_loss, {}, True,
                         True),
    "ldam": (fo.ldam_loss, reference.ldam_loss, dict(max_margin=0.4, scale=10.0), True, False),
    "softmax_focal": (fo.softmax_focal_loss, reference.softmax_focal_loss, dict(gamma=0.5),
                      False, True),
}


def problem(n, c, seed, soft=False, dtype=torch.float64, device="cpu", ignore=True):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, c, generator=g, dtype=torch.float64)).to(dtype).to(device)
    if soft:
        target = torch.softmax(2 * torch.randn(n, c, generator=g, dtype=torch.float64), 1)
        target = target.to(dtype)
    else:
        target = torch.randint(c, (n,), generator=g)
        if ignore and n > 2:
            target[::3] = -100
    counts = torch.randint(1, 1000, (c,), generator=g)
    weights = torch.rand(c, generator=g, dtype=torch.float64) + 0.1
    return logits, target.to(device), counts.to(device), weights.to(device)


def call(name, fn, logits, target, counts, **kwargs):
    _, _, extra, takes_counts, _ = MEMBERS[name]
    args = (logits, target, counts) if takes_counts else (logits, target)
    return fn(*args, **{**extra, **kwargs})


def loss_and_grad(name, which, logits, target, counts, upstream=None, **kwargs):
    z = logits.detach().clone().requires_grad_()
    loss = call(name, MEMBERS[name][which], z, target, counts, **kwargs)
    upstream = torch.ones_like(loss) if upstream is None else upstream
    (loss * upstream).sum().backward()
    return loss.detach(), z.grad


@settings(deadline=None, max_examples=40)
@given(data=st.data(), name=st.sampled_from(sorted(MEMBERS)), n=st.integers(1, 12),
       c=st.integers(1, 40), seed=st.integers(0, 2**16),
       reduction=st.sampled_from(["mean", "sum", "none", "weighted_mean"]),
       weighted=st.booleans())
def test_native_matches_reference_float64(data, name, n, c, seed, reduction, weighted):
    soft = MEMBERS[name][4] and data.draw(st.booleans(), "soft")
    logits, target, counts, weights = problem(n, c, seed, soft=soft)
    kwargs = dict(reduction=reduction, class_weights=weights if weighted else None)
    if name == "softmax_focal":
        kwargs["gamma"] = data.draw(st.sampled_from([0.0, 0.3, 1.0, 2.0]), "gamma")
    if name == "logit_adjusted":
        kwargs["tau"] = data.draw(st.floats(0.0, 2.0), "tau")
    if name == "ldam":
        kwargs["scale"] = data.draw(st.floats(0.5, 30.0), "scale")
        kwargs["max_margin"] = data.draw(st.floats(0.0, 1.0), "max_margin")
    upstream = torch.randn(n, dtype=torch.float64) if reduction == "none" else None
    native = loss_and_grad(name, 0, logits, target, counts, upstream, **kwargs)
    expected = loss_and_grad(name, 1, logits, target, counts, upstream, **kwargs)
    if torch.isnan(expected[0]).any():  # PyTorch's weighted mean of an all-ignored batch
        assert native[0].item() == 0
        return
    for a, b in zip(native, expected):
        # The reference's (1 - p)^gamma has an infinite slope at p = 1 for gamma < 1 (one
        # class, or a saturated one): its gradient is NaN where ours is the finite limit.
        assert torch.isfinite(a).all()
        known = ~torch.isnan(b)
        torch.testing.assert_close(a[known], b[known], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name, soft", [(name, soft) for name in sorted(MEMBERS)
                                        for soft in ([False, True] if MEMBERS[name][4]
                                                     else [False])])
def test_gradcheck(name, soft):
    logits, target, counts, weights = problem(5, 7, 0, soft=soft)
    logits.requires_grad_()
    check_gradients(lambda z: call(name, MEMBERS[name][0], z, target, counts,
                                   class_weights=weights), (logits,))


@pytest.mark.parametrize("name, kwargs", [
    ("logit_adjusted", {}), ("balanced_softmax", {}), ("ldam", {}),
    ("softmax_focal", dict(gamma=0.0)), ("softmax_focal", dict(gamma=0.3)),
    ("softmax_focal", dict(gamma=2.0))])
def test_saturated_logits_stay_finite_in_float32(device, name, kwargs):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [-88.5, 88.5, -1e4],
                           [0.0, 1e4, -1e4]], device=device, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0], device=device)
    loss = call(name, MEMBERS[name][0], logits, target,
                torch.tensor([10, 200, 3000], device=device), **kwargs)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() > 100  # rows whose true class sits 1e4 below cost ~1e4, not inf or 0


@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0])
def test_a_confident_true_class_keeps_its_precision(gamma):
    """p_y -> 1: the loss ~ q^(1 + gamma) and the gradient at y ~ -(1 + gamma) q^(1 + gamma),
    q = 1 - p_y = e^-30 here, accurate in float32 though 1 - p_y rounds to 0."""
    logits = torch.tensor([[30.0, 0.0]], requires_grad=True)
    loss = fo.softmax_focal_loss(logits, torch.tensor([0]), gamma=gamma)
    loss.backward()
    exact = reference.softmax_focal_loss(logits.detach().double(), torch.tensor([0]),
                                         gamma=gamma)
    q = math.exp(-30.0)
    assert loss.item() == pytest.approx(exact.item(), rel=1e-5)
    assert loss.item() == pytest.approx(q ** (1 + gamma), rel=1e-5)
    assert logits.grad[0, 0].item() == pytest.approx(-(1 + gamma) * q ** (1 + gamma), rel=1e-4)


def test_matches_reference_on_each_device(device):
    for name in sorted(MEMBERS):
        for soft in ([False, True] if MEMBERS[name][4] else [False]):
            logits, target, counts, weights = problem(33, 600, 1, soft=soft, device=device)
            native = loss_and_grad(name, 0, logits, target, counts, class_weights=weights)
            expected = loss_and_grad(name, 1, logits.cpu(), target.cpu(), counts.cpu(),
                                     class_weights=weights.cpu())
            for a, b in zip(native, expected):
                torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-10)


def test_special_cases_are_the_plain_losses():
    logits, target, counts, weights = problem(9, 6, 3)
    ce = F.cross_entropy(logits, target, ignore_index=-100)
    torch.testing.assert_close(fo.logit_adjusted_loss(logits, target, counts, tau=0.0), ce)
    torch.testing.assert_close(fo.softmax_focal_loss(logits, target, gamma=0.0), ce)
    torch.testing.assert_close(fo.ldam_loss(logits, target, counts, max_margin=0.0, scale=1.0),
                               ce)
    # Balanced Softmax is logit adjustment with tau = 1: the two differ by log(sum n) per row,
    # which the softmax cancels.
    torch.testing.assert_close(fo.balanced_softmax_loss(logits, target, counts),
                               fo.logit_adjusted_loss(logits, target, counts, tau=1.0))
    # The class-balanced softmax is the weighted softmax loss with its weights.
    cb = fo.class_balanced_loss(logits, target, counts, beta=0.99, loss_type="softmax")
    torch.testing.assert_close(cb, fo.softmax_focal_loss(
        logits, target, gamma=0.0, class_weights=fo.class_balanced_weights(counts, 0.99)))


def test_soft_targets_of_the_class_balanced_softmax_match_the_reference():
    logits, target, counts, _ = problem(7, 5, 4, soft=True)
    kwargs = dict(beta=0.999, loss_type="softmax")
    torch.testing.assert_close(fo.class_balanced_loss(logits, target, counts, **kwargs),
                               reference.class_balanced_loss(logits, target, counts, **kwargs))


def test_post_hoc_logit_adjustment():
    logits, _, counts, _ = problem(8, 5, 5)
    adjusted = fo.logit_adjust(logits, counts, tau=1.5)
    prior = counts.double() / counts.sum()
    torch.testing.assert_close(adjusted, logits - 1.5 * prior.log())
    assert fo.logit_adjust(logits.float(), counts.tolist()).dtype == torch.float32


def test_torch_compile_fullgraph_and_opcheck():
    logits, target, counts, weights = problem(6, 5, 0, dtype=torch.float32)
    soft = problem(6, 5, 1, soft=True, dtype=torch.float32)[1]
    criterion = fnn.LDAMLoss(counts, class_weights=weights)
    z = logits.clone().requires_grad_()
    torch.compile(lambda a: criterion(a, target) + fo.logit_adjusted_loss(a, soft, counts),
                  fullgraph=True, backend="aot_eager")(z).backward()
    z2 = logits.clone().requires_grad_()
    (criterion(z2, target) + fo.logit_adjusted_loss(z2, soft, counts)).backward()
    torch.testing.assert_close(z.grad, z2.grad)
    from finegrained_ops.ops.class_loss import _class_loss
    offsets, margins = fo.logit_adjustment_offsets(counts), fo.ldam_margins(counts)
    for t, margin in ((target, margins), (soft, None)):
        for reduction in ("mean", "weighted_mean", "none"):
            torch.library.opcheck(_class_loss, (
                logits.clone().requires_grad_(), t, weights, offsets, margin, 2.0, 0.5,
                "softmax", reduction, -100, True))


def test_modules_hold_their_per_class_tensors():
    counts = torch.tensor([500, 50, 5])
    la, ldam = fnn.LogitAdjustedLoss(counts, tau=1.0), fnn.LDAMLoss(counts)
    torch.testing.assert_close(la.logit_offsets, fo.logit_adjustment_offsets(counts))
    torch.testing.assert_close(ldam.target_margins, fo.ldam_margins(counts))
    assert ldam.target_margins[2].item() == pytest.approx(0.5)
    # counts survive state_dict(); derived tensors and weights are recomputed, not saved
    assert set(la.state_dict()) == {"samples_per_class"}
    fresh = fnn.LogitAdjustedLoss([1, 1, 1])
    fresh.load_state_dict(la.state_dict())
    torch.testing.assert_close(fresh.logit_offsets, la.logit_offsets)
    # .half() leaves counts, offsets and weights exact
    focal = fnn.SoftmaxFocalLoss(class_weights=[0.1, 1 / 3, 3.0]).half()
    assert focal.class_weights.dtype == torch.float64
    assert focal.class_weights[1].item() == 1 / 3
    assert la.half().logit_offsets.dtype == torch.float64
    pickle.loads(pickle.dumps(ldam))
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(ldam(logits, target), fo.ldam_loss(logits, target, counts))
    torch.testing.assert_close(fnn.BalancedSoftmaxLoss(counts)(logits, target),
                               fo.balanced_softmax_loss(logits, target, counts))
    torch.testing.assert_close(fnn.SoftmaxFocalLoss(gamma=1.0)(logits, target),
                               fo.softmax_focal_loss(logits, target, gamma=1.0))


def test_cosine_linear_gives_cosines_and_ldam_warns_once_on_other_logits():
    """LDAM with an ordinary Linear head diverged silently (a margin of an unbounded logit):
    CosineLinear is the head it needs, and LDAMLoss's first call says so when it sees logits
    outside [-1, 1]."""
    torch.manual_seed(0)
    head = fnn.CosineLinear(6, 3)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    head = head.double()
    expected = torch.stack([torch.stack([F.cosine_similarity(row, w, dim=0) for w in
                                         head.weight]) for row in x])
    torch.testing.assert_close(head(x), expected)
    assert head.weight.shape == (3, 6) and head(x).abs().max() <= 1
    with pytest.raises(ValueError, match=r"expected \(N, 6\) input, got \(5, 4\)"):
        head(torch.zeros(5, 4))
    target = torch.tensor([0, 1, 2, 1, 0])
    criterion = fnn.LDAMLoss([50, 10, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        criterion(head(x), target)
    criterion = fnn.LDAMLoss([50, 10, 2])
    with pytest.warns(UserWarning, match=r"cosine logits in \[-1, 1\].*got \|logit\| up to "
                                         r"\d\.\d+: put finegrained_ops.nn.CosineLinear"):
        criterion(4 * head(x), target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        criterion(4 * head(x), target)  # once


def test_deferred_reweighting_in_fit():
    counts = torch.tensor([40, 12, 4])
    x = torch.randn(56, 5)
    y = torch.repeat_interleave(torch.arange(3), counts)
    model = torch.nn.Linear(5, 3)
    criterion = fnn.LDAMLoss(counts)
    drw = DeferredReweighting(criterion, counts, start_epoch=2, beta=0.999)
    seen = []
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    fit(model, criterion, loader, torch.optim.SGD(model.parameters(), lr=0.1), epochs=4,
        progress=False, epoch_hooks=[drw, lambda epoch: seen.append(criterion.class_weights)])
    assert seen[0] is None and seen[1] is None
    torch.testing.assert_close(seen[2], fo.class_balanced_weights(counts, 0.999))
    for not_reweightable in (torch.nn.CrossEntropyLoss(), fnn.ClassBalancedLoss(counts)):
        with pytest.raises(TypeError, match="class_weights"):
            DeferredReweighting(not_reweightable, counts, 1)


@pytest.mark.parametrize("make_loss", [lambda counts: fnn.SoftmaxFocalLoss(),
                                       lambda counts: fnn.LDAMLoss(counts)])
def test_deferred_weights_follow_the_logits_device(make_loss):
    """A loss that holds no tensor has no device to put DRW's weights on (they went to the
    CPU, and a CUDA run stopped at start_epoch): they move to the logits' device at the first
    call (a cached copy). The meta device stands in for CUDA."""
    counts = torch.tensor([50, 10, 3])
    criterion = make_loss(counts).to("meta")
    DeferredReweighting(criterion, counts, start_epoch=0)(0)
    logits = torch.zeros(4, 3, device="meta", requires_grad=True)
    loss = criterion(logits, torch.zeros(4, dtype=torch.int64, device="meta"))
    assert loss.device.type == "meta" and criterion.weights_for(logits).device.type == "meta"
    assert criterion.class_weights.dtype == torch.float64


@pytest.mark.parametrize("call_it, error, match", [
    (lambda z, y, n: fo.logit_adjusted_loss(z, y, n, tau=-0.1), ValueError, "tau"),
    (lambda z, y, n: fo.ldam_loss(z, y, n, scale=0.0), ValueError, "scale"),
    (lambda z, y, n: fo.ldam_loss(z, y, n, max_margin=-0.5), ValueError, "max_margin"),
    (lambda z, y, n: fo.softmax_focal_loss(z, y, gamma=-1.0), ValueError, "gamma"),
    (lambda z, y, n: fo.softmax_focal_loss(z, y, reduction="avg"), ValueError, "reduction"),
    (lambda z, y, n: fo.ldam_loss(z, torch.full((2, 3), 1 / 3), n), ValueError,
     "need \\(N,\\) class-index targets"),
    (lambda z, y, n: fo.logit_adjusted_loss(z, torch.full((2, 3), 0.5), n), ValueError,
     "summing to 1"),
    (lambda z, y, n: fo.balanced_softmax_loss(z, y, [5, 0, 2]), ValueError, "> 0"),
    (lambda z, y, n: fo.balanced_softmax_loss(z, y, [5, 2]), ValueError, "C=3 entries"),
    (lambda z, y, n: fo.softmax_focal_loss(z, y, class_weights=torch.ones(4)), ValueError,
     "C=3 entries"),
    (lambda z, y, n: fo.logit_adjusted_loss(z, torch.tensor([0, 3]), n), ValueError,
     "must be in \\[0, 3\\)"),
    (lambda z, y, n: fo.logit_adjusted_loss(z[None], y, n), ValueError, "2-D"),
    (lambda z, y, n: fnn.LDAMLoss(n, scale=-1.0), ValueError, "scale"),
    (lambda z, y, n: fnn.LogitAdjustedLoss([1.5, 2, 3]), ValueError, "whole numbers"),
    # counts <= 0 was False for NaN: logit_adjust returned NaN logits
    (lambda z, y, n: fo.logit_adjust(z, [5.0, math.nan, 2.0]), ValueError, "samples_per_class"),
    (lambda z, y, n: fo.logit_adjust(z, [5.0, math.inf, 2.0]), ValueError, "samples_per_class"),
    (lambda z, y, n: fo.logit_adjusted_loss(z, y, [math.nan, 1, 2]), ValueError,
     "samples_per_class"),
    *[(lambda z, y, n, loss=loss: call(loss, MEMBERS[loss][0], z, y, n,
                                       class_weights=torch.tensor([1.0, value, 1.0])),
       ValueError, "class_weights must be finite and >= 0")
      for loss in sorted(MEMBERS) for value in (math.nan, -1.0)],
])
def test_bad_input_raises_clear_errors(call_it, error, match):
    with pytest.raises(error, match=match):
        call_it(torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([5, 3, 2]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_half_logits_are_read_as_they_are_and_computed_in_float32(name, dtype):
    """No .to() around the call: the kernel reads half rows and computes in float32, so the
    loss and gradient are the float32 computation's on the same values, rounded; under
    autocast the loss is float32, as torch's losses are."""
    logits, target, counts, weights = problem(16, 50, 3, soft=MEMBERS[name][4],
                                              dtype=torch.float32, ignore=True)
    half = logits.to(dtype)
    loss, grad = loss_and_grad(name, 0, half, target, counts, class_weights=weights)
    loss32, grad32 = loss_and_grad(name, 0, half.float(), target, counts, class_weights=weights)
    assert loss.dtype == grad.dtype == dtype
    assert torch.equal(loss, loss32.to(dtype)) and torch.equal(grad, grad32.to(dtype))
    with torch.autocast("cpu", dtype=dtype):
        autocast_loss, autocast_grad = loss_and_grad(name, 0, half, target, counts,
                                                     class_weights=weights)
    assert autocast_loss.dtype == torch.float32 and autocast_grad.dtype == dtype
    assert torch.equal(autocast_loss, loss32) and torch.equal(autocast_grad, grad)
