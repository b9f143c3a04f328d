"""What the class-loss benchmarks (bench_class_balanced_loss, bench_long_tail_losses) share:
their inputs, the timed forward + backward step, the memory floor and the case runner."""
import functools

import torch

from .harness import compare


def inputs(n, c, device):
    """logits (n, c) float32 requiring grad (scaled by 3: confident, long-tailed scores),
    labels (n,) and counts (c,) int64 in [1, 1000); seed 0."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(n, c, generator=g) * 3).to(device).requires_grad_()
    labels = torch.randint(0, c, (n,), generator=g).to(device)
    counts = torch.randint(1, 1000, (c,), generator=g).to(device)
    return logits, labels, counts


def agreement_inputs(device):
    """float64 logits (64, 1000), labels and counts (seed 1) for check_agreement."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(64, 1000, generator=g, dtype=torch.float64).to(device)
    y = torch.randint(0, 1000, (64,), generator=g).to(device)
    counts = torch.randint(1, 1000, (1000,), generator=g).to(device)
    return z, y, counts


def backward_step(loss, logits, labels):
    """(step, args): step(z, y) runs loss(z, y) forward and backward."""
    def step(z, y):
        z.grad = None
        loss(z, y).backward()

    return step, (logits, labels)


def work(n, c):
    """(bytes, FLOPs) floor of forward + backward: the losses are memory-bound, so one read of
    the float32 logits and the int64 labels and one write of the gradient."""
    return 4 * 2 * n * c + 8 * n, 0


def run_cases(setup, cases, device, repeats, names):
    """{case: {candidate: result}} of setup(candidate, *case), in one child process."""
    return compare({case: {cand: functools.partial(setup, cand, *case) for cand in names}
                    for case in cases}, device, repeats)
