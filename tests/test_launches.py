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


def test_pytorchs_cross_entropy_counted_the_same_way():
    """The reference for the budget: counted on the CPU, whose ATen calls are CUDA's."""
    logits, target, counts = class_problem()
    weights = torch.rand(100)
    launches, reads, what = count(step(lambda: F.cross_entropy(logits, target, weight=weights),
                                       logits))
    assert (launches, reads) == (6, 0), what
