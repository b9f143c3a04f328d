"""Module form of the class-balanced loss."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from .._checks import check_number
from .._typing import Counts
from ..ops.class_balanced_loss import check_hyperparameters, class_balanced_weights
from ..ops.class_loss import fused_class_loss
from .class_counts import ClassCountsLoss


class ClassBalancedLoss(ClassCountsLoss):
    """Class-balanced focal / sigmoid / softmax loss (thesis ch. 5) as a module.

    The class weights derived from the counts and ``beta`` are computed once, not on every
    call: a float64 buffer ``class_weights`` (not saved in the state dict), recomputed when
    ``beta`` is set and as ClassCountsLoss describes (after editing ``samples_per_class`` in
    place, call :meth:`refresh`).

    Args:
        samples_per_class: (C,) training samples of each class, all > 0.
        beta, gamma, loss_type, reduction, ignore_index: as in
            :func:`finegrained_ops.class_balanced_loss`.

    Shape: logits (N, C), target (N,) int64 or (N, C) multi-hot -> 0-dim, or (N,) for 'none'.

    Example::

        criterion = ClassBalancedLoss(samples_per_class, beta=0.999, gamma=0.5, loss_type="focal")
        nn.init.constant_(model.fc.bias, finegrained_ops.sigmoid_bias_init(num_classes))
        loss = criterion(model(images), labels)
    """

    def __init__(self, samples_per_class: Counts, *, beta: float = 0.9999, gamma: float = 0.5,
                 loss_type: str = "focal", reduction: str = "mean",
                 ignore_index: int = -100) -> None:
        check_hyperparameters(beta, gamma, loss_type, reduction)
        super().__init__(samples_per_class)
        self._beta = beta
        self.gamma, self.loss_type = gamma, loss_type
        self.reduction, self.ignore_index = reduction, ignore_index
        self.refresh()

    @property
    def beta(self) -> float:
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        check_number("beta", value, low=0, high=1, high_open=True)
        self._beta = value
        self.refresh()

    def refresh(self) -> None:
        """Recomputes ``class_weights`` (C,) float64 from ``samples_per_class`` and ``beta``."""
        self.class_weights = class_balanced_weights(self.samples_per_class, self._beta)

    def forward(self, logits: Tensor, target: Any) -> Tensor:
        """logits (N, C), target (N,) or (N, C) -> the loss (0-dim, or (N,) for 'none')."""
        return fused_class_loss(logits, target, class_weights=self.weights_for(logits),
                                gamma=self.gamma if self.loss_type == "focal" else 0.0,
                                loss_type=self.loss_type, reduction=self.reduction,
                                ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return (f"num_classes={self.samples_per_class.numel()}, beta={self.beta}, "
                f"gamma={self.gamma}, loss_type={self.loss_type!r}, reduction={self.reduction!r}")
