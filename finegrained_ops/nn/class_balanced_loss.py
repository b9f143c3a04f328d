"""Module form of the class-balanced loss, and the sigmoid-loss bias initialisation."""
import math

import torch
from torch import nn

from .._checks import check_int, check_number
from ..ops.class_balanced_loss import (_counts_tensor, check_counts_positive,
                                        check_hyperparameters, class_balanced_weights,
                                        class_weighted_loss)


class ClassBalancedLoss(nn.Module):
    """Class-balanced focal / sigmoid / softmax loss (thesis ch. 5) as a module.

    The per-class counts are an int64 buffer: they move with ``.to(device)``, survive
    ``state_dict()`` and are not rounded by ``.half()``. The class weights derived from them
    and ``beta`` are computed once, not on every call: a float64 buffer ``class_weights``
    (not saved in the state dict), recomputed when ``beta`` is set, a state dict is loaded or
    the module is moved or cast. After editing ``samples_per_class`` in place, call
    :meth:`refresh_weights`.

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
        self.register_buffer("class_weights", None, persistent=False)
        self._beta = beta
        self.gamma, self.loss_type = gamma, loss_type
        self.reduction, self.ignore_index = reduction, ignore_index
        self.refresh_weights()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    @property
    def beta(self):
        return self._beta

    @beta.setter
    def beta(self, value):
        check_number("beta", value, low=0, high=1, high_open=True)
        self._beta = value
        self.refresh_weights()

    def refresh_weights(self):
        """Recomputes ``class_weights`` (C,) float64 from ``samples_per_class`` and ``beta``."""
        self.class_weights = class_balanced_weights(self.samples_per_class, self._beta)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.refresh_weights()  # float64 on the new device, whatever the cast
        return self

    def forward(self, logits, target):
        return class_weighted_loss(logits, target, self.class_weights, self.gamma, self.loss_type,
                                   self.reduction, self.ignore_index)

    def extra_repr(self):
        return (f"num_classes={self.samples_per_class.numel()}, beta={self.beta}, "
                f"gamma={self.gamma}, loss_type={self.loss_type!r}, reduction={self.reduction!r}")


def _refresh_after_load(module, incompatible_keys):
    module.refresh_weights()  # a function, not a lambda: the module stays picklable


def sigmoid_bias_init(num_classes):
    """Bias b = -log((1 - pi) / pi) with prior pi = 1/C for sigmoid-based losses (sec. 5.4.2).

    Starting every class at probability 1/C avoids the huge initial loss of b = 0. Returns a float.
    """
    check_int("num_classes", num_classes, 2)
    prior = 1.0 / num_classes
    return -math.log((1.0 - prior) / prior)
