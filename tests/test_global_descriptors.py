"""Global descriptors (MAC, SPoC, GeM, R-MAC, CroW) against their formulas, on every map size."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from finegrained_ops import nn as fnn
from finegrained_ops import reference, retrieval

from .helpers import assert_relative_close, check_gradients

DESCRIPTORS = {"mac": retrieval.mac, "spoc": retrieval.spoc, "gem": retrieval.gem,
               "rmac": retrieval.rmac, "crow": retrieval.crow}


def feature_map(n, c, h, w, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, c, h, w, generator=g, dtype=torch.float64)).to(dtype)


def test_mac_spoc_and_gem_are_their_formulas():
    x = feature_map(2, 5, 3, 4)
    torch.testing.assert_close(retrieval.mac(x, normalize=False), x.amax(dim=(2, 3)))
    torch.testing.assert_close(retrieval.mac(x), F.normalize(x.amax(dim=(2, 3)), dim=1))
    torch.testing.assert_close(retrieval.spoc(x, normalize=False), x.mean(dim=(2, 3)))
    clamped = x.clamp(min=1e-6)
    torch.testing.assert_close(retrieval.gem(x, p=3.0, normalize=False),
                               clamped.pow(3).mean(dim=(2, 3)).pow(1 / 3))
    torch.testing.assert_close(retrieval.gem(x, p=1.0, normalize=False),
                               clamped.mean(dim=(2, 3)))
    big_p = retrieval.gem(x + 0.1, p=200.0, normalize=False)
    torch.testing.assert_close(big_p, (x + 0.1).amax(dim=(2, 3)), rtol=0.02, atol=0)


def test_spoc_center_prior_weights_the_middle():
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 1.0     # the centre location: weight exp(0) = 1
    assert retrieval.spoc(x, center_prior=True, normalize=False).item() == pytest.approx(1.0)
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 0, 2] = 1.0     # 2 rows from the centre, sigma = 2.5 / 3
    expected = math.exp(-4 / (2 * (2.5 / 3) ** 2))
    assert retrieval.spoc(x, center_prior=True, normalize=False).item() == pytest.approx(expected)


@pytest.mark.parametrize("h, w, expected", [
    # square: l x l regions of side floor(2 * 6 / (l + 1)) = 6, 4, 3
    (6, 6, [(0, 0, 6)] + [(t, s, 4) for t in (0, 2) for s in (0, 2)]
     + [(t, s, 3) for t in (0, 1, 3) for s in (0, 1, 3)]),
    # 4 x 10: 4 regions along the long side overlap by 50%, the closest to 40% of 2-7 (3
    # overlap by 25%), so each level has 3 more along it than across
    (4, 10, [(0, s, 4) for s in (0, 2, 4, 6)] + [(t, s, 2) for t in (0, 2)
                                                for s in (0, 2, 4, 6, 8)]),
])
def test_rmac_regions(h, w, expected):
    assert retrieval.rmac_regions(h, w, levels=3 if h == w else 2) == expected


def test_rmac_is_the_sum_of_normalised_region_maxima():
    x = feature_map(2, 4, 5, 7, seed=1)
    total = torch.zeros(2, 4, dtype=torch.float64)
    for top, left, side in retrieval.rmac_regions(5, 7, levels=3):
        v = x[:, :, top:top + side, left:left + side].amax(dim=(2, 3))
        total += v / (v.norm(dim=1, keepdim=True) + 1e-6)
    torch.testing.assert_close(retrieval.rmac(x), F.normalize(total, dim=1))


def test_crow_weights_locations_and_channels():
    x = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    x[0, 0] = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    x[0, 1] = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    total = x.sum(dim=1)[0]                       # [[4, 2], [0, 0]]
    spatial = (total / total.norm()).sqrt()
    pooled = (x[0] * spatial).sum(dim=(1, 2))
    nonzero = torch.tensor([0.5, 0.25], dtype=torch.float64)
    channel = (nonzero.sum() / nonzero).log()
    torch.testing.assert_close(retrieval.crow(x, normalize=False)[0], pooled * channel)


@settings(deadline=None, max_examples=30)
@given(name=st.sampled_from(sorted(DESCRIPTORS)), n=st.integers(1, 3), c=st.integers(1, 6),
       h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 1000))
def test_every_map_size_gives_finite_unit_descriptors(name, n, c, h, w, seed):
    x = feature_map(n, c, h, w, seed) + 0.01   # strictly positive: no all-zero descriptor
    out = DESCRIPTORS[name](x)
    assert out.shape == (n, c) and torch.isfinite(out).all()
    # CroW's channel weight log(sum_h Q_h / Q_k) is log(1) = 0 for a single channel
    unit = 0.0 if name == "crow" and c == 1 else 1.0
    torch.testing.assert_close(out.norm(dim=1), torch.full((n,), unit, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(DESCRIPTORS))
def test_gradcheck(name):
    # distinct positive values: a max over tied values has no derivative to check
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    check_gradients(DESCRIPTORS[name], (x,))


@pytest.mark.parametrize("name", sorted(DESCRIPTORS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_maps_are_pooled_in_float32(name, dtype):
    x = feature_map(2, 8, 6, 6, seed=3)
    half = DESCRIPTORS[name](x.to(dtype))
    assert half.dtype == dtype
    torch.testing.assert_close(half.double(), DESCRIPTORS[name](x.to(dtype).double()),
                               rtol=1e-2, atol=1e-2)


def test_modules_compile_fullgraph_and_learn_p():
    x = feature_map(2, 4, 5, 6, seed=4, dtype=torch.float32) + 0.1
    layers = [fnn.MAC(), fnn.SPoC(center_prior=True), fnn.GeM(), fnn.RMAC(), fnn.CroW()]
    for layer in layers:
        compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), layer(x))
    gem = fnn.GeM(p=2.0)
    gem(x.requires_grad_()).sum().backward()
    assert gem.p.grad is not None and torch.isfinite(gem.p.grad).all()
    fixed = fnn.GeM(p=2.0, learnable=False)
    assert not list(fixed.parameters()) and "p" in fixed.state_dict()


@pytest.mark.parametrize("call, error, match", [
    (lambda: retrieval.mac(torch.zeros(2, 3)), ValueError, "4-D"),
    (lambda: retrieval.gem(torch.zeros(1, 2, 3, 3), p=0.0), ValueError, "p must"),
    (lambda: retrieval.rmac(torch.zeros(1, 2, 3, 3, dtype=torch.int64)), TypeError, "dtype"),
    (lambda: retrieval.rmac_regions(0, 3), ValueError, "height"),
    (lambda: retrieval.crow(torch.zeros(1, 2, 3, 3), a=-1.0), ValueError, "a must"),
    (lambda: retrieval.spoc(torch.zeros(1, 2, 0, 3)), ValueError, "H, W >= 1"),
    (lambda: retrieval.rmac(torch.zeros(1, 2, 3, 3), eps=math.nan), ValueError, "eps"),
    (lambda: retrieval.rmac(torch.zeros(1, 2, 3, 3), eps=-1e-6), ValueError, "eps"),
    (lambda: retrieval.crow(-torch.ones(1, 2, 3, 3)), ValueError, "non-negative"),
    (lambda: retrieval.gem(torch.zeros(1, 2, 3, 3), p=torch.tensor([1])), TypeError, "p must"),
])
def test_bad_input_raises_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("p", [0.0, -1.0, math.nan, math.inf])
def test_gem_refuses_a_tensor_p_that_is_not_positive_and_finite(p):
    with pytest.raises(ValueError, match="p must be finite and > 0"):
        retrieval.gem(feature_map(1, 2, 3, 3), p=torch.tensor([p], dtype=torch.float64))


def test_gem_keeps_a_float64_p():
    """p.float() rounded a float64 p, so a float64 GeM was off by ~1e-8."""
    x = feature_map(2, 3, 4, 4, seed=3) + 0.1
    p = 3.3 + 1e-9
    expected = x.pow(p).mean(dim=(2, 3)).pow(1 / p)
    got = retrieval.gem(x, p=torch.tensor([p], dtype=torch.float64), normalize=False)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", sorted(DESCRIPTORS) + ["isqrt_cov"])
@pytest.mark.parametrize("factor", [1e30, 1e-30])
def test_descriptors_hold_over_the_float32_range(name, factor):
    """A map x 1e30 pooled to 0 vectors (MAC, SPoC, R-MAC, CroW: the norm overflowed), NaN
    (GeM from x 1e15, iSQRT-COV); x 1e-30 to non-unit vectors. Each is homogeneous: the
    normalised descriptor is unchanged, iSQRT-COV's scales by the factor."""
    if factor < 1 and name in ("gem", "rmac"):
        pytest.skip("eps (the clamp of GeM, the region guard of R-MAC) is not homogeneous")
    fn = retrieval.isqrt_cov if name == "isqrt_cov" else DESCRIPTORS[name]
    x = feature_map(2, 4, 5, 6, seed=8, dtype=torch.float32) + 0.01
    expected = fn(x)
    got = fn(x * factor)
    if name == "isqrt_cov":
        got = got / factor
    assert bool(torch.isfinite(got).all())
    assert_relative_close(got, expected, 1e-5)


def test_rmac_regions_reach_the_border_on_every_grid():
    """A float step stopped a pixel short of the border on 32 grids up to 99 x 99, e.g. 3 x 63."""
    for h in range(1, 100):
        for w in range(1, 100):
            by_side = {}
            for top, left, side in retrieval.rmac_regions(h, w):
                by_side.setdefault(side, []).append((top, left))
            for side, starts in by_side.items():
                assert min(starts) == (0, 0), (h, w, side)
                assert max(t for t, _ in starts) + side == h, (h, w, side)
                assert max(c for _, c in starts) + side == w, (h, w, side)


@pytest.mark.parametrize("make, match", [
    (lambda: fnn.RMAC(eps=-1.0), "eps"), (lambda: fnn.RMAC(eps=math.nan), "eps"),
    (lambda: fnn.RMAC(levels=0), "levels"), (lambda: fnn.CroW(a=0.0), "a must"),
    (lambda: fnn.CroW(b=-2.0), "b must"), (lambda: fnn.ISqrtCovPooling(iterations=0), "iterations"),
    (lambda: fnn.GeM(eps=0.0), "eps"),
    (lambda: fnn.ContrastiveLoss(reduction="avg"), "reduction"),
    (lambda: fnn.ContrastiveLoss(neg_margin=math.inf), "neg_margin")])
def test_layer_constructors_check_their_arguments(make, match):
    """They used to check only at the first forward."""
    with pytest.raises(ValueError, match=match):
        make()


def test_isqrt_cov_is_the_scaled_square_root_of_the_covariance():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    out = retrieval.isqrt_cov(x, iterations=30)
    assert out.shape == (2, 4 * 5 // 2)
    rows, cols = torch.triu_indices(4, 4)
    for i in range(2):
        f = x[i].flatten(1)
        cov = torch.cov(f, correction=0)
        root = torch.zeros(4, 4, dtype=torch.float64)
        root[rows, cols] = out[i]
        root = root + root.triu(1).T
        torch.testing.assert_close(root @ root, cov, rtol=1e-8, atol=1e-10)
    # five iterations (the paper's default) approximate the root to a few percent here
    five = retrieval.isqrt_cov(x, iterations=5)
    assert (five - out).abs().max() / out.abs().max() < 0.1


@settings(max_examples=20)
@given(n=st.integers(1, 3), c=st.integers(1, 12), hw=st.integers(2, 30),
       iterations=st.integers(1, 7), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_isqrt_cov_backward_is_autograd_through_the_iterations(n, c, hw, iterations, seed, dtype):
    """The hand-written backward of the Newton-Schulz iterations against the reference, which
    differentiates every step with autograd, under a random (non-symmetric) upstream gradient."""
    x = feature_map(n, c, 1, hw, seed, dtype) + 0.1
    upstream = torch.randn(n, c * (c + 1) // 2, generator=torch.Generator().manual_seed(seed),
                           dtype=dtype)
    results = []
    for fn in (retrieval.isqrt_cov, reference.isqrt_cov):
        xi = x.clone().requires_grad_()
        out = fn(xi, iterations=iterations)
        out.backward(upstream)
        results.append((out, xi.grad))
    for a, b in zip(*results):
        assert_relative_close(a, b, 1e-10 if dtype == torch.float64 else 1e-4)


def test_isqrt_cov_compiles_works_under_torch_func_and_refuses_double_backward():
    x = feature_map(2, 6, 3, 3, seed=2) + 0.1
    compiled = torch.compile(retrieval.isqrt_cov, fullgraph=True, backend="aot_eager")
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    compiled(xc, iterations=4).sum().backward()
    retrieval.isqrt_cov(xe, iterations=4).sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad)
    gradient = torch.func.grad(lambda t: retrieval.isqrt_cov(t, iterations=4).sum())(x)
    torch.testing.assert_close(gradient, xe.grad)
    per_image = torch.func.vmap(lambda t: retrieval.isqrt_cov(t[None], iterations=4)[0])(x)
    torch.testing.assert_close(per_image, retrieval.isqrt_cov(x, iterations=4))
    jacobians = torch.func.vmap(torch.func.jacrev(
        lambda t: retrieval.isqrt_cov(t[None], iterations=4)[0]))(x)
    expected = torch.func.vmap(torch.func.jacrev(
        lambda t: reference.isqrt_cov(t[None], iterations=4)[0]))(x)
    torch.testing.assert_close(jacobians, expected)
    # refused, not silently missing the iterations' part: the double backward also runs
    # through the covariance, which is differentiable twice
    (grad,) = torch.autograd.grad(retrieval.isqrt_cov(xe, iterations=4).pow(2).sum(), xe,
                                  create_graph=True)
    with pytest.raises(RuntimeError, match="isqrt_cov is differentiable once"):
        torch.autograd.grad(grad.pow(2).sum(), xe)
    # a loss linear in the output: the upstream gradient is constant, A still links the node
    (grad,) = torch.autograd.grad(retrieval.isqrt_cov(xe, iterations=4).sum(), xe,
                                  create_graph=True)
    with pytest.raises(RuntimeError, match="isqrt_cov is differentiable once"):
        torch.autograd.grad(grad.pow(2).sum(), xe)


def test_isqrt_cov_gradcheck_half_and_module():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    check_gradients(lambda t: retrieval.isqrt_cov(t, iterations=3), (x,))
    half = retrieval.isqrt_cov(x.detach().half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), retrieval.isqrt_cov(x.detach().half().double()),
                               rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(fnn.ISqrtCovPooling(iterations=3)(x),
                               retrieval.isqrt_cov(x, iterations=3))
    constant = torch.ones(1, 2, 3, 3)
    assert torch.isfinite(retrieval.isqrt_cov(constant)).all()


def test_isqrt_cov_of_a_constant_map_is_zero_as_in_the_reference():
    """Hypothesis found it: relu maps of one channel and two locations can be constant."""
    x = torch.full((2, 1, 1, 2), 0.1, dtype=torch.float64)
    for fn in (retrieval.isqrt_cov, reference.isqrt_cov):
        assert torch.equal(fn(x, iterations=3), torch.zeros(2, 1, dtype=torch.float64))


@pytest.mark.parametrize("head", [
    lambda fmt: fnn.MAC(input_format=fmt), lambda fmt: fnn.SPoC(input_format=fmt),
    lambda fmt: fnn.GeM(input_format=fmt), lambda fmt: fnn.CroW(input_format=fmt),
    lambda fmt: fnn.ISqrtCovPooling(input_format=fmt)])
def test_pooling_heads_take_token_sequences(head):
    """(N, L, C) tokens, as a ViT gives them, pool as the (N, C, H, W) map they flatten."""
    x = feature_map(2, 5, 3, 4, seed=3) + 0.1
    tokens = x.flatten(2).transpose(1, 2)  # (N, H·W, C)
    torch.testing.assert_close(head("NLC")(tokens), head("NCHW")(x))
    with pytest.raises(ValueError, match="x must"):
        head("NLC")(x)


def test_heads_that_need_the_grid_refuse_tokens():
    with pytest.raises(ValueError, match="center_prior"):
        fnn.SPoC(center_prior=True, input_format="NLC")
    with pytest.raises(ValueError, match="input_format"):
        fnn.GeM(input_format="NHWC")
