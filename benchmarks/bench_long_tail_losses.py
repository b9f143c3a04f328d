"""The long-tail softmax losses, forward + backward: the native fused loss vs the reference vs
the composition users write (what the official repositories do) and, in the full suite, that
composition under torch.compile.

    python -m benchmarks --ops long_tail_losses [--device cpu|cuda] [--quick]

Members: logit adjustment (tau = 1), Balanced Softmax, LDAM (the official LDAMLoss.forward
with class weights, as under DRW) and the softmax focal loss (gamma = 2).
"""
import functools

import torch
import torch.nn.functional as F

from .class_loss_cases import agreement_inputs, backward_step, inputs, run_cases, work
from .report import ratio_row

SHAPES = [(512, 8142), (4096, 1000)]  # iNaturalist-2018 classes; ImageNet classes, large batch
QUICK_SHAPES = [(128, 1000)]
MEMBERS = ["logit_adjusted", "balanced_softmax", "ldam", "softmax_focal"]
SCALING_C = [100, 1000, 8142, 32768]  # at N=256, logit adjustment
GAMMA = 2.0


def unfused(member, logits, labels, counts, weights):
    """The official compositions: CE of shifted logits; LDAM's x - m_y onehot then weighted CE;
    the focal term gathered from log_softmax."""
    if member == "logit_adjusted":
        prior = counts / counts.sum()
        return F.cross_entropy(logits + prior.log(), labels)
    if member == "balanced_softmax":
        return F.cross_entropy(logits + counts.log(), labels)
    if member == "ldam":
        margins = counts.pow(-0.25)
        margins = margins * (0.5 / margins.max())
        one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return F.cross_entropy(30.0 * (logits - one_hot * margins), labels, weight=weights)
    log_pt = F.log_softmax(logits, dim=1).gather(1, labels[:, None])[:, 0]
    return (weights[labels] * (1 - log_pt.exp()).pow(GAMMA) * -log_pt).mean()


def functional(losses, member, logits, labels, counts, weights):
    """The member from `losses`: finegrained_ops (native) or its reference module, which
    share the functions' names and signatures."""
    if member == "logit_adjusted":
        return losses.logit_adjusted_loss(logits, labels, counts)
    if member == "balanced_softmax":
        return losses.balanced_softmax_loss(logits, labels, counts)
    if member == "ldam":
        return losses.ldam_loss(logits, labels, counts, class_weights=weights)
    return losses.softmax_focal_loss(logits, labels, gamma=GAMMA, class_weights=weights)


def candidates(quick):
    """The compiled composition only in the full suite: compiling costs a minute per case."""
    return ("native", "reference", "unfused") + (() if quick else ("unfused, torch.compile",))


def setup(candidate, n, c, member, device):
    import finegrained_ops as fo

    logits, labels, counts = inputs(n, c, device)
    if candidate == "native":
        # the module form: offsets, margins and weights computed once, as a training loop has
        module = {"logit_adjusted": lambda: fo.nn.LogitAdjustedLoss(counts),
                  "balanced_softmax": lambda: fo.nn.BalancedSoftmaxLoss(counts),
                  "ldam": lambda: fo.nn.LDAMLoss(counts),
                  "softmax_focal": lambda: fo.nn.SoftmaxFocalLoss(gamma=GAMMA)}[member]()
        if member in ("ldam", "softmax_focal"):
            module.class_weights = fo.class_balanced_weights(counts, 0.9999)
        loss = lambda z, y: module(z, y)  # noqa: E731
    else:
        from finegrained_ops.reference import long_tail_losses
        fn = {"reference": functools.partial(functional, long_tail_losses), "unfused": unfused,
              "unfused, torch.compile": torch.compile(unfused)}[candidate]
        weights = fo.class_balanced_weights(counts, 0.9999).float().to(device)
        loss = functools.partial(fn, member, counts=counts.float(), weights=weights)
    return backward_step(loss, logits, labels)


def check_agreement(device):
    import finegrained_ops as fo

    z, y, counts = agreement_inputs(device)
    counts = counts.double()
    w = fo.class_balanced_weights(counts, 0.9999).to(device)
    for member in MEMBERS:
        a, b = functional(fo, member, z, y, counts, w), unfused(member, z, y, counts, w)
        assert torch.allclose(a, b, rtol=1e-10), (member, a.item(), b.item())


def _cases(cases, device, repeats, names):
    return run_cases(setup, cases, device, repeats, names)


def comparison(device, quick=False, repeats=10):
    cases = [(n, c, m) for n, c in (QUICK_SHAPES if quick else SHAPES) for m in MEMBERS]
    results = _cases(cases, device, repeats, candidates(quick))
    return [ratio_row({"case": f"{m} N x C={n}x{c}", "impl": cand}, r, work(n, c))
            for n, c, m in cases for cand, r in results[(n, c, m)].items()]


def scaling(device, quick=False, repeats=5):
    """{sweep: {impl: [(C, median_ms, peak_mib)]}} for logit adjustment at N=256."""
    classes = SCALING_C[:3 if quick else 4]
    names = ("native", "unfused")
    results = _cases([(256, c, "logit_adjusted") for c in classes], device, repeats, names)
    return {"classes C": {cand: [(c, results[(256, c, "logit_adjusted")][cand]["median_ms"],
                                  results[(256, c, "logit_adjusted")][cand]["peak_mib"])
                                 for c in classes] for cand in names}}
