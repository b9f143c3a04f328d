"""The long-tail softmax losses on the fused native loss (docs/semantics.md §4.2): logit
adjustment and its post-hoc rule (Menon et al., ICLR'21), Balanced Softmax (Ren et al.,
NeurIPS'20), LDAM (Cao et al., NeurIPS'19) and the softmax focal loss. Each is the native
softmax loss with per-class logit offsets, a true-class margin, a scale or a focal exponent;
one pass computes the loss and its gradient, as for the class-balanced loss.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .._checks import FLOATING, check_choice, check_number, check_tensor
from .._typing import Counts, DeviceLike
from .class_balanced_loss import _counts_tensor, check_counts_positive
from .class_loss import REDUCTIONS, fused_class_loss


def class_counts(samples_per_class: Counts, device: DeviceLike = None) -> Tensor:
    """(C,) float64 counts, all finite and > 0 (a tensor keeps its device, a sequence goes to
    `device`); checked without a host sync on CUDA and under torch.compile."""
    counts = _counts_tensor(samples_per_class).to(torch.float64)
    check_counts_positive(counts)
    return counts if isinstance(samples_per_class, torch.Tensor) else counts.to(device)


def logit_adjustment_offsets(samples_per_class: Counts, *, tau: float = 1.0,
                             device: DeviceLike = None) -> Tensor:
    """(C,) float64 offsets tau * log(pi_c), pi_c = n_c / sum n: what logit adjustment adds to
    the logits in the loss and subtracts from them after training. tau >= 0. Device as
    class_counts."""
    check_number("tau", tau, low=0)
    counts = class_counts(samples_per_class, device)
    return tau * (counts / counts.sum()).log()


def logit_adjust(logits: Tensor, samples_per_class: Counts, *, tau: float = 1.0) -> Tensor:
    """Post-hoc logit adjustment (Menon et al., eq. 9): logits - tau * log(pi).

    logits (N, C) of a model trained with plain cross-entropy; argmax of the result is the
    balanced-error prediction. Returns (N, C) in logits' dtype. Not a native op: one
    broadcast subtraction.
    """
    check_tensor("logits", logits, dim=2, dtypes=FLOATING)
    offsets = logit_adjustment_offsets(samples_per_class, tau=tau, device=logits.device)
    return logits - offsets.to(logits.dtype)


def logit_adjusted_loss(logits: Tensor, target: Any, samples_per_class: Counts, *,
                        tau: float = 1.0, class_weights: Optional[Counts] = None,
                        reduction: str = "mean", ignore_index: int = -100) -> Tensor:
    """Logit-adjusted cross-entropy (Menon et al., eq. 10): CE(logits + tau log(pi), target).

    Args:
        logits: (N, C) float16/bfloat16/float32/float64 (half types computed in float32).
        target: (N,) int64 class indices, or (N, C) soft targets in [0, 1] whose rows sum to 1
            (mixup, CutMix, label smoothing): -sum_c t_c log p_c.
        samples_per_class: (C,) training samples of each class, all > 0.
        tau: >= 0; 1 is the paper's choice, 0 plain cross-entropy.
        class_weights: (C,) float64 or logits' dtype, or None: a sample weighs w_y
            (sum_c t_c w_c for a soft target); train.DeferredReweighting sets them.
        reduction: 'mean' (sum / number of counted rows) | 'weighted_mean' (sum / their
            weights) | 'sum' | 'none' (N,).
        ignore_index: class-index targets equal to it get zero loss and gradient.

    Returns: 0-dim, or (N,) for 'none', in logits' dtype. Differentiable once.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    check_tensor("logits", logits, dim=2, dtypes=FLOATING)
    offsets = logit_adjustment_offsets(samples_per_class, tau=tau, device=logits.device)
    return fused_class_loss(logits, target, class_weights=class_weights, logit_offsets=offsets,
                            reduction=reduction, ignore_index=ignore_index)


def balanced_softmax_loss(logits: Tensor, target: Any, samples_per_class: Counts,
                          *, class_weights: Optional[Counts] = None, reduction: str = "mean",
                          ignore_index: int = -100) -> Tensor:
    """Balanced Softmax (Ren et al., eq. 4): CE(logits + log(n), target), which is logit
    adjustment with tau = 1 up to a constant per row. Arguments as logit_adjusted_loss."""
    check_choice("reduction", reduction, REDUCTIONS)
    check_tensor("logits", logits, dim=2, dtypes=FLOATING)
    offsets = class_counts(samples_per_class, logits.device).log()
    return fused_class_loss(logits, target, class_weights=class_weights, logit_offsets=offsets,
                            reduction=reduction, ignore_index=ignore_index)


def ldam_margins(samples_per_class: Counts, *, max_margin: float = 0.5,
                 device: DeviceLike = None) -> Tensor:
    """(C,) float64 LDAM margins n_c^(-1/4), scaled so the largest is max_margin (>= 0).
    Device as class_counts."""
    check_number("max_margin", max_margin, low=0)
    margins = class_counts(samples_per_class, device).pow(-0.25)
    return margins * (max_margin / margins.max())


def ldam_loss(logits: Tensor, target: Any, samples_per_class: Counts, *, max_margin: float = 0.5,
              scale: float = 30.0, class_weights: Optional[Counts] = None,
              reduction: str = "weighted_mean", ignore_index: int = -100) -> Tensor:
    """Label-distribution-aware margin loss (Cao et al., eq. 13; the official LDAMLoss):
    CE(scale * (logits - margin_y onehot(y)), y, weight=class_weights).

    Args:
        logits: (N, C), normally cosine similarities of normalised features and weights.
        target: (N,) int64 class indices (a margin needs the true class; no soft targets).
        samples_per_class: (C,) training samples of each class, all > 0.
        max_margin: the largest margin (the rarest class's), >= 0; the paper's 0.5.
        scale: s > 0 (the official 30).
        class_weights: (C,) or None; deferred re-weighting (train.DeferredReweighting) sets
            them from epoch 160 of 200 in the paper.
        reduction: 'weighted_mean' (the default: sum_i w_{y_i} l_i / sum_i w_{y_i}, PyTorch's
            weighted cross-entropy mean, as in the official code) | 'mean' (sum / counted
            rows, as every class loss) | 'sum' | 'none'.
        ignore_index: as logit_adjusted_loss.

    Returns: 0-dim, or (N,) for 'none', in logits' dtype.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    check_number("scale", scale, low=0, low_open=True)
    check_tensor("logits", logits, dim=2, dtypes=FLOATING)
    margins = ldam_margins(samples_per_class, max_margin=max_margin, device=logits.device)
    return fused_class_loss(logits, target, class_weights=class_weights, target_margins=margins,
                            scale=scale, reduction=reduction, ignore_index=ignore_index)


def softmax_focal_loss(logits: Tensor, target: Any, *, gamma: float = 2.0,
                       class_weights: Optional[Counts] = None, reduction: str = "mean",
                       ignore_index: int = -100) -> Tensor:
    """Focal loss on the softmax: w_y (1 - p_y)^gamma (-log p_y), p = softmax(logits).

    gamma >= 0 (0 is weighted cross-entropy; 2 is Lin et al.'s choice). Finite, with finite
    gradients, for saturated logits and any gamma, [0, 1) included. A (N, C) soft target gives
    W sum_c t_c (1 - p_c)^gamma (-log p_c) with W = sum_c t_c w_c. class_weights (C,) or None;
    other arguments as logit_adjusted_loss ('mean' divides by the number of counted rows).
    """
    check_choice("reduction", reduction, REDUCTIONS)
    check_number("gamma", gamma, low=0)
    return fused_class_loss(logits, target, class_weights=class_weights, gamma=gamma,
                            reduction=reduction, ignore_index=ignore_index)

