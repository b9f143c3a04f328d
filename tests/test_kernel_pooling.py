"""Native kernel pooling vs the reference, gradients, sketch properties, modules, bad input."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import finegrained_ops as fo
from finegrained_ops._native import _C
from finegrained_ops.nn import CompactBilinearPooling, KernelPooling
from finegrained_ops.ops.kernel_pooling import (_kernel_pooling, _kernel_pooling_backward,
                                                sketch_table)
from finegrained_ops.reference import compact_bilinear_pooling as reference_two_input
from finegrained_ops.reference import kernel_pooling as reference

from .helpers import assert_relative_close, check_gradients


def random_problem(n, locations, channels, dim, order, seed, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, locations, channels, generator=g, dtype=torch.float64).to(dtype)
    alpha = torch.rand(order + 1, generator=g, dtype=torch.float64) + 0.5
    hash_index, hash_sign = fo.draw_hashes(channels, dim, order, seed=seed)
    return tuple(t.to(device) for t in (x, hash_index, hash_sign.to(dtype), alpha.to(dtype)))


def native_and_reference(x, hash_index, hash_sign, alpha, dim, compute_dtype=None):
    """Outputs and gradients (x, alpha) of both under one random upstream gradient; the
    reference runs on the inputs cast to `compute_dtype` (default: their own dtype)."""
    xa, aa = x.detach().clone().requires_grad_(), alpha.detach().clone().requires_grad_()
    ya = fo.kernel_pooling(xa, hash_index, hash_sign, aa, dim)
    ref_dtype = compute_dtype or x.dtype
    xb = x.detach().to(ref_dtype).requires_grad_()
    ab = alpha.detach().to(ref_dtype).requires_grad_()
    yb = reference(xb, hash_index, hash_sign.to(ref_dtype), ab, dim)
    upstream = torch.randn(yb.shape, generator=torch.Generator().manual_seed(1),
                           dtype=ref_dtype).to(yb.device)
    (ya.to(ref_dtype) * upstream).sum().backward()
    (yb * upstream).sum().backward()
    return (ya, xa.grad, aa.grad), (yb, xb.grad, ab.grad)


@given(n=st.integers(1, 3), locations=st.integers(1, 20), channels=st.integers(1, 24),
       dim=st.integers(2, 40), order=st.integers(1, 5), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_native_matches_reference(n, locations, channels, dim, order, seed, dtype):
    x, h, s, alpha = random_problem(n, locations, channels, dim, order, seed, dtype)
    native, ref = native_and_reference(x, h, s, alpha, dim)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert native[0].dtype == dtype and native[0].shape == (n, 1 + channels + (order - 1) * dim)
    for a, b in zip(native, ref):
        assert_relative_close(a, b, tol)


@pytest.mark.parametrize("shape", [(2, 196, 64, 256, 4), (1, 50, 512, 4096, 3), (3, 7, 9, 33, 5)])
def test_native_matches_reference_at_realistic_sizes(device, shape):
    n, locations, channels, dim, order = shape
    x, h, s, alpha = random_problem(n, locations, channels, dim, order, 0, torch.float32, device)
    native, ref = native_and_reference(x, h, s, alpha, dim)
    for a, b in zip(native, ref):
        assert_relative_close(a, b, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(device, dtype):
    x, h, s, alpha = random_problem(2, 30, 16, 64, 4, 3, torch.float32, device)
    x = x.to(dtype)
    native, ref = native_and_reference(x, h, s, alpha, 64, compute_dtype=torch.float32)
    assert native[0].dtype == dtype and native[1].dtype == dtype
    assert torch.isfinite(native[0]).all()
    # Only the final rounding to the half type separates the two.
    eps = torch.finfo(dtype).eps
    for a, b in zip(native, ref):
        assert_relative_close(a, b, 2 * eps)


@pytest.mark.parametrize("order, dim", [(2, 8), (3, 7), (4, 6), (5, 5), (1, 4)])
def test_gradcheck(order, dim):
    x, h, s, alpha = random_problem(2, 3, 5, dim, order, order)
    x.requires_grad_()
    alpha.requires_grad_()
    check_gradients(lambda a, b: fo.kernel_pooling(a, h, s, b, dim), (x, alpha))


def test_gradcheck_compact_bilinear():
    x, h, s, _ = random_problem(2, 4, 6, 9, 2, 7)
    x.requires_grad_()
    check_gradients(lambda a: fo.compact_bilinear_pooling(a, h, s, 9), (x,))


def two_input_problem(n, locations, channels, y_channels, dim, seed, dtype=torch.float64,
                      device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, locations, channels, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(n, locations, y_channels, generator=g, dtype=torch.float64).to(dtype)
    hash_index, hash_sign = fo.draw_two_input_hashes(channels, y_channels, dim, seed=seed)
    return tuple(t.to(device) for t in (x, y, hash_index, hash_sign.to(dtype)))


@given(n=st.integers(1, 3), locations=st.integers(1, 12), channels=st.integers(1, 16),
       y_channels=st.integers(1, 16), dim=st.integers(2, 40), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_two_input_compact_bilinear_is_the_sketch_of_the_outer_product(
        n, locations, channels, y_channels, dim, seed, dtype):
    """Against the definition (no FFT): the count sketch of mean_l x_l y_lᵀ under the hash
    (h_x(a) + h_y(b)) mod d, values and the gradients of both inputs."""
    x, y, h, s = two_input_problem(n, locations, channels, y_channels, dim, seed, dtype)
    results = []
    for fn in (lambda a, b: fo.compact_bilinear_pooling(a, h, s, dim, y=b),
               lambda a, b: reference_two_input(
                   a, b, (h[0, :channels], s[0, :channels]), (h[1, channels:], s[1, channels:]),
                   dim)):
        a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = fn(a, b)
        out.backward(torch.linspace(-1, 1, n * dim, dtype=dtype).reshape(n, dim))
        results.append((out, a.grad, b.grad))
    assert results[0][0].shape == (n, dim) and results[0][0].dtype == dtype
    for a, b in zip(*results):
        assert_relative_close(a, b, 1e-10 if dtype == torch.float64 else 1e-5)


def test_two_input_gradcheck_compile_and_equal_streams_give_single_input_pooling():
    x, y, h, s = two_input_problem(2, 4, 6, 3, 9, 7)
    pool = lambda a, b: fo.compact_bilinear_pooling(a, h, s, 9, y=b)  # noqa: E731
    check_gradients(pool, (x.requires_grad_(), y.requires_grad_()))
    compiled = torch.compile(pool, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, y), pool(x, y))
    h2, s2 = fo.draw_two_input_hashes(6, 6, 9, seed=7)
    h1, s1 = fo.draw_hashes(6, 9, 2, seed=7)
    assert torch.equal(fo.compact_bilinear_pooling(x, h2, s2.double(), 9, y=x),
                       fo.compact_bilinear_pooling(x, h1, s1.double(), 9))


def test_two_input_hashes_are_independent_and_only_their_own_blocks_are_read():
    """x's and y's sketches come from one draw: two draws from one seed would share their
    random stream (at C = 512, C_y = 256, y's signs were x's channels 256..511)."""
    h, s = fo.draw_two_input_hashes(512, 256, 64, seed=0)
    assert not torch.equal(s[1, 512:], s[0, 256:512])
    assert not torch.equal(h[1, 512:], h[0, 256:512])
    assert torch.equal(s[0, 512:], torch.zeros(256)) and torch.equal(s[1, :512], torch.zeros(512))
    x, y, h, s = two_input_problem(2, 3, 4, 5, 16, 1)
    full_index, full_sign = fo.draw_hashes(9, 16, 2, seed=1)  # no zero signs anywhere
    full_index[0, :4], full_index[1, 4:] = h[0, :4], h[1, 4:]
    full_sign[0, :4], full_sign[1, 4:] = s[0, :4], s[1, 4:]
    torch.testing.assert_close(fo.compact_bilinear_pooling(x, full_index, full_sign.double(), 16,
                                                           y=y),
                               fo.compact_bilinear_pooling(x, h, s, 16, y=y))


def test_a_channel_left_out_of_every_sketch_is_ignored(device):
    """Sign 0 leaves a channel out of a sketch (the CUDA gather skips it, the CPU scatter
    too): even a NaN there changes nothing, and its gradient is 0."""
    x, h, s, alpha = random_problem(2, 5, 6, 16, 3, 4, device=device)
    s[:, 2] = 0
    poisoned = x.clone()
    poisoned[:, :, 2] = float("nan")
    xa = poisoned.requires_grad_()
    out = fo.kernel_pooling(xa, h, s, alpha, 16)
    out[:, 7:].pow(2).sum().backward()  # the sketched blocks (the order-1 block holds x raw)
    kept = [0, 1, 3, 4, 5]
    expected = fo.kernel_pooling(x[:, :, kept], h[:, kept], s[:, kept], alpha, 16)
    torch.testing.assert_close(out[:, 7:], expected[:, 6:], rtol=1e-12, atol=1e-12)
    assert torch.equal(xa.grad[:, :, 2], torch.zeros_like(xa.grad[:, :, 2]))


def test_double_backward_is_refused_not_silently_wrong():
    x, h, s, alpha = random_problem(1, 2, 3, 4, 2, 0)
    x.requires_grad_()
    (g,) = torch.autograd.grad(fo.kernel_pooling(x, h, s, alpha, 4).pow(2).sum(), x,
                               create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), x)


def test_zero_images():
    x, h, s, alpha = random_problem(0, 5, 4, 8, 3, 0)
    x.requires_grad_()
    y = fo.kernel_pooling(x, h, s, alpha, 8)
    assert y.shape == (0, 1 + 4 + 2 * 8)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("order", [2, 3])
def test_sketch_inner_product_is_unbiased(order):
    """Tensor Sketch property: E_h[φ_i(x)·φ_i(y)] = (x·y)^i over independent hash draws."""
    g = torch.Generator().manual_seed(order)
    channels, dim, draws = 6, 8, 3000
    xy = torch.randn(2, 1, channels, generator=g, dtype=torch.float64)
    exact = (xy[0, 0] @ xy[1, 0]).item() ** order
    estimates = []
    for seed in range(draws):
        h, s = fo.draw_hashes(channels, dim, order, seed=seed)
        blocks, _ = _kernel_pooling(xy, sketch_table(h, s, dim), None, dim, False)
        estimates.append((blocks[0, -dim:] @ blocks[1, -dim:]).item())  # order `order`
    estimates = torch.tensor(estimates, dtype=torch.float64)
    stderr = estimates.std().item() / math.sqrt(draws)
    assert abs(estimates.mean().item() - exact) < 4 * stderr
    assert stderr < 0.1 * abs(exact) + 1e-3  # the check has power: noise is small vs (x·y)^i


def rbf_relative_error(dim, order, pairs=200, seeds=3):
    """Mean eq. 3.12 error of φ(x)·φ(y) vs exp(-γ‖x - y‖²) on L2-normalised non-negative
    (ReLU-like) features, γ from estimate_rbf_gamma, averaged over hash seeds."""
    g = torch.Generator().manual_seed(0)
    feats = torch.relu(torch.randn(2 * pairs, 64, generator=g, dtype=torch.float64) + 0.3)
    feats = torch.nn.functional.normalize(feats, dim=1)
    x, y = feats[:pairs], feats[pairs:]
    rbf_gamma = fo.estimate_rbf_gamma(feats)
    exact = torch.exp(-rbf_gamma * (x - y).pow(2).sum(1))
    errors = []
    for seed in range(seeds):
        pool = KernelPooling(64, dim, order=order, alpha="rbf", rbf_gamma=rbf_gamma, seed=seed,
                             input_format="NLC", sqrt_normalize=False).double()
        approx = (pool(x[:, None]) * pool(y[:, None])).sum(1)
        errors.append(((approx - exact).abs() / exact).mean())
    return torch.stack(errors).mean().item()


def test_rbf_approximation_improves_with_dim_and_order():
    by_dim = [rbf_relative_error(d, 4) for d in (64, 512, 4096)]
    by_order = [rbf_relative_error(16384, p) for p in (2, 3, 4, 5)]
    assert by_dim[0] > by_dim[1] > by_dim[2]
    assert by_order[0] > by_order[1] > by_order[2] > by_order[3]
    assert by_order[3] < 0.1


def test_estimate_rbf_gamma_and_rbf_alpha():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(30, 5, generator=g, dtype=torch.float64)
    gram = f @ f.T
    mean_inner = (gram.sum() - gram.diagonal().sum()) / (30 * 29)
    assert fo.estimate_rbf_gamma(f) == pytest.approx(1 / mean_inner.item(), rel=1e-12)
    assert fo.estimate_rbf_gamma(f.reshape(3, 10, 5)) == fo.estimate_rbf_gamma(f)
    with pytest.raises(ValueError, match="> 0"):
        fo.estimate_rbf_gamma(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    alpha = fo.rbf_alpha(0.7, 4)
    expected = [math.sqrt(math.exp(-1.4) * 1.4 ** i / math.factorial(i)) for i in range(5)]
    torch.testing.assert_close(alpha, torch.tensor(expected, dtype=torch.float64))


def test_signed_sqrt_has_finite_gradients_at_zero():
    x = torch.tensor([-4.0, 0.0, 1e-30, 9.0], dtype=torch.float64, requires_grad=True)
    y = fo.signed_sqrt(x)
    torch.testing.assert_close(y[[0, 3]], torch.tensor([-2.0, 3.0], dtype=torch.float64),
                               atol=2e-6, rtol=0)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad[[0, 3]], torch.tensor([0.25, 1 / 6], dtype=torch.float64),
                               rtol=1e-6, atol=0)
    # At 0 the slope the docstring gives, 1 / (2 sqrt(eps)), not sign(0) = 0.
    torch.testing.assert_close(x.grad[1:3], torch.full((2,), 5e5, dtype=torch.float64))
    check_gradients(fo.signed_sqrt, (torch.tensor([-3.0, 0.5, 2.0], dtype=torch.float64,
                                                   requires_grad=True),), gradgrad=True)


def test_module_gradcheck_with_structurally_zero_pooled_values():
    """C = 1, d = 3: most sketch entries are 0 for every input, up to FFT round-off (~1e-17).
    The analytic gradient there is the exact one (~0); finite differences of the round-off
    through signed sqrt's slope of 5e5 at 0 reach 2e-5, hence atol 1e-4 (not the default
    1e-5). Before, sign(0) = 0 in autograd made an exactly-zero entry a wrong gradient."""
    pool = KernelPooling(1, 3, order=3, input_format="NLC").double()
    x = torch.randn(1, 7, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    check_gradients(pool, (x.requires_grad_(),), atol=1e-4)


def test_module_shapes_and_compact_bilinear_is_the_order_2_block():
    x = torch.randn(2, 16, 5, 7)
    kp = KernelPooling(16, 32, order=2, alpha="ones", seed=4, sqrt_normalize=False)
    cbp = CompactBilinearPooling(16, 32, seed=4, sqrt_normalize=False)
    y = kp(x)
    assert y.shape == (2, kp.output_dim) == (2, 1 + 16 + 32)
    torch.testing.assert_close(cbp(x), y[:, 17:])
    nlc = CompactBilinearPooling(16, 32, seed=4, input_format="NLC", sqrt_normalize=False)
    torch.testing.assert_close(nlc(x.flatten(2).transpose(1, 2)), cbp(x))
    normalised = KernelPooling(16, 32, order=3)(x)
    torch.testing.assert_close(normalised.norm(dim=1), torch.ones(2))


def test_hashes_are_seeded_buffers_that_survive_state_dict_and_casts():
    rng_before = torch.get_rng_state()
    a, b = KernelPooling(8, 16, order=3, seed=5), KernelPooling(8, 16, order=3, seed=5)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is never touched
    assert torch.equal(a.hash_index, b.hash_index) and torch.equal(a.hash_sign, b.hash_sign)
    assert not torch.equal(a.hash_index, KernelPooling(8, 16, order=3, seed=6).hash_index)
    with torch.no_grad():
        a.alpha.mul_(torch.linspace(0.5, 2.0, 4))
    other = KernelPooling(8, 16, order=3, seed=99)
    other.load_state_dict(a.state_dict())
    x = torch.randn(3, 8, 4, 4)
    assert torch.equal(other(x), a(x))
    a.half()
    assert a.hash_index.dtype == torch.int64 and a.hash_sign.dtype == torch.float16
    assert a(x.half()).dtype == torch.float16
    a.double()
    assert a.hash_index.dtype == torch.int64 and a.hash_sign.dtype == torch.float64
    torch.testing.assert_close(a(x.double()).float(), other(x), atol=2e-3, rtol=0)


def test_module_gamma_estimation_and_learned_alpha():
    feats = torch.rand(4, 8, 3, 3)
    rbf = KernelPooling(8, 16, order=3, alpha="rbf")
    with pytest.raises(RuntimeError, match="estimate_rbf_gamma"):
        rbf(feats)
    rbf_gamma = rbf.estimate_rbf_gamma(feats)
    assert rbf_gamma == pytest.approx(fo.estimate_rbf_gamma(feats.flatten(2).transpose(1, 2)))
    torch.testing.assert_close(rbf.alpha, fo.rbf_alpha(rbf_gamma, 3).float())
    restored = KernelPooling(8, 16, order=3, alpha="rbf")
    restored.load_state_dict(rbf.state_dict())
    assert restored.rbf_gamma == rbf_gamma and torch.equal(restored(feats), rbf(feats))
    learned = KernelPooling(8, 16, order=3, alpha="learned", rbf_gamma=0.5)
    assert isinstance(learned.alpha, torch.nn.Parameter)
    torch.testing.assert_close(learned.alpha.detach(), fo.rbf_alpha(0.5, 3).float())
    learned(feats).sum().backward()
    assert learned.alpha.grad is not None and torch.isfinite(learned.alpha.grad).all()


def test_determinism_bitwise_and_independent_of_threads(device):
    x, h, s, alpha = random_problem(4, 196, 64, 512, 4, 2, torch.float32, device)
    results = []
    threads = torch.get_num_threads()
    try:
        for n_threads in (threads, threads, 1):
            torch.set_num_threads(n_threads)
            xi = x.clone().requires_grad_()
            y = fo.kernel_pooling(xi, h, s, alpha, 512)
            y.pow(2).sum().backward()
            results.append((y, xi.grad))
    finally:
        torch.set_num_threads(threads)
    for y, gx in results[1:]:
        assert torch.equal(y, results[0][0]) and torch.equal(gx, results[0][1])


def test_torch_compile_fullgraph_and_opcheck():
    x, h, s, alpha = random_problem(2, 5, 6, 10, 3, 0, torch.float32)
    xc = x.clone().requires_grad_()
    compiled = torch.compile(lambda a: fo.kernel_pooling(a, h, s, alpha, 10), fullgraph=True,
                             backend="aot_eager")
    compiled(xc).sum().backward()
    xe = x.clone().requires_grad_()
    fo.kernel_pooling(xe, h, s, alpha, 10).sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad)
    table = sketch_table(h, s, 10)
    for a, normalize in [(alpha, True), (None, False)]:
        args = (x.clone().requires_grad_(), table, a, 10, normalize)
        torch.library.opcheck(_kernel_pooling, args)
        out, blocks = _kernel_pooling(*args)
        # a strided gradient, as .sum()'s backward passes
        grad = torch.randn(out.shape[1]).expand(out.shape)
        torch.library.opcheck(_kernel_pooling_backward,
                              (grad, x, table, a, blocks.detach(), out.detach(), 10, normalize))
    torch.library.opcheck(torch.ops.finegrained_ops.sketch_table.default, (h, s, 10))


@pytest.mark.parametrize("change, error, match", [
    (dict(hash_index=torch.tensor([[0, 1, 8], [0, 1, 2]])), ValueError,
     "in \\[0, sketch_dim=8\\)"),
    (dict(hash_index=torch.tensor([[0, -1, 2], [0, 1, 2]])), ValueError,
     "in \\[0, sketch_dim=8\\)"),
    (dict(hash_sign=torch.tensor([[1.0, 0.5, 1.0], [1.0, 1.0, -1.0]])), ValueError,
     "\\+1, -1 or 0"),
    (dict(hash_index=torch.zeros(2, 4, dtype=torch.int64)), ValueError, "C = 3"),
    (dict(hash_index=torch.zeros(2, 3, dtype=torch.int32)), TypeError, "int64"),
    (dict(hash_sign=torch.ones(3, 3)), ValueError, "of one shape"),
    (dict(alpha=torch.ones(2)), ValueError, "p \\+ 1,\\) = \\(3,\\)"),
    (dict(x=torch.zeros(2, 4, 3, dtype=torch.int64)), TypeError, "floating point"),
    (dict(x=torch.zeros(2, 3)), ValueError, "\\(N, L, C\\)"),
    (dict(x=torch.zeros(2, 0, 3)), ValueError, "at least one location"),
    (dict(sketch_dim=1), ValueError, "sketch_dim must be an int >= 2"),
    (dict(sketch_dim=8.0), ValueError, "sketch_dim must be an int"),
])
def test_bad_input_raises_clear_errors(change, error, match):
    args = dict(x=torch.zeros(2, 4, 3), hash_index=torch.zeros(2, 3, dtype=torch.int64),
                hash_sign=torch.ones(2, 3), alpha=torch.ones(3), sketch_dim=8)
    args.update(change)
    with pytest.raises(error, match=match):
        fo.kernel_pooling(**args)


def test_bad_module_input_and_arguments():
    with pytest.raises(ValueError, match="input_format"):
        KernelPooling(4, 8, input_format="NHWC")
    with pytest.raises(ValueError, match="alpha"):
        KernelPooling(4, 8, alpha="poly")
    with pytest.raises(ValueError, match="order"):
        KernelPooling(4, 8, order=0)
    with pytest.raises(ValueError, match="\\(N, 4, H, W\\)"):
        KernelPooling(4, 8)(torch.zeros(2, 5, 3, 3))
    with pytest.raises(ValueError, match="two sketches"):
        fo.compact_bilinear_pooling(torch.zeros(1, 2, 3), torch.zeros(3, 3, dtype=torch.int64),
                                    torch.ones(3, 3), 4)


def test_bad_two_input_arguments():
    x, y, h, s = two_input_problem(2, 4, 3, 5, 8, 0)
    for bad_y, match in [(y[:1], "y must be \\(N, L, C_y\\) = \\(2, 4, C_y\\)"),
                         (y[:, :3], "y must be"), (y.float(), "in x's dtype"),
                         (y[0], "y must be 3-D")]:
        with pytest.raises(ValueError, match=match):
            fo.compact_bilinear_pooling(x, h, s, 8, y=bad_y)
    with pytest.raises(ValueError, match="\\(2, C \\+ C_y\\) = \\(2, 8\\)"):
        fo.compact_bilinear_pooling(x, h[:, :7], s[:, :7], 8, y=y)
    pool = CompactBilinearPooling(3, 8, y_channels=5, input_format="NLC")
    with pytest.raises(ValueError, match="a second input y with 5 channels"):
        pool(x.float())
    with pytest.raises(ValueError, match="expected \\(N, L, 5\\) y"):
        pool(x.float(), x.float())
    with pytest.raises(ValueError, match="y must have x's N and H, W"):
        CompactBilinearPooling(3, 8, y_channels=5)(torch.zeros(2, 3, 4, 4),
                                                   torch.zeros(2, 5, 2, 8))
    with pytest.raises(ValueError, match="takes one input"):
        CompactBilinearPooling(3, 8, input_format="NLC")(x.float(), y.float())
    with pytest.raises(ValueError, match="y_channels must be an int >= 1"):
        CompactBilinearPooling(3, 8, y_channels=0)


def test_two_input_module_matches_the_function_and_keeps_its_shape_in_the_state_dict():
    x, y = torch.randn(2, 6, 4, 5), torch.randn(2, 3, 4, 5)
    pool = CompactBilinearPooling(6, 32, seed=2, y_channels=3)
    expected = fo.compact_bilinear_pooling(x.flatten(2).transpose(1, 2), *fo.draw_two_input_hashes(
        6, 3, 32, seed=2), 32, y=y.flatten(2).transpose(1, 2))
    out = pool(x, y)
    assert out.shape == (2, pool.output_dim) == (2, 32) and "y_channels=3" in repr(pool)
    torch.testing.assert_close(out, F.normalize(fo.signed_sqrt(expected), dim=1))
    swapped = CompactBilinearPooling(3, 32, y_channels=6)  # same hash shapes, other streams
    with pytest.raises(ValueError, match="is for in_channels=6"):
        swapped.load_state_dict(pool.state_dict())
    twin = CompactBilinearPooling(6, 32, seed=9, y_channels=3)
    twin.load_state_dict(pool.state_dict())
    assert torch.equal(twin(x, y), out) and twin.seed == 2


def test_native_entry_checks_its_own_preconditions():
    """Calling _C directly with bad values raises, never touches memory out of range."""
    x, h, s = torch.zeros(1, 2, 3), torch.zeros(2, 3, dtype=torch.int64), torch.ones(2, 3)
    table = _C.sketch_table(h, s, 4)
    with pytest.raises(ValueError, match="in \\[0, sketch_dim=4\\)"):
        _C.sketch_table(h + 4, s, 4)
    with pytest.raises(ValueError, match="p >= 2"):
        _C.kernel_pooling(x, table[:1], None, 4, False)
    with pytest.raises(ValueError, match="\\(p, 2C \\+ sketch_dim \\+ 1\\) = \\(p, 12\\)"):
        _C.kernel_pooling(x, table, None, 5, False)
    for row, column, value in [(0, 0, 9), (1, 3, 2), (0, 10, 7), (1, 8, 2), (1, 9, -2)]:
        bad = table.clone()
        bad[row, column] = value
        with pytest.raises(ValueError, match=f"row {row} of sketch_table is not"):
            _C.kernel_pooling(x, bad, None, 4, False)
    out, blocks = _C.kernel_pooling(x, table, None, 4, True)
    with pytest.raises(ValueError, match="grad must be"):
        _C.kernel_pooling_backward(torch.zeros(1, 5), x, table, None, blocks, out, 4, True)
    with pytest.raises(ValueError, match="sketch_dim must be >= 2"):
        _C.sketch_table(h, s, 1)


@pytest.mark.parametrize("channels, dim, order, two_input",
                         [(1, 2, 2, False), (40, 7, 3, False), (300, 64, 4, False),
                          (5, 300, 2, False), (40, 7, 2, True), (3, 64, 2, True)])
def test_sketch_table_holds_signed_buckets_and_the_channels_of_each_bin(channels, dim, order,
                                                                        two_input):
    """The table the kernels read, against a brute-force grouping (it once sorted descending:
    at::sort(t, true, 1) is sort(dim=1, descending=true)). Channels with sign 0 are in no
    bin and have code 0."""
    if two_input:
        h, s = fo.draw_two_input_hashes(channels, channels + 1, dim, seed=channels)
    else:
        h, s = fo.draw_hashes(channels, dim, order, seed=channels)
    width = h.shape[1]
    table = sketch_table(h, s, dim)
    assert table.shape == (h.shape[0], 2 * width + dim + 1) and table.dtype == torch.int64
    for t in range(h.shape[0]):
        codes, start, entries = table[t].split([width, dim + 1, width])
        assert codes.tolist() == [int(s[t, k]) * (int(h[t, k]) + 1) for k in range(width)]
        hashes = [v if s[t, k] != 0 else dim for k, v in enumerate(h[t].tolist())]
        grouped = [int(s[t, k]) * (k + 1) for j in range(dim) for k in range(width)
                   if hashes[k] == j]
        assert entries.tolist() == grouped + [0] * (width - len(grouped))
        assert start.tolist() == [sum(v < j for v in hashes) for j in range(dim + 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_locations_spanning_launcher_chunks_match_the_cpu(device, dtype):
    """p·d = 16384 scalars per location, so the CUDA launcher's 2^24-scalar chunks hold 1024
    locations: 3 × 700 locations span three chunks, with images straddling their bounds."""
    x, h, s, alpha = random_problem(3, 700, 8, 4096, 4, 5, dtype)
    grad = torch.randn(3, 1 + 8 + 3 * 4096, generator=torch.Generator().manual_seed(2),
                       dtype=dtype)
    results = []
    for where in ("cpu", device):
        xd = x.detach().to(where).requires_grad_()
        y = fo.kernel_pooling(xd, h.to(where), s.to(where), alpha.to(where), 4096)
        y.backward(grad.to(where))
        results.append((y.detach().cpu(), xd.grad.cpu()))
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for a, b in zip(*results):
        assert_relative_close(b, a, tol)


def test_loading_a_sketch_of_another_shape_is_refused_and_the_seed_follows():
    small, big = KernelPooling(8, 16, order=3), KernelPooling(8, 32, order=3, seed=7)
    before = big.hash_index.clone()
    with pytest.raises(ValueError, match="the state dict is for sketch_dim=16, this KernelPooling "
                                         "has sketch_dim=32"):
        big.load_state_dict(small.state_dict())  # the hashes alone would fit
    assert torch.equal(big.hash_index, before)  # refused before anything was copied
    with pytest.raises(ValueError, match="is for order=3"):
        KernelPooling(8, 16, order=4).load_state_dict(small.state_dict())
    twin = KernelPooling(8, 16, order=3, seed=5)
    twin.load_state_dict(KernelPooling(8, 16, order=3, seed=9).state_dict())
    assert twin.seed == 9 and "seed=9" in repr(twin)
    old_format = small.state_dict()  # saved before the sketch's spec was stored
    del old_format["hash_spec"]
    with pytest.raises(ValueError, match=r"hash_index values must be in \[0, sketch_dim=8\), "
                                         r"got min 0, max 15"):
        KernelPooling(8, 8, order=3).load_state_dict(old_format)
    saved = CompactBilinearPooling(8, 16, seed=3).state_dict()
    CompactBilinearPooling(8, 16).load_state_dict({k: v for k, v in saved.items()
                                                   if k != "hash_spec"})
    with pytest.raises(ValueError, match="is for y_channels=None, this CompactBilinearPooling "
                                         "has y_channels=4"):
        CompactBilinearPooling(8, 16, y_channels=4).load_state_dict(
            CompactBilinearPooling(8, 16).state_dict())
    state = small.state_dict()
    state["hash_sign"] = state["hash_sign"] * 2
    with pytest.raises(ValueError, match="hash_sign values must be"):
        KernelPooling(8, 16, order=3).load_state_dict(state)
    legacy = small.state_dict()  # the former non-tensor entry
    del legacy["hash_spec"]
    legacy["_extra_state"] = {"in_channels": 8, "dim": 16, "order": 3, "seed": 0, "gamma": None}
    with pytest.raises(ValueError, match="the state dict is for sketch_dim=16"):
        big.load_state_dict(legacy)
    twin.load_state_dict(legacy)
    assert twin.seed == 0


def test_state_dicts_hold_only_tensors_and_the_loaded_table_is_the_hashes():
    """safetensors and timm's ModelEma take tensors only; the step reads the table built, once,
    from the hashes a state dict brings (and rbf_gamma comes back with them)."""
    source = KernelPooling(8, 16, order=3, alpha="rbf", rbf_gamma=0.25, seed=4)
    for module in (source, CompactBilinearPooling(3, 16, y_channels=5)):
        assert all(isinstance(v, torch.Tensor) for v in module.state_dict().values())
    target = KernelPooling(8, 16, order=3, alpha="rbf", seed=9)
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.sketch_table, source.sketch_table)
    assert (target.rbf_gamma, target.seed) == (0.25, 4)
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_safetensors_round_trip_and_a_model_ema_copy(tmp_path):
    """What failed on the former dict entry: safetensors.save_file, and timm's ModelEmaV3
    pattern (a deep copy whose state-dict values are lerped toward the model's when floating,
    copied otherwise), written out here (timm would bring its own torchvision)."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    x = torch.randn(2, 8, 3, 3, generator=torch.Generator().manual_seed(1))
    for module in (KernelPooling(8, 16, order=3, alpha="rbf", rbf_gamma=0.3, seed=2),
                   CompactBilinearPooling(8, 16, seed=5)):
        path = tmp_path / f"{type(module).__name__}.safetensors"
        safetensors_torch.save_file(module.state_dict(), path)
        fresh = type(module)(8, 16, **({"order": 3, "alpha": "rbf"}
                                       if isinstance(module, KernelPooling) else {}))
        fresh.load_state_dict(safetensors_torch.load_file(path))
        torch.testing.assert_close(fresh(x), module(x), rtol=0, atol=0)
        ema = copy.deepcopy(module)
        with torch.no_grad():
            for ema_value, value in zip(ema.state_dict().values(),
                                        module.state_dict().values()):
                if ema_value.is_floating_point():
                    ema_value.lerp_(value, 1 - 0.9998)
                else:
                    ema_value.copy_(value)
        torch.testing.assert_close(ema(x), module(x), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sqrt_normalize_is_normalize_of_signed_sqrt_in_one_pass(dtype):
    """The heads' post-processing as one native op each way, equal to its composition (with
    zero rows, whose norm is clamped as F.normalize's), differentiable once."""
    from finegrained_ops.ops.kernel_pooling import _sqrt_normalize, sqrt_normalize
    g = torch.Generator().manual_seed(3)
    y = torch.randn(5, 300, generator=g, dtype=torch.float64).to(dtype)
    y[2] = 0
    y = y.requires_grad_()
    expected = F.normalize(fo.signed_sqrt(y), dim=1)
    out = sqrt_normalize(y)
    torch.testing.assert_close(out, expected)
    upstream = torch.randn(5, 300, generator=g, dtype=torch.float64).to(dtype)
    (ours,) = torch.autograd.grad(out, y, upstream)
    (theirs,) = torch.autograd.grad(expected, y, upstream)
    torch.testing.assert_close(ours, theirs, rtol=1e-4 if dtype == torch.float32 else 1e-7,
                               atol=1e-6 if dtype == torch.float32 else 1e-12)
    if dtype == torch.float64:
        # (not at 0, where finite differences see less than the slope: signed_sqrt's docstring)
        check_gradients(sqrt_normalize, (y.detach()[[0, 1, 3], :7].clone().requires_grad_(),))
        torch.library.opcheck(_sqrt_normalize, (y.detach().clone().requires_grad_(), 1e-12))
    half = sqrt_normalize(y.detach().to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), expected.detach().float(), rtol=2e-2, atol=2e-3)
    with pytest.raises(RuntimeError, match="differentiable once"):
        z = y.detach().clone().requires_grad_()
        (first,) = torch.autograd.grad(sqrt_normalize(z).sum(), z, create_graph=True)
        first.sum().backward()
