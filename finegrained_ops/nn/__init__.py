"""Drop-in nn.Modules built on finegrained_ops.ops."""
from .class_balanced_loss import ClassBalancedLoss, sigmoid_bias_init

__all__ = ["ClassBalancedLoss", "sigmoid_bias_init"]
