"""Module forms of the long-tail softmax losses (docs/semantics.md §4.2). Each holds what it
derives from the class counts (offsets, margins) computed once, as ClassCountsLoss describes,
and optional class weights that train.DeferredReweighting can set per epoch."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from torch import Tensor

from .._checks import check_choice, check_number
from .._typing import Counts
from ..ops.class_loss import REDUCTIONS, fused_class_loss
from ..ops.long_tail_losses import ldam_margins, logit_adjustment_offsets
from .class_counts import ClassCountsLoss, ClassWeightedLoss


class LogitAdjustedLoss(ClassCountsLoss):
    """Logit-adjusted cross-entropy (Menon et al.): see ops.logit_adjusted_loss.

    Args: samples_per_class (C,), tau >= 0, class_weights (C,) or None, reduction,
    ignore_index. Shape: logits (N, C), target (N,) int64 or (N, C) soft rows -> 0-dim, or (N,)
    for 'none'. The offsets tau * log(pi) are a float64 buffer ``logit_offsets``.
    """

    def __init__(self, samples_per_class: Counts, *, tau: float = 1.0,
                 class_weights: Optional[Counts] = None, reduction: str = "mean",
                 ignore_index: int = -100) -> None:
        check_number("tau", tau, low=0)
        check_choice("reduction", reduction, REDUCTIONS)
        super().__init__(samples_per_class, class_weights=class_weights)
        self.tau, self.reduction, self.ignore_index = tau, reduction, ignore_index
        self.refresh()

    def refresh(self) -> None:
        self.register_buffer("logit_offsets",
                             logit_adjustment_offsets(self.samples_per_class, tau=self.tau),
                             persistent=False)

    def forward(self, logits: Tensor, target: Any) -> Tensor:
        """logits (N, C), target (N,) or (N, C) soft rows -> the loss (0-dim, or (N,) for
        'none')."""
        return fused_class_loss(logits, target, class_weights=self.weights_for(logits),
                                logit_offsets=self.per_class("logit_offsets", logits),
                                reduction=self.reduction,
                                ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return f"num_classes={self.samples_per_class.numel()}, tau={self.tau}"


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced Softmax (Ren et al.): cross-entropy of logits + log(n); see
    ops.balanced_softmax_loss. Arguments as LogitAdjustedLoss without tau.

    Shape: logits (N, C), target (N,) int64 or (N, C) soft rows -> 0-dim, or (N,) for 'none'.
    """

    def __init__(self, samples_per_class: Counts, *, class_weights: Optional[Counts] = None,
                 reduction: str = "mean", ignore_index: int = -100) -> None:
        super().__init__(samples_per_class, tau=1.0, class_weights=class_weights,
                         reduction=reduction, ignore_index=ignore_index)

    def refresh(self) -> None:
        self.register_buffer("logit_offsets", self.samples_per_class.double().log(),
                             persistent=False)

    def extra_repr(self) -> str:
        return f"num_classes={self.samples_per_class.numel()}"


class LDAMLoss(ClassCountsLoss):
    """Label-distribution-aware margin loss (Cao et al.): see ops.ldam_loss, whose default
    'weighted_mean' is the official code's. With train.DeferredReweighting it is LDAM-DRW.

    Args: samples_per_class (C,), max_margin >= 0 (0.5), scale > 0 (30), class_weights (C,) or
    None, reduction, ignore_index. Shape: logits (N, C), target (N,) int64 -> 0-dim, or (N,)
    for 'none'. The margins are a float64 buffer ``target_margins``.

    The logits must be cosines, in [-1, 1] (the loss scales them by ``scale``): put
    nn.CosineLinear before it, not an ordinary Linear. The first call warns when they are not
    (one read of the logits' largest magnitude, once).
    """

    def __init__(self, samples_per_class: Counts, *, max_margin: float = 0.5, scale: float = 30.0,
                 class_weights: Optional[Counts] = None, reduction: str = "weighted_mean",
                 ignore_index: int = -100) -> None:
        check_number("max_margin", max_margin, low=0)
        check_number("scale", scale, low=0, low_open=True)
        check_choice("reduction", reduction, REDUCTIONS)
        super().__init__(samples_per_class, class_weights=class_weights)
        self.max_margin, self.scale = max_margin, scale
        self.reduction, self.ignore_index = reduction, ignore_index
        self._checked_cosines = False
        self.refresh()

    def refresh(self) -> None:
        self.register_buffer("target_margins",
                             ldam_margins(self.samples_per_class, max_margin=self.max_margin),
                             persistent=False)

    def forward(self, logits: Tensor, target: Any) -> Tensor:
        """logits (N, C) cosines, target (N,) -> the loss (0-dim, or (N,) for 'none')."""
        if not self._checked_cosines and not torch.compiler.is_compiling():
            self._checked_cosines = True
            _warn_unless_cosines(logits)
        return fused_class_loss(logits, target, class_weights=self.weights_for(logits),
                                target_margins=self.per_class("target_margins", logits),
                                scale=self.scale, reduction=self.reduction,
                                ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return (f"num_classes={self.samples_per_class.numel()}, max_margin={self.max_margin}, "
                f"scale={self.scale}")


def _warn_unless_cosines(logits):
    if (isinstance(logits, torch.Tensor) and logits.numel() and logits.is_floating_point()
            and logits.device.type != "meta"):
        largest = float(logits.detach().abs().max())
        if largest > 1 + 1e-3:
            warnings.warn(f"LDAMLoss expects cosine logits in [-1, 1] (it subtracts a margin "
                          f"and multiplies by scale), got |logit| up to {largest:.3g}: put "
                          "finegrained_ops.nn.CosineLinear before it, not an ordinary Linear",
                          stacklevel=3)


class SoftmaxFocalLoss(ClassWeightedLoss):
    """Focal loss on the softmax: see ops.softmax_focal_loss.

    Args: gamma >= 0 (2), class_weights (C,) or None, reduction, ignore_index. Shape: logits
    (N, C), target (N,) int64 or (N, C) soft rows -> 0-dim, or (N,) for 'none'.
    """

    def __init__(self, *, gamma: float = 2.0, class_weights: Optional[Counts] = None,
                 reduction: str = "mean", ignore_index: int = -100) -> None:
        check_number("gamma", gamma, low=0)
        check_choice("reduction", reduction, REDUCTIONS)
        super().__init__(class_weights=class_weights)
        self.gamma, self.reduction, self.ignore_index = gamma, reduction, ignore_index

    def forward(self, logits: Tensor, target: Any) -> Tensor:
        """logits (N, C), target (N,) or (N, C) soft rows -> the loss (0-dim, or (N,) for
        'none')."""
        return fused_class_loss(logits, target, class_weights=self.weights_for(logits),
                                gamma=self.gamma, reduction=self.reduction,
                                ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"
