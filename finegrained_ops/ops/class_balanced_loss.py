"""Class-balanced softmax / sigmoid / focal loss (thesis ch. 5; docs/semantics.md §4) on the
family's fused native loss (class_loss.py)."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_number, check_tensor, check_value
from .._native import _C  # noqa: F401  (loading the extension registers the ops)
from .._typing import Counts
from .class_loss import LOSS_TYPES, REDUCTIONS, fused_class_loss


def effective_number(samples_per_class: Counts, beta: float) -> Tensor:
    """Effective number of samples E_n = (1 - beta^n) / (1 - beta) of each class (eq. 5.2).

    samples_per_class: (C,) counts (tensor or sequence). beta in [0, 1). Returns (C,) float64
    (on the counts' device when a tensor is given). beta = 0 gives 1; beta -> 1 gives n.
    """
    counts = _counts_tensor(samples_per_class).to(torch.float64)
    _check_beta(beta)
    return (1.0 - beta ** counts) / (1.0 - beta)


def class_balanced_weights(samples_per_class: Counts, beta: float) -> Tensor:
    """Class weights (1 - beta) / (1 - beta^n_c), normalised so they sum to C (eq. 5.6).

    samples_per_class: (C,) counts > 0 (tensor or sequence). Returns (C,) float64, on the
    counts' device when a tensor is given: the weights the loss applies, bit for bit.
    """
    counts = _counts_tensor(samples_per_class)
    _check_beta(beta)
    check_counts_positive(counts)
    return _class_balanced_weights(counts, float(beta))


def class_balanced_loss(logits: Tensor, target: Any, samples_per_class: Counts,
                        *, beta: float = 0.9999, gamma: float = 0.5, loss_type: str = "focal",
                        reduction: str = "mean", ignore_index: int = -100) -> Tensor:
    """Class-balanced loss: each sample's loss weighted by (1 - beta) / (1 - beta^n_y), normalised.

    Args:
        logits: (N, C) float16/bfloat16/float32/float64 (half types are computed in float32).
        target: (N,) int64 class indices, or a (N, C) target with values in [0, 1]: for
            'sigmoid'/'focal' multi-hot (or soft) labels, for 'softmax' soft labels whose rows
            sum to 1 (mixup, CutMix, label smoothing; the loss is -sum_c t_c log p_c). A (N, C)
            sample weighs sum_c t_c w_c. Targets get no gradient (their .grad stays None).
        samples_per_class: (C,) training samples of each class, all > 0 (tensor or sequence).
        beta: in [0, 1); 0 is no re-weighting, -> 1 is inverse class frequency. The default
            0.9999 is the best on every long-tailed CIFAR-10 (thesis table 5.2); the thesis
            takes 0.999 on ILSVRC 2012 and iNaturalist, and smaller values on CIFAR-100.
        gamma: focal-loss focusing parameter >= 0 (ignored unless loss_type='focal'). The
            default 0.5 is the thesis's on ILSVRC 2012 and iNaturalist (fig. 5.7).
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
    check_tensor("logits", logits, dim=2)
    counts = _counts_tensor(samples_per_class, device=logits.device)
    if counts.shape[0] != logits.shape[1]:
        raise ValueError(f"samples_per_class must have C={logits.shape[1]} entries (logits' "
                         f"classes), got {counts.shape[0]}")
    return fused_class_loss(logits, target,
                            class_weights=_class_balanced_weights(counts, float(beta)),
                            gamma=gamma if loss_type == "focal" else 0.0, loss_type=loss_type,
                            reduction=reduction, ignore_index=ignore_index)


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


# The op is defined in C++ (csrc/class_loss/class_loss_op.cpp); its fake kernel is here.
_class_balanced_weights = torch.ops.finegrained_ops.class_balanced_weights.default


@torch.library.register_fake("finegrained_ops::class_balanced_weights")
def _(samples_per_class, beta):
    return samples_per_class.new_empty(samples_per_class.shape, dtype=torch.float64)


def sigmoid_bias_init(num_classes: int) -> float:
    """Bias b = -log((1 - pi) / pi) with prior pi = 1/C for sigmoid-based losses (sec. 5.4.2).

    Starting every class at probability 1/C avoids the huge initial loss of b = 0. Returns a float.
    """
    check_int("num_classes", num_classes, 2)
    prior = 1.0 / num_classes
    return -math.log((1.0 - prior) / prior)
