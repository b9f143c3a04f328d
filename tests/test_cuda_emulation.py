"""The CUDA launchers and kernels, run on this CPU by the CUDA emulation (tests/cuda_emulation,
docs/cuda_emulation.md), against the CPU kernels, op by op, forward and backward.

Integer results (mined triplets) must be equal. Floating results are compared by their largest
error relative to the largest magnitude of the CPU result (SCALED_TOLERANCE): the devices sum in
different orders (kernel pooling: the CPU sums groups of locations with SIMD vectors, the CUDA
kernel one location at a time; class-balanced loss: SIMD lanes against a shuffle tree;
triplet distances: a fixed-order CPU kernel against a GEMM) and use different libm
functions (exp, log1p), so bitwise equality across devices is not a property of any op; no
build contracts multiply-adds (docs/semantics.md §1, floating point). Every emulated result must, however, be bitwise the same with the threads and
blocks run in reverse order: no kernel may depend on the schedule. The emulator's own checks
(barriers, shuffles, launch limits) are tested first.
"""
import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import finegrained_ops as fo

from .cuda_emulation import build
from .helpers import assert_relative_close
from .registry import native_ops, results
from .test_fuzz import CONFIDENT_FAMILY, SCALES, assert_confident_rows_exact
from .test_long_tail_losses import loss_and_grad as long_tail_loss_and_grad
from .test_long_tail_losses import problem as long_tail_problem

pytestmark = pytest.mark.skipif(
    not build.compiler_available(),
    reason="CUDA emulation NOT RUN: no C++ compiler (set CXX) to build tests/cuda_emulation")

SCALED_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-13}


@pytest.fixture(scope="module")
def emulation():
    return build.load()


@contextlib.contextmanager
def emulated_cuda(emulation, reverse=False, launches=True):
    """Every op of finegrained_ops runs the emulated CUDA path (on CPU tensors) inside: the
    emulation registers each op's device kernels, compiled for the CUDA path, over its CPU
    kernels in the dispatcher, below the ops' own autograd (csrc/common/device_kernels.h).
    Unless `launches` is False (empty inputs), a kernel must launch."""
    try:
        emulation.emulate(True)
        emulation.set_reverse_order(reverse)
        emulation.take_launches()
        yield
        assert bool(emulation.take_launches()) == launches
    finally:
        emulation.set_reverse_order(False)
        emulation.emulate(False)  # the real CPU kernels are back


def run_three_ways(emulation, fn, launches=True):
    """fn() on the CPU kernels, the emulated CUDA kernels, and those in reverse order."""
    cpu = fn()
    with emulated_cuda(emulation, launches=launches):
        cuda = fn()
    with emulated_cuda(emulation, reverse=True, launches=launches):
        cuda_reversed = fn()
    assert len(cpu) == len(cuda) == len(cuda_reversed)
    for a, b in zip(cuda, cuda_reversed):
        assert torch.equal(a, b), "the emulated CUDA result depends on the thread order"
    return cpu, cuda


def assert_all(cpu, cuda, tolerance=SCALED_TOLERANCE):
    for a, b in zip(cpu, cuda):
        assert a.shape == b.shape and a.dtype == b.dtype
        if not a.is_floating_point():
            assert torch.equal(a, b)
        else:
            assert_relative_close(b, a, tolerance[a.dtype])


# ---------------------------------------------------------------------------------------------
# The emulator itself


def test_block_barriers_and_shared_memory(emulation):
    x = torch.randn(4 * 256)
    for reverse in (False, True):
        emulation.set_reverse_order(reverse)
        out = torch.zeros(4)
        emulation.selftest("block_sum", x, out, 4, 256)
        torch.testing.assert_close(out, x.view(4, 256).sum(1), rtol=1e-5, atol=1e-5)
    emulation.set_reverse_order(False)


def test_a_missing_barrier_shows_as_a_schedule_dependent_result(emulation):
    x = torch.rand(256) + 1
    results = []
    for reverse in (False, True):
        emulation.set_reverse_order(reverse)
        out = torch.zeros(1)
        emulation.selftest("racy_block_sum", x, out, 1, 256)
        results.append(out)
    emulation.set_reverse_order(False)
    assert not torch.equal(*results)


def test_warp_collectives(emulation):
    x = torch.randn(64)
    x[32:] = x[32:].abs() + 0.5
    out = torch.zeros(64 * 6)
    emulation.selftest("warp_collectives", x, out, 1, 64)
    out = out.view(2, 32, 6)
    warps = x.view(2, 32)
    torch.testing.assert_close(out[..., 0], warps.sum(1, keepdim=True).expand(2, 32))
    assert torch.equal(out[:, :31, 1], warps[:, 1:]) and torch.equal(out[:, 31, 1], warps[:, 31])
    assert torch.equal(out[:, 1:, 2], warps[:, :-1]) and torch.equal(out[:, 0, 2], warps[:, 0])
    assert torch.equal(out[..., 3], warps[:, 3:4].expand(2, 32))
    ballot = [sum(1 << i for i, v in enumerate(warp[:16]) if v > 0) for warp in warps.tolist()]
    assert out[..., 4].tolist() == [[float(b)] * 32 for b in ballot]
    assert out[..., 5].tolist() == [[0.0] * 32, [1.0] * 32]


def test_dynamic_shared_memory_and_atomics(emulation):
    x = torch.randn(128)
    out = torch.zeros(128)
    emulation.selftest("reverse_in_shared", x, out, 1, 128, 128 * 4)
    assert torch.equal(out, x.flip(0))
    count = torch.zeros(1)
    emulation.selftest("count_positive", x, count, 4, 32)
    assert count.item() == (x > 0).sum().item()


def test_exited_lanes_count_as_arrived_but_cannot_be_read(emulation):
    x = torch.randn(64)
    out = torch.zeros(64)
    emulation.selftest("shuffle_after_half_exit", x, out, 1, 64)
    warps = out.view(2, 32)
    assert torch.equal(warps[:, :16], x.view(2, 32)[:, :16].view(2, 8, 2).flip(2).reshape(2, 16))
    assert (warps[:, 16:] == 0).all()


def test_shared_memory_starts_poisoned_in_every_block(emulation):
    out = torch.zeros(2 * 32)
    emulation.selftest("shared_read_before_write", torch.zeros(64), out, 2, 32)
    assert out.isnan().all()


@pytest.mark.parametrize("kernel, match", [
    ("divergent_barrier", r"32 of 64 threads wait at __syncthreads and 32 have exited"),
    ("shuffle_from_exited_lane", r"lane 0 reads lane 16, which has exited"),
])
def test_divergent_barriers_fail_instead_of_hanging(emulation, kernel, match):
    with pytest.raises(RuntimeError, match=match):
        emulation.selftest(kernel, torch.randn(64), torch.zeros(64), 1, 64)


@pytest.mark.parametrize("grid, block, shared, match", [
    (0, 32, 0, r"invalid configuration argument: .*grid \(0, 1, 1\) has no blocks"),
    (1, 1025, 0, r"invalid configuration argument: .*more than 1024 threads"),
    (1, 32, 64 * 1024, r"invalid argument: .*65536 bytes of dynamic shared memory"),
])
def test_launches_cuda_would_refuse_fail(emulation, grid, block, shared, match):
    with pytest.raises(RuntimeError, match=match):
        emulation.selftest("reverse_in_shared", torch.randn(64), torch.zeros(64), grid, block,
                           shared)


# ---------------------------------------------------------------------------------------------
# Kernel pooling: 4096-scalar chunks here (build.KP_CHUNK_SCALARS), so these shapes span several
# chunks, with images straddling chunk boundaries (and one location per chunk at p·d > 4096).

KP_SHAPES = [  # N, L, C, d, p
    (3, 17, 24, 63, 4),    # 16 locations per chunk: 4 chunks, odd d
    (5, 13, 33, 129, 2),   # 15 locations per chunk
    (4, 1, 16, 64, 3),     # one location per image
    (1, 3, 40, 1100, 4),   # one location per chunk
    (2, 5, 8, 2, 2),       # the smallest sketch
    (2, 11, 12, 16, 14),   # order 14: 7 location groups per product block in float64, 8 in float32
    (2, 9, 0, 32, 3),      # no channels: zero features, an empty gradient
    (0, 4, 8, 16, 3),      # no images
]


def kernel_pooling_problem(n, locations, channels, dim, order, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, locations, channels, generator=g, dtype=torch.float64).to(dtype)
    if channels:
        hash_index, hash_sign = fo.draw_hashes(channels, dim, order, seed=seed)
    else:  # draw_hashes wants channels; the op takes none
        hash_index, hash_sign = torch.empty(order, 0, dtype=torch.int64), torch.empty(order, 0)
    alpha = torch.rand(order + 1, generator=g, dtype=torch.float64).to(dtype)
    grad = torch.randn(n, 1 + channels + (order - 1) * dim, generator=g,
                       dtype=torch.float64).to(dtype)
    return x, hash_index, hash_sign.to(dtype), alpha, grad


def kernel_pooling_forward_backward(x, hash_index, hash_sign, alpha, dim, grad):
    x = x.detach().requires_grad_()
    y = fo.kernel_pooling(x, hash_index, hash_sign, alpha, dim)
    (grad_x,) = torch.autograd.grad(y, x, grad)
    return y.detach(), grad_x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", KP_SHAPES)
def test_kernel_pooling(emulation, shape, dtype):
    n, locations, channels, dim, order = shape
    x, h, s, alpha, grad = kernel_pooling_problem(n, locations, channels, dim, order, dtype)
    cpu, cuda = run_three_ways(
        emulation, lambda: kernel_pooling_forward_backward(x, h, s, alpha, dim, grad), n > 0)
    assert_all(cpu, cuda)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("variant", ["module NCHW", "module NCHW normalised", "order 1",
                                     "compact bilinear normalised", "strided x"])
def test_kernel_pooling_reads_any_layout_and_dtype_and_finishes_natively(emulation, variant,
                                                                          dtype):
    """The CUDA path reads x in its dtype through its strides, writes dx in x's layout, and
    computes the mean block, alpha (and its gradient) and the normalisation in its kernels."""
    g = torch.Generator().manual_seed(5)
    maps = torch.randn(3, 12, 5, 7, generator=g).to(dtype)  # 35 locations: chunks of 12 at p=3
    if variant.startswith("module"):
        module = fo.nn.KernelPooling(12, 32, order=3, sqrt_normalize="normalised" in variant)
        module.alpha.data = torch.rand(4, generator=g) + 0.5
        inputs, run = (maps,), module
    elif variant == "order 1":
        module = fo.nn.KernelPooling(12, 32, order=1, sqrt_normalize=True)
        inputs, run = (maps,), module
    elif variant == "compact bilinear normalised":
        module = fo.nn.CompactBilinearPooling(12, 40)
        inputs, run = (maps,), module
    else:
        x = maps.flatten(2)[:, :, ::2]  # (N, C, 18) with strides (420, 35, 2)
        h, s = fo.draw_hashes(12, 24, 3, seed=1)
        alpha = (torch.rand(4, generator=g) + 0.5).requires_grad_()
        inputs, run = (x,), lambda t: fo.kernel_pooling(t.transpose(1, 2), h, s, alpha, 24)
    parameters = [p for p in getattr(run, "parameters", lambda: [])()] + (
        [alpha] if variant == "strided x" else [])

    def forward_backward():
        leaves = [t.detach().requires_grad_() for t in inputs]
        out = run(*leaves)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
        grads = torch.autograd.grad(out, leaves + parameters, upstream.to(out.dtype))
        return (out.detach(), *grads)

    cpu, cuda = run_three_ways(emulation, forward_backward)
    assert all(a.stride() == b.stride() for a, b in zip(cpu[1:2], cuda[1:2])), "dx's layout"
    # The signed square root's slope, up to 5e5 near 0, magnifies the rounding of sketch values
    # near 0 in dx; the normalisation's backward sums cancelling terms, and alpha's gradient is
    # nearly 0 under it (the output does not change with a common scale): it is compared
    # absolutely.
    assert_all(cpu[:2], cuda[:2], {torch.float64: 1e-10, torch.float32: 1e-2,
                                   torch.float16: 2e-2, torch.bfloat16: 1e-1})
    for a, b in zip(cpu[2:], cuda[2:]):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-3)


def test_kernel_pooling_order_beyond_the_shared_memory_is_refused(emulation):
    x, h, s, alpha, _ = kernel_pooling_problem(1, 2, 4, 2, 98, torch.float64)
    with emulated_cuda(emulation, launches=False), pytest.raises(
            RuntimeError, match="order p must be at most 97 in Double, got 98"):
        fo.kernel_pooling(x, h, s, alpha, 2)


@settings(max_examples=15)
@given(n=st.integers(1, 4), locations=st.integers(1, 40), channels=st.integers(1, 40),
       dim=st.integers(2, 300), order=st.integers(2, 5), seed=st.integers(0, 2**31))
def test_kernel_pooling_random_shapes(emulation, n, locations, channels, dim, order, seed):
    x, h, s, alpha, grad = kernel_pooling_problem(n, locations, channels, dim, order,
                                                  torch.float64, seed)
    cpu = kernel_pooling_forward_backward(x, h, s, alpha, dim, grad)
    with emulated_cuda(emulation):
        cuda = kernel_pooling_forward_backward(x, h, s, alpha, dim, grad)
    assert_all(cpu, cuda)


def two_input_forward_backward(x, y, hash_index, hash_sign, dim, grad):
    x, y = x.detach().requires_grad_(), y.detach().requires_grad_()
    pooled = fo.compact_bilinear_pooling(x, hash_index, hash_sign, dim, y=y)
    return (pooled.detach(), *torch.autograd.grad(pooled, (x, y), grad))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, locations, channels, y_channels, dim",
                         [(2, 37, 24, 9, 130), (3, 90, 5, 40, 64), (1, 1, 1, 1, 2)])
def test_two_input_compact_bilinear_pooling(emulation, n, locations, channels, y_channels, dim,
                                            dtype):
    """Hashes with sign-0 entries: the CUDA gather's bin lookup leaves those channels out."""
    g = torch.Generator().manual_seed(n)
    x, y, grad = (torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
                  for shape in ((n, locations, channels), (n, locations, y_channels), (n, dim)))
    h, s = fo.draw_two_input_hashes(channels, y_channels, dim, seed=n)
    cpu, cuda = run_three_ways(
        emulation, lambda: two_input_forward_backward(x, y, h, s.to(dtype), dim, grad))
    assert_all(cpu, cuda)


def test_a_channel_left_out_of_every_sketch_is_never_read(emulation):
    x, h, s, alpha, grad = kernel_pooling_problem(2, 9, 6, 16, 3, torch.float64)
    s[:, 2] = 0
    x[:, :, 2] = float("nan")  # read by the order-1 block only, which is not native
    grad[:, :7] = 0

    def sketched_blocks_and_grad():
        pooled, grad_x = kernel_pooling_forward_backward(x, h, s, alpha, 16, grad)
        return pooled[:, 7:], grad_x

    cpu, cuda = run_three_ways(emulation, sketched_blocks_and_grad)
    assert all(torch.isfinite(t).all() for t in cuda)
    assert_all(cpu, cuda)


# ---------------------------------------------------------------------------------------------
# Triplet: one anchor per CUDA thread, 128 per block, so B >= 300 is several blocks.

RULES = ["violating", "semihard", "hardest", "all"]


def triplet_batch(b, num_classes, d, num_extra, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, d, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(num_classes, (b,), generator=g)
    extra = torch.randn(num_extra, d, generator=g, dtype=torch.float64).to(dtype)
    extra_labels = torch.randint(num_classes, (num_extra,), generator=g)
    return emb, labels, extra, extra_labels


def triplet_loss_and_grads(emb, labels, extra, extra_labels, **kwargs):
    emb, extra = emb.detach().requires_grad_(), extra.detach().requires_grad_()
    loss = fo.triplet_margin_loss(emb, labels, extra_negatives=extra,
                                  extra_negative_labels=extra_labels, **kwargs)
    return (loss.detach(), *torch.autograd.grad(loss, (emb, extra)))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("b, fraction, reduction, squared, normalize, dtype", [
    (300, 1.0, "mean_nonzero", True, True, torch.float64),
    (517, 0.6, "mean", False, True, torch.float32),
    (300, 0.3, "sum", True, False, torch.float32),
])
def test_triplet_loss(emulation, rule, b, fraction, reduction, squared, normalize, dtype):
    batch = triplet_batch(b, 12, 8, 7, dtype)
    cpu, cuda = run_three_ways(emulation, lambda: triplet_loss_and_grads(
        *batch, negatives=rule, positive_fraction=fraction, reduction=reduction,
        squared=squared, normalize=normalize, margin=0.3))
    # The devices compute distances differently (CPU: a fixed-order kernel; CUDA: one GEMM), and
    # the gradient of a plain (not squared) distance divides by it: float32 agrees to 1e-3.
    assert_all(cpu, cuda, tolerance=SCALED_TOLERANCE | {torch.float32: 1e-3})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("autocast", [False, True])
def test_triplet_loss_reads_half_embeddings(emulation, dtype, autocast):
    """Half rows read as they are, computed in float32; under autocast the finish kernel
    writes a float32 loss. The devices agree to the half type's rounding."""
    batch = triplet_batch(40, 5, 8, 3, dtype)
    with torch.autocast("cpu", dtype=dtype, enabled=autocast):
        cpu, cuda = run_three_ways(emulation, lambda: triplet_loss_and_grads(
            *batch, positive_fraction=0.6, margin=0.3))
    assert cpu[0].dtype == cuda[0].dtype == (torch.float32 if autocast else dtype)
    for a, b in zip(cpu, cuda):
        assert a.dtype == b.dtype
        assert_relative_close(b.float(), a.float(), 1e-2)


@pytest.mark.parametrize("squared", [True, False])
def test_triplet_loss_with_more_extras_than_anchors(emulation, squared):
    """The extras' rows of the gradient's matrix are their own block (E x B, not E x E)."""
    batch = triplet_batch(20, 6, 3, 50, torch.float64)
    cpu, cuda = run_three_ways(emulation, lambda: triplet_loss_and_grads(
        *batch, negatives="all", squared=squared, margin=0.5))
    assert_all(cpu, cuda)
    assert cpu[2].abs().sum() > 0  # the extras get gradients
    # No anchor: a zero loss and zero gradients (the finish kernel still writes the extras' rows).
    empty = triplet_batch(0, 6, 3, 5, torch.float64)
    cpu, cuda = run_three_ways(emulation, lambda: triplet_loss_and_grads(*empty, squared=squared))
    assert_all(cpu, cuda)
    assert not cuda[2].any()


@pytest.mark.parametrize("rule", RULES)
def test_triplet_mining_all_and_sampled(emulation, rule):
    emb, labels, extra, extra_labels = triplet_batch(300, 9, 6, 11)

    def mine():
        everything = fo.mine_triplets(emb, labels, negatives=rule, positive_fraction=0.6,
                                      extra_negatives=extra, extra_negative_labels=extra_labels)
        sampled = fo.mine_triplets(emb, labels, negatives=rule, max_triplets=500,
                                   generator=torch.Generator().manual_seed(3))
        return (*everything, *sampled)

    cpu, cuda = run_three_ways(emulation, mine)
    assert_all(cpu, cuda)
    assert cpu[0].numel() > 0


@pytest.mark.parametrize("per_anchor, chunk_size, size", [
    (None, None, 400), (3, 50, 400), (1, 7, 160),  # 1-7 at 400 took 77 s: 58 chunks
    (2, 9, 60),  # what make sanitize runs: per-anchor draws over several chunks, small
])
def test_bank_mining(emulation, per_anchor, chunk_size, size):
    """float64: the devices sum the distances in different orders, and of float32's 2.3M mined
    triplets at size 400 one lies within rounding of the margin."""
    bank, bank_labels, extra, extra_labels = triplet_batch(size, 15, 8, 5, torch.float64, seed=1)
    query, query_labels = bank[:size * 3 // 8], bank_labels[:size * 3 // 8]

    def mine():
        return (*fo.mine_from_bank(bank, bank_labels, bank, bank_labels, per_anchor=per_anchor,
                                   chunk_size=chunk_size,
                                   generator=torch.Generator().manual_seed(0)),
                *fo.mine_from_bank(query, query_labels, bank, bank_labels, per_anchor=per_anchor,
                                   negatives="semihard", extra_negatives=extra,
                                   extra_negative_labels=extra_labels, chunk_size=chunk_size,
                                   generator=torch.Generator().manual_seed(0)))

    cpu, cuda = run_three_ways(emulation, mine)
    assert_all(cpu, cuda)


@pytest.mark.parametrize("rule", RULES)
def test_triplet_ties_and_many_positives(emulation, rule):
    """Integer embeddings on a small grid: exact distances with many ties (the order by
    (distance, index) decides), and about 60 positives per anchor, so the warp ranks and scans
    them over several 32-lane tiles."""
    g = torch.Generator().manual_seed(5)
    emb = torch.randint(-1, 2, (190, 3), generator=g).double()
    labels = torch.randint(3, (190,), generator=g)
    none = emb[:0]
    options = dict(negatives=rule, squared=True, normalize=False, margin=1.5,
                   positive_fraction=0.7)

    def run():
        return (*triplet_loss_and_grads(emb, labels, none, labels[:0], **options),
                *fo.mine_triplets(emb, labels, **options),
                *fo.mine_triplets(emb, labels, max_triplets=3000,
                                  generator=torch.Generator().manual_seed(1), **options))

    cpu, cuda = run_three_ways(emulation, run)
    assert_all(cpu, cuda)
    assert cpu[3].numel() > 0


def test_triplet_refuses_overflowed_distances_on_both_devices(emulation):
    """Without normalisation, float32 squared distances of finite embeddings can overflow to
    +inf (or NaN, from inf - inf). Both devices refuse them with the same error. (The CUDA
    launcher once told positives from non-positives by sorting non-positives to +inf, so a
    positive at +inf let the anchor become its own positive; positives are now told by
    label, as on the CPU.)"""
    big = 3e19
    emb = torch.tensor([[big, 0.0], [-big, 0.0], [0.0, 1.0], [0.0, 2.0], [big, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    for run in (lambda: fo.mine_triplets(emb, labels, negatives="all", normalize=False),
                lambda: fo.triplet_margin_loss(emb, labels, normalize=False)):
        # CUDA: the first pass checks the distances it forms (a device-side assertion).
        for context in (contextlib.nullcontext(), emulated_cuda(emulation)):
            with context, pytest.raises((RuntimeError, ValueError),
                                        match="squared distances must fit in their dtype"):
                run()


# ---------------------------------------------------------------------------------------------
# Every registered native op (tests/registry.py)

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("key", sorted(native_ops()))
def test_registered_op(emulation, key, dtype):
    """Every registered native op, outputs and gradients, on its example (37 samples)."""
    op = native_ops()[key]
    example = op.example(37, dtype, "cpu")
    cpu, cuda = run_three_ways(emulation, lambda: sum(results(op, example), []))
    assert_all(cpu, cuda)


# ---------------------------------------------------------------------------------------------
# Class-balanced loss: a warp per row below 512 classes (8 rows per block), a block per row
# from 512 on.

CB_TYPES = [("softmax", 0.0), ("sigmoid", 0.0), ("focal", 0.5), ("focal", 2.0)]


def cb_problem(n, c, target_kind, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, c, generator=g, dtype=torch.float64)).to(dtype)
    counts = torch.randint(1, 500, (c,), generator=g)
    if target_kind == "index":
        target = torch.randint(c, (n,), generator=g)
        target[::7] = -100
    elif target_kind == "multi_hot":
        target = (torch.rand(n, c, generator=g) < 0.1).to(dtype)
    else:
        target = torch.rand(n, c, generator=g, dtype=torch.float64).to(dtype)
    return logits, target, counts


def cb_loss_and_grad(logits, target, counts, **kwargs):
    logits = logits.detach().requires_grad_()
    loss = fo.class_balanced_loss(logits, target, counts, **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    return loss.detach(), grad


@pytest.mark.parametrize("loss_type, gamma, target_kind", [
    (loss_type, gamma, target_kind) for loss_type, gamma in CB_TYPES
    for target_kind in (["index"] if loss_type == "softmax" else ["index", "multi_hot", "soft"])])
@pytest.mark.parametrize("n, c", [(37, 10), (100, 300), (9, 512), (6, 2049)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_class_balanced_loss(emulation, loss_type, gamma, n, c, target_kind, reduction):
    for dtype in (torch.float32, torch.float64):
        logits, target, counts = cb_problem(n, c, target_kind, dtype)
        cpu, cuda = run_three_ways(emulation, lambda: cb_loss_and_grad(
            logits, target, counts, beta=0.999, gamma=gamma, loss_type=loss_type,
            reduction=reduction))
        assert_all(cpu, cuda)


@pytest.mark.parametrize("name, kwargs, soft", [
    ("logit_adjusted", {}, False), ("logit_adjusted", {}, True),
    ("balanced_softmax", dict(reduction="none"), False),
    ("ldam", {}, False),
    ("softmax_focal", dict(gamma=0.5), False), ("softmax_focal", dict(gamma=2.0), True)])
@pytest.mark.parametrize("n, c", [(37, 10), (9, 512), (6, 2049)])
def test_long_tail_softmax_family(emulation, name, kwargs, soft, n, c):
    """Offsets, margins, scale, softmax focal and soft targets in the generalised softmax."""
    for dtype in (torch.float32, torch.float64):
        logits, target, counts, weights = long_tail_problem(n, c, 2, soft=soft, dtype=dtype)
        cpu, cuda = run_three_ways(emulation, lambda: long_tail_loss_and_grad(
            name, 0, logits, target, counts, class_weights=weights, **kwargs))
        assert_all(cpu, cuda)


@pytest.mark.parametrize("name, scale, c", [
    *[(name, scale, 10) for scale in SCALES for name in
      ("ldam_loss", "logit_adjusted_loss", "softmax_focal_loss", "class_balanced_focal")],
    ("ldam_loss", 30.0, 520), ("ldam_loss", 64.0, 520)])
def test_confident_rows_are_exact_and_nonnegative(emulation, name, scale, c):
    """test_fuzz's property on the CUDA kernels: a warp per row (c = 10), a block (c = 520; the
    softmax members share that path, LDAM's margin and scale included)."""
    with emulated_cuda(emulation):
        assert_confident_rows_exact(*CONFIDENT_FAMILY[name], name, scale, c)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name, soft", [("logit_adjusted", False), ("ldam", False),
                                        ("softmax_focal", True)])
@pytest.mark.parametrize("c", [10, 600])
def test_class_loss_reads_half_logits(emulation, name, soft, dtype, c):
    """Half logits read as they are, computed in float32: the devices agree to the half
    type's rounding of the float32 results."""
    logits, target, counts, weights = long_tail_problem(9, c, 4, soft=soft)
    cpu, cuda = run_three_ways(emulation, lambda: long_tail_loss_and_grad(
        name, 0, logits.to(dtype), target, counts, class_weights=weights))
    for a, b in zip(cpu, cuda):
        assert a.dtype == b.dtype == dtype
        assert_relative_close(b.float(), a.float(), 1e-2)


@pytest.mark.parametrize("case, match", [
    ("label", "target class indices must be in"), ("weights", "class_weights must be finite"),
    ("offsets", "logit_offsets must be finite"), ("margins", "target_margins must be finite"),
    ("soft", "summing to 1")])
def test_class_loss_values_are_checked_by_device_assertions(emulation, case, match):
    """On CUDA the values the kernels read are checked where they read them (no host sync,
    no extra launch): a device-side assertion with the check's message."""
    logits, target, counts, weights = long_tail_problem(6, 5, 1, ignore=False)
    target = torch.ones_like(target)  # class 1's weight and margin are read (CUDA checks those)
    kwargs = dict(class_weights=weights, reduction="mean", ignore_index=-100)
    if case == "label":
        target = target.clone()
        target[2] = 7
    elif case == "weights":
        kwargs["class_weights"] = torch.tensor([1.0, float("nan"), 1.0, 1.0, 1.0],
                                               dtype=torch.float64)
    elif case == "soft":
        target = torch.full((6, 5), 0.5, dtype=torch.float64)
    offsets = torch.tensor([0.0, float("inf"), 0.0, 0.0, 0.0], dtype=torch.float64)
    margins = torch.tensor([0.0, -1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    with emulated_cuda(emulation), pytest.raises(RuntimeError, match=match):
        fo.ops.class_loss.fused_class_loss(
            logits, target, logit_offsets=offsets if case == "offsets" else None,
            target_margins=margins if case == "margins" else None, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("rows, d", [(3, 7), (2, 600)])
def test_sqrt_normalize(emulation, dtype, rows, d):
    """The heads' post-processing, a block per row, forward and backward (a zero row
    included, whose norm is clamped)."""
    from finegrained_ops.ops.kernel_pooling import sqrt_normalize
    g = torch.Generator().manual_seed(rows)
    y = torch.randn(rows, d, generator=g, dtype=torch.float64).to(dtype)
    y[-1] = 0
    upstream = torch.randn(rows, d, generator=g, dtype=torch.float64).to(dtype)

    def run():
        leaf = y.clone().requires_grad_()
        out = sqrt_normalize(leaf)
        out.backward(upstream)
        return out.detach(), leaf.grad

    cpu, cuda = run_three_ways(emulation, run)
    tolerance = {**SCALED_TOLERANCE, torch.bfloat16: 1e-2}
    for a, b in zip(cpu, cuda):
        assert a.dtype == b.dtype == dtype
        assert_relative_close(b.double(), a.double(), tolerance[dtype])
