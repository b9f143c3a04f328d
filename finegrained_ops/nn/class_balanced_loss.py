"""Module form of the class-balanced loss, and the sigmoid-loss bias initialisation."""
import math

import torch
from torch import nn

from .._checks import check_int
from ..ops.class_balanced_loss import (_counts_tensor, check_counts_positive,
                                        check_hyperparameters, class_balanced_loss)


class ClassBalancedLoss(nn.Module):
    """Class-balanced focal / sigmoid / softmax loss (thesis ch. 5) as a module.

    The per-class counts are an int64 buffer: they move with ``.to(device)``, survive
    ``state_dict()`` and are not rounded by ``.half()``.

    Args:
        samples_per_class: (C,) training samples of each class, all > 0.
        beta, gamma, loss_type, reduction, ignore_index: as in
            :func:`finegrained_ops.class_balanced_loss`.

    Shape: logits (N, C), target (N,) int64 or (N, C) multi-hot -> 0-dim, or (N,) for 'none'.

    Example::

        criterion = ClassBalancedLoss(train_counts, beta=0.999, gamma=0.5, loss_type="focal")
        nn.init.constant_(model.fc.bias, sigmoid_bias_init(num_classes))
        loss = criterion(model(images), labels)
    """

    def __init__(self, samples_per_class, beta=0.9999, gamma=0.5, loss_type="focal",
                 reduction="mean", ignore_index=-100):
        super().__init__()
        counts = _counts_tensor(samples_per_class)
        if counts.is_floating_point() and not bool((counts == counts.round()).all()):
            raise ValueError("samples_per_class must hold whole numbers of samples")
        check_counts_positive(counts)
        check_hyperparameters(beta, gamma, loss_type, reduction)
        self.register_buffer("samples_per_class", counts.to(torch.int64).clone())
        self.beta, self.gamma, self.loss_type = beta, gamma, loss_type
        self.reduction, self.ignore_index = reduction, ignore_index

    def forward(self, logits, target):
        return class_balanced_loss(logits, target, self.samples_per_class, self.beta, self.gamma,
                                   self.loss_type, self.reduction, self.ignore_index)

    def extra_repr(self):
        return (f"num_classes={self.samples_per_class.numel()}, beta={self.beta}, "
                f"gamma={self.gamma}, loss_type={self.loss_type!r}, reduction={self.reduction!r}")


def sigmoid_bias_init(num_classes):
    """Bias b = -log((1 - pi) / pi) with prior pi = 1/C for sigmoid-based losses (sec. 5.4.2).

    Starting every class at probability 1/C avoids the huge initial loss of b = 0. Returns a float.
    """
    check_int("num_classes", num_classes, 2)
    prior = 1.0 / num_classes
    return -math.log((1.0 - prior) / prior)
