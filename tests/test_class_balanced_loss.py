"""Native class-balanced loss vs the reference, gradients, edge cases and bad input."""
import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import finegrained_ops as fo
from finegrained_ops import sigmoid_bias_init
from finegrained_ops.nn import ClassBalancedLoss
from finegrained_ops.reference import class_balanced_loss as reference

from .helpers import check_gradients

LOSS_TYPES = ["focal", "sigmoid", "softmax"]
REDUCTIONS = ["mean", "sum", "none"]


def random_problem(n, c, seed, dtype=torch.float64, device="cpu", scale=3.0, ignore=False):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)
    target = torch.randint(0, c, (n,), generator=g)
    if ignore and n > 1:
        target[::3] = -100
    counts = torch.randint(1, 5000, (c,), generator=g)
    return logits, target.to(device), counts.to(device)


def native_and_reference(logits, target, counts, **kw):
    z1 = logits.detach().clone().requires_grad_()
    z2 = logits.detach().clone().requires_grad_()
    a = fo.class_balanced_loss(z1, target, counts, **kw)
    b = reference(z2, target, counts, **kw)
    weights = torch.randn_like(a)  # a non-trivial upstream gradient, also for 'none'
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    return a, b, z1.grad, z2.grad


def test_reference_values_of_the_design():
    z = torch.tensor([[0.78, 0.1, 0.05], [0.78, 0.83, 0.05]], dtype=torch.float64)
    t = torch.tensor([0, 2])
    expected = {"focal": 1.1751180667, "sigmoid": 3.2615595727, "softmax": 1.5994318606}
    for loss_type, value in expected.items():
        got = fo.class_balanced_loss(z, t, [30, 100, 25], beta=0.999, gamma=2.0,
                                     loss_type=loss_type)
        assert got.item() == pytest.approx(value, abs=5e-11)


@given(n=st.integers(1, 64), c=st.integers(2, 1000), seed=st.integers(0, 2**31 - 1),
       beta=st.sampled_from([0.0, 0.9, 0.999, 0.9999]),
       gamma=st.sampled_from([0.0, 0.5, 1.0, 2.0]), loss_type=st.sampled_from(LOSS_TYPES),
       reduction=st.sampled_from(REDUCTIONS), ignore=st.booleans())
def test_native_matches_reference_float64(n, c, seed, beta, gamma, loss_type, reduction, ignore):
    logits, target, counts = random_problem(n, c, seed, ignore=ignore)
    a, b, ga, gb = native_and_reference(logits, target, counts, beta=beta, gamma=gamma,
                                        loss_type=loss_type, reduction=reduction)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


@given(n=st.integers(1, 32), c=st.integers(2, 300), seed=st.integers(0, 2**31 - 1),
       loss_type=st.sampled_from(["focal", "sigmoid"]), reduction=st.sampled_from(REDUCTIONS),
       soft=st.booleans())
def test_multi_hot_targets_match_reference(n, c, seed, loss_type, reduction, soft):
    logits, _, counts = random_problem(n, c, seed)
    g = torch.Generator().manual_seed(seed + 1)
    target = (torch.rand(n, c, generator=g) < 0.1).double()
    if soft:
        target = target * torch.rand(n, c, generator=g, dtype=torch.float64)
    a, b, ga, gb = native_and_reference(logits, target, counts, beta=0.99, gamma=0.5,
                                        loss_type=loss_type, reduction=reduction)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss_type, target_kind", [
    ("softmax", "index"), ("sigmoid", "index"), ("focal", "index"), ("sigmoid", "multi_hot"),
    ("focal", "multi_hot"), ("sigmoid", "soft"), ("focal", "soft")])
@pytest.mark.parametrize("n, c", [(100, 300), (9, 2049)])  # CUDA: warps over blocks; a block a row
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_on_each_device(device, loss_type, target_kind, n, c, dtype):
    logits, target, counts = random_problem(n, c, 11, ignore=True)
    if target_kind != "index":
        g = torch.Generator().manual_seed(12)
        target = (torch.rand(n, c, generator=g) < 0.05).double()
        if target_kind == "soft":
            target = target * torch.rand(n, c, generator=g, dtype=torch.float64)
    kwargs = dict(beta=0.999, gamma=2.0 if loss_type == "focal" else 0.0, loss_type=loss_type)
    z = logits.to(device, dtype).requires_grad_()
    got = fo.class_balanced_loss(z, target.to(device, dtype if target_kind != "index" else None),
                                 counts.to(device), reduction="none", **kwargs)
    got.sum().backward()
    # The reference in float64 on the same (rounded) inputs: only the arithmetic differs.
    z64 = logits.to(dtype).double().requires_grad_()
    rounded = target if target_kind == "index" else target.to(dtype).double()
    expected = reference(z64, rounded, counts, reduction="none", **kwargs)
    expected.sum().backward()
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got.double().cpu(), expected, **tol)
    torch.testing.assert_close(z.grad.double().cpu(), z64.grad, **tol)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_agrees_with_float64(device, loss_type, dtype):
    logits, target, counts = random_problem(64, 1000, 0, device=device)
    exact = fo.class_balanced_loss(logits, target, counts, loss_type=loss_type)
    z = logits.to(dtype).requires_grad_()
    got = fo.class_balanced_loss(z, target, counts, loss_type=loss_type)
    got.backward()
    assert got.dtype == dtype and z.grad.dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    # The half inputs were rounded; compare with float64 on those rounded logits.
    rounded = fo.class_balanced_loss(z.detach().double(), target, counts, loss_type=loss_type)
    torch.testing.assert_close(got.double(), rounded, rtol=tol, atol=0)
    assert abs(exact.item() - rounded.item()) < 0.05 * abs(exact.item())


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck(loss_type, gamma, reduction):
    logits, target, counts = random_problem(5, 7, 3, ignore=True)
    logits.requires_grad_()
    check_gradients(lambda z: fo.class_balanced_loss(z, target, counts, beta=0.99, gamma=gamma,
                                                     loss_type=loss_type, reduction=reduction),
                    (logits,))


def test_gradcheck_multi_hot():
    logits, _, counts = random_problem(4, 6, 5)
    target = torch.tensor([[1, 0, 0, 1, 0, 0], [0] * 6, [0, 0.3, 0, 0, 0, 1], [1] * 6],
                          dtype=torch.float64)
    logits.requires_grad_()
    check_gradients(lambda z: fo.class_balanced_loss(z, target, counts, gamma=0.5), (logits,))


def test_double_backward_is_refused_not_silently_zero():
    logits, target, counts = random_problem(3, 4, 0)
    logits.requires_grad_()
    (g,) = torch.autograd.grad(fo.class_balanced_loss(logits, target, counts), logits,
                               create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        g.sum().backward()
    # With a layer in front, the layer's own second derivative would otherwise flow back
    # while the loss's is missing: a silently wrong result, refused just the same.
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(5, 4).double()
    (gx,) = torch.autograd.grad(fo.class_balanced_loss(torch.tanh(head(x)), target, counts), x,
                                create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        gx.sum().backward()


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_saturated_logits_stay_finite_in_float32(device, loss_type, gamma):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 50.0], [-88.5, 88.5, -1e4]],
                          device=device, requires_grad=True)
    target = torch.tensor([1, 1, 2], device=device)
    loss = fo.class_balanced_loss(logits, target, [10, 20, 30], gamma=gamma, loss_type=loss_type)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # The true class at -1e4 costs ~1e4 per unit weight: the loss is large, not inf or 0.
    assert loss.item() > 100


def test_ignore_index_rows_have_zero_loss_and_gradient(device):
    logits, target, counts = random_problem(6, 5, 1, dtype=torch.float32, device=device)
    target[1] = target[4] = 7  # ignore_index=7 is out of range, so it must be honoured
    for loss_type in LOSS_TYPES:
        z = logits.clone().requires_grad_()
        per_row = fo.class_balanced_loss(z, target, counts, loss_type=loss_type, reduction="none",
                                         ignore_index=7)
        per_row.sum().backward()
        assert per_row[1] == 0 and per_row[4] == 0
        assert (z.grad[[1, 4]] == 0).all() and (z.grad[[0, 2, 3, 5]] != 0).any()
        mean = fo.class_balanced_loss(logits, target, counts, loss_type=loss_type, ignore_index=7)
        assert mean.item() == pytest.approx(per_row.sum().item() / 4, rel=1e-6)


def test_all_rows_ignored_gives_zero_not_nan():
    logits, _, counts = random_problem(3, 4, 0)
    target = torch.full((3,), -100)
    assert fo.class_balanced_loss(logits, target, counts).item() == 0.0


def test_beta_zero_is_the_unweighted_loss():
    logits, target, counts = random_problem(8, 5, 2)
    cb = fo.class_balanced_loss(logits, target, counts, beta=0.0, loss_type="softmax")
    assert cb.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item(),
                                      rel=1e-12)


def test_determinism_bitwise(device):
    logits, target, counts = random_problem(512, 813, 4, dtype=torch.float32, device=device)
    results = []
    for _ in range(2):
        z = logits.clone().requires_grad_()
        loss = fo.class_balanced_loss(z, target, counts)
        loss.backward()
        results.append((loss, z.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_weights_and_effective_number():
    counts = torch.tensor([1000, 100, 10])
    w = fo.class_balanced_weights(counts, 0.999)
    assert w.sum().item() == pytest.approx(3.0)
    assert w[0] < w[1] < w[2]
    torch.testing.assert_close(fo.effective_number(counts, 0.0),
                               torch.ones(3, dtype=torch.float64))
    # beta -> 1 tends to the sample count (inverse-frequency weighting).
    torch.testing.assert_close(fo.effective_number(counts, 1 - 1e-9), counts.double(), rtol=1e-5,
                               atol=0)
    with pytest.raises(ValueError, match="> 0"):
        fo.class_balanced_weights([3, 0, 2], 0.9)


def test_module_state_dict_and_half():
    crit = ClassBalancedLoss([100000, 20, 3], beta=0.999, gamma=0.5, loss_type="focal")
    crit.half()
    assert crit.samples_per_class.dtype == torch.int64
    assert crit.samples_per_class.tolist() == [100000, 20, 3]
    other = ClassBalancedLoss([1, 1, 1])
    other.load_state_dict(crit.state_dict())
    logits, target, _ = random_problem(4, 3, 0)
    assert crit(logits, target).item() == pytest.approx(
        fo.class_balanced_loss(logits, target, [100000, 20, 3], beta=0.999).item())
    assert torch.equal(other.samples_per_class, crit.samples_per_class)
    same_beta = ClassBalancedLoss([1, 1, 1], beta=0.999, gamma=0.5)
    same_beta.load_state_dict(crit.state_dict())
    assert same_beta(logits, target).item() == crit(logits, target).item()


def test_module_computes_its_weights_once_and_refreshes_them():
    crit = ClassBalancedLoss([100, 10, 1], beta=0.99, loss_type="softmax")
    assert torch.equal(crit.class_weights, fo.class_balanced_weights([100, 10, 1], 0.99))
    assert "class_weights" not in crit.state_dict()
    crit.beta = 0.9  # e.g. deferred re-weighting switching beta during training
    crit.samples_per_class[2] = 50
    crit.refresh()
    logits, target, _ = random_problem(5, 3, 1)
    expected = fo.class_balanced_loss(logits, target, [100, 10, 50], beta=0.9, loss_type="softmax")
    assert torch.equal(crit(logits, target), expected)
    assert torch.equal(pickle.loads(pickle.dumps(crit))(logits, target), expected)
    assert crit.double().class_weights.dtype == torch.float64
    with pytest.raises(ValueError, match="beta"):
        crit.beta = 1.0


@pytest.mark.parametrize("loss_type", ["sigmoid", "focal"])
def test_a_confident_true_class_keeps_float32_precision(loss_type):
    """Found by tests/test_fuzz.py: the true class's term was once computed as a t = 0 term
    and corrected by subtracting softplus(z_y), which lost ~1e-4 of relative precision in
    float32 at z_y = 6."""
    z = torch.tensor([[6.164, -30.0, -30.0]])
    native = fo.class_balanced_loss(z, torch.tensor([0]), [7, 7, 7], beta=0.0, gamma=0.5,
                                    loss_type=loss_type, reduction="sum")
    expected = reference(z.double(), torch.tensor([0]), [7, 7, 7], 0.0, 0.5, loss_type, "sum")
    assert abs(native.item() - expected.item()) <= 1e-6 * expected.item()


def test_sigmoid_bias_init_gives_prior_one_over_c():
    b = sigmoid_bias_init(10)
    assert torch.sigmoid(torch.tensor(b)).item() == pytest.approx(0.1)


def test_torch_compile_fullgraph_and_opcheck():
    logits, target, counts = random_problem(6, 5, 0, dtype=torch.float32)
    z = logits.clone().requires_grad_()
    compiled = torch.compile(lambda a: fo.class_balanced_loss(a, target, counts, beta=0.99),
                             fullgraph=True, backend="aot_eager")
    compiled(z).backward()
    z2 = logits.clone().requires_grad_()
    fo.class_balanced_loss(z2, target, counts, beta=0.99).backward()
    torch.testing.assert_close(z.grad, z2.grad)
    from finegrained_ops.ops.class_loss import _class_loss
    for reduction in REDUCTIONS:
        torch.library.opcheck(_class_loss,
                              (logits.clone().requires_grad_(), target,
                               fo.class_balanced_weights(counts, 0.99), None, None, 1.0, 0.5,
                               "focal", reduction, -100, True))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(target=torch.tensor([0, 5])), ValueError, "must be in \\[0, 3\\)"),
    (dict(target=torch.tensor([0, -2])), ValueError, "must be in \\[0, 3\\)"),
    (dict(target=torch.tensor([0, 1, 2])), ValueError, "class indices with N=2"),
    (dict(target=torch.tensor([0.0, 1.0])), TypeError, "int64"),
    (dict(target=torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])), ValueError, "\\[0, 1\\]"),
    (dict(target=torch.ones(2, 3), loss_type="softmax"), ValueError, "summing to 1"),
    (dict(counts=[5, 0, 2]), ValueError, "> 0"),
    (dict(counts=[5, -1, 2]), ValueError, "> 0"),
    (dict(counts=[5, 2]), ValueError, "C=3 entries"),
    (dict(beta=1.0), ValueError, "beta"),
    (dict(beta=-0.1), ValueError, "beta"),
    (dict(gamma=-1.0), ValueError, "gamma"),
    (dict(loss_type="hinge"), ValueError, "loss_type"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(logits=torch.zeros(2, 3, 1)), ValueError, "2-D"),
    (dict(logits=torch.zeros(2, 3, dtype=torch.int64)), TypeError, "dtype"),
])
def test_bad_input_raises_clear_errors(kwargs, error, match):
    args = dict(logits=torch.zeros(2, 3), target=torch.tensor([0, 1]), counts=[5, 3, 2],
                beta=0.9, gamma=0.5, loss_type="focal")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        fo.class_balanced_loss(args["logits"], args["target"], args["counts"], beta=args["beta"],
                               gamma=args["gamma"], loss_type=args["loss_type"],
                               reduction=args.get("reduction", "mean"))


def test_native_entry_checks_its_own_preconditions():
    """Calling _C directly with bad values raises, never touches memory out of range."""
    from finegrained_ops._native import _C
    z, y, ones = torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(3)

    def call(logits=z, target=y, weights=ones, offsets=None, margins=None, scale=1.0,
             loss_type="focal"):
        _C.class_loss(logits, target, weights, offsets, margins, scale, 0.5, loss_type, "mean",
                      -100, True)

    cases = [(dict(target=torch.tensor([0, 99])), "must be in"),
             (dict(logits=z.to(torch.complex64)), "logits must have dtype"),
             (dict(loss_type="huber"), "loss_type"),
             (dict(weights=torch.ones(4)), "class_weights must have C=3 entries"),
             (dict(weights=ones.long()), "class_weights must be float64"),
             (dict(offsets=ones), "softmax loss only"),
             (dict(loss_type="softmax", scale=0.0), "scale must be finite and > 0"),
             (dict(loss_type="softmax", offsets=torch.tensor([0.0, float("inf"), 0.0])),
              "logit_offsets must be finite"),
             (dict(loss_type="softmax", margins=torch.tensor([0.0, -0.1, 0.0])),
              "target_margins must be finite and >= 0"),
             (dict(weights=torch.tensor([1.0, float("nan"), 1.0])),
              "class_weights must be finite and >= 0"),
             (dict(loss_type="softmax", margins=ones, target=torch.full((2, 3), 1 / 3)),
              "need \\(N,\\) class-index targets"),
             (dict(loss_type="softmax", target=torch.full((2, 3), 0.3)), "summing to 1")]
    for kwargs, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            call(**kwargs)
