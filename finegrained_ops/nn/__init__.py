"""Drop-in nn.Modules built on finegrained_ops.ops."""
from .anchor_points import AnchorPointClassifier, TripletAnchorPointLoss
from .class_balanced_loss import ClassBalancedLoss, sigmoid_bias_init
from .kernel_pooling import CompactBilinearPooling, KernelPooling
from .superclass import SuperClassInstanceLoss
from .triplet import TripletMarginLoss

__all__ = [
    "AnchorPointClassifier",
    "ClassBalancedLoss",
    "CompactBilinearPooling",
    "KernelPooling",
    "SuperClassInstanceLoss",
    "TripletAnchorPointLoss",
    "TripletMarginLoss",
    "sigmoid_bias_init",
]
