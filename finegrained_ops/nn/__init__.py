"""Drop-in nn.Modules built on finegrained_ops.ops."""
from .anchor_points import AnchorPointClassifier, TripletAnchorPointLoss
from .class_balanced_loss import ClassBalancedLoss
from .class_counts import ClassCountsLoss, ClassWeightedLoss
from .contrastive_loss import ContrastiveLoss
from .cosine_linear import CosineLinear
from .decoupled_classifiers import LearnableWeightScaling
from .global_descriptors import MAC, RMAC, CroW, GeM, ISqrtCovPooling, SPoC
from .kernel_pooling import CompactBilinearPooling, KernelPooling
from .long_tail_losses import BalancedSoftmaxLoss, LDAMLoss, LogitAdjustedLoss, SoftmaxFocalLoss
from .superclass import SuperClassInstanceLoss
from .triplet import TripletMarginLoss

__all__ = [
    "AnchorPointClassifier",
    "BalancedSoftmaxLoss",
    "ClassBalancedLoss",
    "ClassCountsLoss",
    "ClassWeightedLoss",
    "CompactBilinearPooling",
    "ContrastiveLoss",
    "CosineLinear",
    "CroW",
    "GeM",
    "ISqrtCovPooling",
    "KernelPooling",
    "LDAMLoss",
    "LearnableWeightScaling",
    "LogitAdjustedLoss",
    "MAC",
    "RMAC",
    "SPoC",
    "SoftmaxFocalLoss",
    "SuperClassInstanceLoss",
    "TripletAnchorPointLoss",
    "TripletMarginLoss",
]
