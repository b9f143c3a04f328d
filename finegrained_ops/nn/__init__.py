"""Drop-in nn.Modules built on finegrained_ops.ops."""
from .class_balanced_loss import ClassBalancedLoss, sigmoid_bias_init
from .kernel_pooling import CompactBilinearPooling, KernelPooling

__all__ = ["ClassBalancedLoss", "CompactBilinearPooling", "KernelPooling", "sigmoid_bias_init"]
