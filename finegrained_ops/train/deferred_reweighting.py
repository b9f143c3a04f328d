"""Deferred re-weighting (DRW; Cao et al., NeurIPS'19, sec. 3.3): train with unit class
weights, then from a given epoch on with class-balanced weights (beta = 0.9999 in the paper)."""
from __future__ import annotations

import torch

from .._checks import check_int, check_number
from .._typing import Counts
from ..nn import ClassBalancedLoss
from ..nn.class_counts import ClassWeightedLoss
from ..ops.class_balanced_loss import class_balanced_weights
from .loop import _model_device


class DeferredReweighting:
    """Sets ``loss_fn.class_weights`` at the start of every epoch: None (every class weighs 1)
    before ``start_epoch``, the class-balanced weights (1 - beta) / (1 - beta^n_c),
    normalised to sum to C, from it on. The paper's LDAM-DRW: LDAMLoss, start_epoch 160 of 200.

    A function of the epoch only, so a resumed run gets the right weights. Pass it to
    ``fit(..., epoch_hooks=[drw])``, or call ``drw(epoch)`` in your own loop.

    Args:
        loss_fn: a loss with a ``class_weights`` attribute (nn.LDAMLoss, nn.LogitAdjustedLoss,
            nn.BalancedSoftmaxLoss, nn.SoftmaxFocalLoss, or any ClassWeightedLoss).
        samples_per_class: (C,) training counts, all > 0.
        start_epoch: the first re-weighted epoch (0-based), >= 0.
        beta: in [0, 1).
    """

    def __init__(self, loss_fn: ClassWeightedLoss, samples_per_class: Counts, start_epoch: int,
                 *, beta: float = 0.9999) -> None:
        if not hasattr(loss_fn, "class_weights") or isinstance(loss_fn, ClassBalancedLoss):
            raise TypeError(f"loss_fn must have settable class_weights (a ClassWeightedLoss other "
                            f"than ClassBalancedLoss, whose weights are its definition), got "
                            f"{type(loss_fn).__name__}")
        check_int("start_epoch", start_epoch, 0)
        check_number("beta", beta, low=0, high=1, high_open=True)
        self.loss_fn, self.start_epoch = loss_fn, start_epoch
        self.weights = class_balanced_weights(torch.as_tensor(samples_per_class), beta)

    def __call__(self, epoch: int) -> None:
        deferred = epoch < self.start_epoch
        self.loss_fn.class_weights = (None if deferred else
                                      self.weights.to(_model_device(self.loss_fn)))
