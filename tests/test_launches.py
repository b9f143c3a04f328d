"""Kernel launches per forward + backward step on the CUDA path, counted in the CUDA emulation
(benchmarks/launch_count.py: our kernels plus the ATen calls that launch a CUDA kernel, the
autograd engine's included), against each op's budget (docs/semantics.md §1). PyTorch's own
call is counted the same way beside it, so the numbers compare. Counts are deterministic:
they belong in the tests, times do not."""
import pytest
import torch
import torch.nn.functional as F

import finegrained_ops as fo
from benchmarks.launch_count import count

from .cuda_emulation import build
from .test_cuda_emulation import emulated_cuda

pytestmark = pytest.mark.skipif(
    not build.compiler_available(),
    reason="CUDA emulation NOT RUN: no C++ compiler (set CXX) to build tests/cuda_emulation")

CLASS_LOSS_BUDGET = 4


@pytest.fixture(scope="module")
def emulation():
    return build.load()


def step(loss_fn, leaf):
    """One forward + backward; a per-sample loss gets its gradient given (as a training loop's
    weighted sum would pass it), a 0-dim one the engine's ones."""
    def run():
        leaf.grad = None
        loss = loss_fn()
        loss.backward(None if loss.dim() == 0 else torch.ones_like(loss))
    return run


def emulated_count(emulation, fn):
    """(launches, host reads, what launched) of fn() on the emulated CUDA path, after a warm
    call (first calls fill caches: the per-class copies of a module, plans)."""
    with emulated_cuda(emulation, launches=False):
        fn()
        return count(fn, emulation)


def class_problem(n=64, c=100, soft=False):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c, generator=g).requires_grad_()
    target = (torch.softmax(torch.randn(n, c, generator=g), 1) if soft
              else torch.randint(c, (n,), generator=g))
    counts = torch.randint(1, 100, (c,), generator=g)
    return logits, target, counts


CLASS_MODULES = {
    "class-balanced softmax": lambda counts: fo.nn.ClassBalancedLoss(counts, loss_type="softmax"),
    "class-balanced sigmoid": lambda counts: fo.nn.ClassBalancedLoss(counts, loss_type="sigmoid"),
    "class-balanced focal": lambda counts: fo.nn.ClassBalancedLoss(counts, loss_type="focal"),
    "logit adjusted": lambda counts: fo.nn.LogitAdjustedLoss(counts),
    "balanced softmax": lambda counts: fo.nn.BalancedSoftmaxLoss(counts),
    "LDAM, deferred weights": lambda counts: fo.nn.LDAMLoss(
        counts, class_weights=fo.class_balanced_weights(counts, 0.999)),
    "softmax focal": lambda counts: fo.nn.SoftmaxFocalLoss(gamma=2.0),
}


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", sorted(CLASS_MODULES))
def test_class_losses_launch_at_most_four_kernels_a_step(emulation, name, reduction):
    """Rows, finish, the backward's scale, and the fill of the unit grad_output (the autograd
    engine's, or the caller's ones for 'none'); F.cross_entropy(weight=) takes 6 counted the
    same way."""
    logits, target, counts = class_problem()
    module = CLASS_MODULES[name](counts)
    module.reduction = reduction
    launches, reads, what = emulated_count(
        emulation, step(lambda: module(logits, target), logits))
    assert launches <= CLASS_LOSS_BUDGET and reads == 0, what


def test_soft_targets_launch_as_few(emulation):
    logits, target, counts = class_problem(soft=True)
    module = fo.nn.LogitAdjustedLoss(counts)
    launches, reads, what = emulated_count(emulation, step(lambda: module(logits, target), logits))
    assert launches <= CLASS_LOSS_BUDGET and reads == 0, what


FUNCTIONAL_FORMS = {
    "logit adjusted": (fo.logit_adjusted_loss, fo.logit_adjustment_offsets),
    "LDAM": (fo.ldam_loss, fo.ldam_margins),
    "class-balanced focal": (fo.class_balanced_loss,
                             lambda counts: fo.class_balanced_weights(counts, 0.9999)),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONAL_FORMS))
def test_functional_forms_add_only_their_per_class_constants(emulation, name):
    """The budget is the modules': they build the per-class constants once. A function builds
    them from samples_per_class on every call (the counts' check and a few elementwise ops on
    (C,) values, 16-28 launches) and casts them to the logits' dtype (a module keeps one copy
    per dtype); the rest of its step is the module's."""
    loss, constants = FUNCTIONAL_FORMS[name]
    logits, target, counts = class_problem()
    launches, _, what = emulated_count(emulation, step(lambda: loss(logits, target, counts),
                                                       logits))
    constant_launches, _, _ = emulated_count(emulation, lambda: constants(counts))
    assert launches - constant_launches <= CLASS_LOSS_BUDGET + 1, what


def test_pytorchs_cross_entropy_counted_the_same_way():
    """The reference for the budget: counted on the CPU, whose ATen calls are CUDA's."""
    logits, target, counts = class_problem()
    weights = torch.rand(100)
    launches, reads, what = count(step(lambda: F.cross_entropy(logits, target, weight=weights),
                                       logits))
    assert (launches, reads) == (6, 0), what


TRIPLET_LOSS_BUDGET = 10
MINING_BUDGET = 6


def triplet_problem(b=64, d=32, extras=0):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(b, d, generator=g).requires_grad_()
    labels = torch.randint(8, (b,), generator=g)
    extra = dict(extra_negatives=torch.randn(extras, d, generator=g),
                 extra_negative_labels=torch.randint(8, (extras,), generator=g)) if extras else {}
    return emb, labels, extra


@pytest.mark.parametrize("extras", [0, 8])
@pytest.mark.parametrize("squared", [True, False])
def test_triplet_loss_launches_at_most_ten_kernels_a_step(emulation, squared, extras):
    """Prepare, GEMM, rows, finish, GEMM (a second one for the extras' rows), gradient
    (triplet_loss_kernels.cuh), the engine's fill of the unit grad_output, and on a GPU the
    backward's scale (skipped here: the emulation's tensors are on the CPU, where a unit scale
    is read); nothing grows with B or the number of triplets."""
    emb, labels, extra = triplet_problem(extras=extras)
    launches, reads, what = emulated_count(emulation, step(
        lambda: fo.triplet_margin_loss(emb, labels, squared=squared, **extra), emb))
    assert launches + 1 <= TRIPLET_LOSS_BUDGET and reads == 0, what


@pytest.mark.parametrize("options", [{}, {"max_triplets": 100}, {"negatives": "hardest"}])
def test_mining_launches_at_most_six_kernels_and_reads_the_count(emulation, options):
    """Prepare, GEMM, count pass, prefix sums, write pass, and (drawing max_triplets over all
    anchors on the host) the copy of the drawn ranks; one read, the number of triplets. (The
    seed is drawn from a CPU generator: its aten::random_ launches nothing on a GPU.)"""
    emb, labels, extra = triplet_problem(extras=8)
    if "max_triplets" in options:
        options = dict(options, generator=torch.Generator().manual_seed(0))
    launches, reads, what = emulated_count(emulation, lambda: fo.mine_triplets(
        emb.detach(), labels, **extra, **options))
    on_gpu = launches - what.count("aten::random_") + ("max_triplets" in options)
    assert on_gpu <= MINING_BUDGET and reads - ("max_triplets" in options) == 1, what


def test_bank_mining_launches_per_chunk(emulation):
    """Per chunk the same five launches and one read, the per-anchor draws on the device;
    per call, the bank's largest class (which sizes the scratch) and the default
    query_indices."""
    emb, labels, _ = triplet_problem()
    g = torch.Generator().manual_seed(1)
    bank, bank_labels = torch.randn(300, 32, generator=g), torch.randint(8, (300,), generator=g)

    def mine(chunk_size):
        return lambda: fo.mine_from_bank(emb.detach(), labels, bank, bank_labels, per_anchor=2,
                                         chunk_size=chunk_size,
                                         generator=torch.Generator().manual_seed(0))
    one, one_reads, _ = emulated_count(emulation, mine(64))
    four, four_reads, what = emulated_count(emulation, mine(16))
    # three more chunks, and the concatenation of the four chunks' three outputs
    assert (four - one, four_reads - one_reads) == (3 * 5 + 3, 3), what


POOLING_BUDGET = 12
POOLING_MODULES = {
    "compact bilinear": lambda: fo.nn.CompactBilinearPooling(8, 16),
    "kernel pooling p=3, learned alpha": lambda: fo.nn.KernelPooling(8, 16, order=3),
    "kernel pooling p=4, not normalised": lambda: fo.nn.KernelPooling(
        8, 16, order=4, alpha="ones", sqrt_normalize=False),
}


@pytest.mark.parametrize("name", sorted(POOLING_MODULES))
def test_pooling_launches_at_most_twelve_kernels_a_step(emulation, name):
    """Forward: sketch, rfft, products, inverse FFT, finish; backward: sketch with the rows'
    gradients, one rfft of both, products' adjoint, irfft (2 on a GPU: ATen clones its input),
    sketch adjoint; and the fill of the caller's ones (kernel_pooling_kernels.cuh). NCHW maps
    are read through their strides; nothing grows with the order."""
    module = POOLING_MODULES[name]()
    maps = torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_()

    def run():
        module.zero_grad(set_to_none=True)
        step(lambda: module(maps), maps)()
    launches, reads, what = emulated_count(emulation, run)
    assert launches <= POOLING_BUDGET and reads == 0, what
    assert sum("_fft_r2c" in w for w in what) == 2 and sum("_fft_c2c" in w for w in what) == 1
