"""Pure-PyTorch reference implementations: readable, float64-capable, the spec in code.

The native ops in ``finegrained_ops.ops`` are tested against these. They are not a fallback.
"""
from .class_balanced_loss import class_balanced_loss
from .kernel_pooling import count_sketch, kernel_pooling, tensor_sketch_features
from .triplet import mine_from_bank, mine_triplets, triplet_margin_loss

__all__ = ["class_balanced_loss", "count_sketch", "kernel_pooling", "mine_from_bank",
           "mine_triplets", "tensor_sketch_features", "triplet_margin_loss"]
