"""Class-balanced loss, forward + backward: native fused kernel vs the in-package reference vs
the usual unfused PyTorch composition (one_hot, BCE-with-logits, exp/log1p modulator, as in
the popular PyTorch ports of the official code) and, in the full suite, that composition under
torch.compile.

    python -m benchmarks --ops class_balanced_loss [--device cpu|cuda] [--quick]

Prints the median time, how many times faster native is, and the extra peak memory; the
suite also runs scaling(): cost against the number of classes C.
"""
import functools

import torch
import torch.nn.functional as F

from .class_loss_cases import agreement_inputs, backward_step, inputs, run_cases, work
from .report import ratio_row

SHAPES = [(512, 8142), (128, 1000)]  # iNaturalist-2018 classes; ImageNet classes
QUICK_SHAPES = [(128, 1000)]
LOSS_TYPES = ["focal", "sigmoid", "softmax"]
CANDIDATES = ("native", "reference", "unfused")
COMPILED = "unfused, torch.compile"  # the full suite only: compiling costs a minute per case
SCALING_C = [100, 1000, 8142, 32768]   # at N=256, focal
BETA, GAMMA = 0.9999, 0.5


def unfused(logits, labels, weights, loss_type):
    """What users write by hand: one_hot, per-sample weights, BCE and an exp/log1p modulator."""
    c = logits.shape[1]
    one_hot = F.one_hot(labels, c).to(logits.dtype)
    alpha = (weights[None, :] * one_hot).sum(1, keepdim=True).expand(-1, c)
    if loss_type == "softmax":
        return (F.cross_entropy(logits, labels, reduction="none") * alpha[:, 0]).mean()
    loss = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
    if loss_type == "focal":
        loss = torch.exp(-GAMMA * one_hot * logits - GAMMA * torch.log1p(torch.exp(-logits))) * loss
    return (alpha * loss).sum() / one_hot.sum()


def setup(candidate, n, c, loss_type, device):
    import finegrained_ops as fo
    from finegrained_ops.reference import class_balanced_loss as reference

    logits, labels, counts = inputs(n, c, device)
    if candidate == "native":  # the module: its class weights computed once, as unfused's
        fn = fo.nn.ClassBalancedLoss(counts, beta=BETA, gamma=GAMMA, loss_type=loss_type)
    elif candidate == "reference":
        fn = functools.partial(reference, samples_per_class=counts, beta=BETA, gamma=GAMMA,
                               loss_type=loss_type)
    else:
        weights = fo.class_balanced_weights(counts, BETA).float().to(device)
        composition = torch.compile(unfused) if candidate == COMPILED else unfused
        fn = functools.partial(composition, weights=weights, loss_type=loss_type)
    return backward_step(fn, logits, labels)


def check_agreement(device):
    import finegrained_ops as fo

    z, y, counts = agreement_inputs(device)
    w = fo.class_balanced_weights(counts, BETA).to(device)
    for loss_type in LOSS_TYPES:
        a = fo.class_balanced_loss(z, y, counts, beta=BETA, gamma=GAMMA, loss_type=loss_type)
        b = unfused(z, y, w, loss_type)
        assert torch.allclose(a, b, rtol=1e-10), (loss_type, a.item(), b.item())


def _cases(cases, device, repeats, names=CANDIDATES):
    """{(N, C, loss_type): {candidate: result}}, in one child process."""
    return run_cases(setup, cases, device, repeats, names)


def comparison(device, quick=False, repeats=10):
    """Rows of the main table: native vs reference vs unfused, every loss type."""
    cases = [(n, c, t) for n, c in (QUICK_SHAPES if quick else SHAPES) for t in LOSS_TYPES]
    results = _cases(cases, device, repeats, CANDIDATES + (() if quick else (COMPILED,)))
    return [ratio_row({"case": f"{t} N x C={n}x{c}", "impl": cand}, r, work(n, c))
            for n, c, t in cases for cand, r in results[(n, c, t)].items()]


def scaling(device, quick=False, repeats=5):
    """{sweep: {impl: [(C, median_ms, peak_mib)]}} for the focal loss at N=256."""
    classes = SCALING_C[:3 if quick else 4]
    results = _cases([(256, c, "focal") for c in classes], device, repeats)
    return {"classes C": {cand: [(c, results[(256, c, "focal")][cand]["median_ms"],
                                  results[(256, c, "focal")][cand]["peak_mib"]) for c in classes]
                          for cand in CANDIDATES}}
