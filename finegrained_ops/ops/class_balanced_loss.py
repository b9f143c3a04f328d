"""Class-balanced softmax / sigmoid / focal loss (thesis ch. 5; docs/semantics.md §4), and the
fused native loss the long-tail family (long_tail_losses.py) shares with it.

The native forward computes the loss and d(loss)/d(logits) in one fused pass and saves the
gradient; the backward only scales it by grad_output (csrc/common/precomputed_gradient.h),
reading the logits once instead of twice.
"""
import torch

from .._checks import (FLOATING, check_choice, check_number, check_tensor, check_value,
                       compute_dtype)
from .._native import _C, check_devices

LOSS_TYPES = tuple(_C.choices["class_balanced_loss.loss_type"])  # the names the native code parses
REDUCTIONS = tuple(_C.choices["class_balanced_loss.reduction"])


def effective_number(samples_per_class, beta):
    """Effective number of samples E_n = (1 - beta^n) / (1 - beta) of each class (eq. 5.2).

    samples_per_class: (C,) counts (tensor or sequence). beta in [0, 1). Returns (C,) float64
    (on the counts' device when a tensor is given). beta = 0 gives 1; beta -> 1 gives n.
    """
    counts = _counts_tensor(samples_per_class).to(torch.float64)
    _check_beta(beta)
    return (1.0 - beta ** counts) / (1.0 - beta)


def class_balanced_weights(samples_per_class, beta):
    """Class weights (1 - beta) / (1 - beta^n_c), normalised so they sum to C (eq. 5.6).

    samples_per_class: (C,) counts > 0 (tensor or sequence). Returns (C,) float64, on the
    counts' device when a tensor is given: the weights the loss applies, bit for bit.
    """
    counts = _counts_tensor(samples_per_class)
    _check_beta(beta)
    check_counts_positive(counts)
    return _class_balanced_weights(counts, float(beta))


def class_balanced_loss(logits, target, samples_per_class, beta=0.9999, gamma=0.5,
                        loss_type="focal", reduction="mean", ignore_index=-100):
    """Class-balanced loss: each sample's loss weighted by (1 - beta) / (1 - beta^n_y), normalised.

    Args:
        logits: (N, C) float16/bfloat16/float32/float64 (half types are computed in float32).
        target: (N,) int64 class indices, or a (N, C) target with values in [0, 1]: for
            'sigmoid'/'focal' multi-hot (or soft) labels, for 'softmax' soft labels whose rows
            sum to 1 (mixup, CutMix, label smoothing; the loss is -sum_c t_c log p_c). A (N, C)
            sample weighs sum_c t_c w_c. Targets get no gradient (their .grad stays None).
        samples_per_class: (C,) training samples of each class, all > 0 (tensor or sequence).
        beta: in [0, 1); 0 is no re-weighting, -> 1 is inverse class frequency.
        gamma: focal-loss focusing parameter >= 0 (ignored unless loss_type='focal').
        loss_type: 'focal' | 'sigmoid' | 'softmax'.
        reduction: 'mean' (sum / number of positive labels, N for single-label targets; the
            official normalisation, not divided by the sum of weights) | 'weighted_mean' (sum /
            the samples' weights, F.cross_entropy(weight=)'s 'mean') | 'sum' | 'none' (N,).
        ignore_index: class-index targets equal to it get zero loss and gradient and are not
            counted by 'mean'.

    Returns:
        0-dim tensor ('mean', 'sum') or (N,) ('none') in logits' dtype. A batch with no
        positive label gives 0 (not NaN) under 'mean'. Differentiable once: a second
        derivative raises.
    """
    check_hyperparameters(beta, gamma, loss_type, reduction)
    check_tensor("logits", logits, dim=2, dtypes=FLOATING)
    counts = _counts_tensor(samples_per_class, device=logits.device)
    return class_weighted_loss(logits, target, _class_balanced_weights(counts, float(beta)),
                               gamma, loss_type, reduction, ignore_index,
                               weights_name="samples_per_class")


def class_weighted_loss(logits, target, class_weights, gamma, loss_type, reduction,
                        ignore_index, weights_name="class_weights"):
    """class_balanced_loss with the class weights given: (C,) float64 or logits' dtype, as
    class_balanced_weights returns them (nn.ClassBalancedLoss keeps them computed once)."""
    return fused_class_loss(logits, target, class_weights=class_weights,
                            gamma=gamma if loss_type == "focal" else 0.0, loss_type=loss_type,
                            reduction=reduction, ignore_index=ignore_index,
                            weights_name=weights_name)


def fused_class_loss(logits, target, *, class_weights=None, logit_offsets=None,
                     target_margins=None, scale=1.0, gamma=0.0, loss_type="softmax",
                     reduction="mean", ignore_index=-100, weights_name="class_weights"):
    """The native loss every member of the family calls (docs/semantics.md §4): checks shapes,
    dtypes and devices, computes half types in float32, returns the loss in logits' dtype.

    logits (N, C); target (N,) int64 or (N, C) floating; class_weights, logit_offsets,
    target_margins (C,) float64 or logits' dtype, or None. For 'softmax', the logits entering
    the softmax are scale * (logits + logit_offsets - target_margins[y] onehot(y)) and gamma > 0
    makes it the softmax focal loss; for 'focal', gamma is the sigmoid focal exponent.
    """
    check_tensor("logits", logits, dim=2, dtypes=FLOATING)
    check_tensor("target", target)
    n, c = logits.shape
    if target.dim() == 1:
        if target.dtype != torch.int64:
            raise TypeError(f"class-index target must be int64, got {target.dtype}")
        if target.shape[0] != n:
            raise ValueError(f"target has {target.shape[0]} entries but logits has N={n} rows")
    elif target.dim() == 2:
        if target.shape != logits.shape:
            raise ValueError(f"(N, C) target shape {tuple(target.shape)} must equal logits "
                             f"shape {tuple(logits.shape)}")
        if not target.is_floating_point():
            raise TypeError(f"(N, C) target must be floating point, got {target.dtype}")
        if target_margins is not None:
            raise ValueError("margins are taken off the true class's logit: they need (N,) "
                             "class-index targets, got a (N, C) target")
    else:
        raise ValueError(f"target must be (N,) class indices or (N, C) rows, got shape "
                         f"{tuple(target.shape)}")
    per_class = {weights_name: class_weights, "logit_offsets": logit_offsets,
                 "target_margins": target_margins}
    per_class = {name: t for name, t in per_class.items() if t is not None}
    for name, t in per_class.items():
        if t.shape != (c,):
            raise ValueError(f"{name} must have C={c} entries, got shape {tuple(t.shape)}")
    check_devices(logits=logits, target=target, **per_class)

    dtype = compute_dtype(logits.dtype)
    z = logits.to(dtype)
    if target.dim() == 2:
        target = target.to(dtype)
    compute_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, _, _ = _class_balanced_loss(z, target, class_weights, logit_offsets, target_margins,
                                      float(scale), float(gamma), loss_type, reduction,
                                      int(ignore_index), compute_grad)
    return loss.to(logits.dtype)


def check_hyperparameters(beta, gamma, loss_type, reduction):
    """beta in [0, 1), finite gamma >= 0, known loss_type and reduction, or a ValueError."""
    check_choice("loss_type", loss_type, LOSS_TYPES)
    check_choice("reduction", reduction, REDUCTIONS)
    _check_beta(beta)
    check_number("gamma", gamma, low=0)


def check_counts_positive(counts):
    """Every class needs a sample, a finite number of them (a class with n = 0 has no effective
    number; NaN passed `counts <= 0`). A device-side assertion on CUDA (no host sync)."""
    check_value(((counts > 0) & torch.isfinite(counts)).all(),
                "samples_per_class must be finite and > 0 for every class (a class with no "
                "samples has no effective number)"
                + (f", got {counts.tolist()}" if counts.device.type == "cpu"
                   and not torch.compiler.is_compiling() else ""))


def _check_beta(beta):
    check_number("beta", beta, low=0, high=1, high_open=True)


def _counts_tensor(samples_per_class, device=None):
    """(C,) counts, C >= 1: as given if a tensor of integers or reals, else float64 on
    `device`. Booleans and complex numbers are not counts."""
    given_tensor = isinstance(samples_per_class, torch.Tensor)
    counts = torch.as_tensor(samples_per_class)
    if counts.dtype == torch.bool or counts.is_complex():
        raise TypeError(f"samples_per_class must hold numbers of samples, got {counts.dtype}")
    if not given_tensor:
        counts = counts.to(device=device, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"samples_per_class must be 1-D (C,) with C >= 1, got shape "
                         f"{tuple(counts.shape)}")
    return counts


# The ops are defined in C++ with their device kernels and autograd
# (csrc/class_balanced_loss/class_balanced_loss_op.cpp); their fake kernels are here.
_class_balanced_weights = torch.ops.finegrained_ops.class_balanced_weights.default
_class_balanced_loss = torch.ops.finegrained_ops.class_balanced_loss.default


@torch.library.register_fake("finegrained_ops::class_balanced_weights")
def _(samples_per_class, beta):
    return samples_per_class.new_empty(samples_per_class.shape, dtype=torch.float64)


@torch.library.register_fake("finegrained_ops::class_balanced_loss")
def _(logits, target, class_weights, logit_offsets, target_margins, scale, gamma, loss_type,
      reduction, ignore_index, compute_grad):
    n = logits.shape[0]
    loss = logits.new_empty((n,) if reduction == "none" else ())
    grad = torch.empty_like(logits) if compute_grad else logits.new_empty((0,))
    return loss, grad, logits.new_empty(())
