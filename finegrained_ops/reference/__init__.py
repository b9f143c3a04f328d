"""Pure-PyTorch reference implementations: readable, float64-capable, the spec in code.

The native ops in ``finegrained_ops.ops`` are tested against these. They are not a fallback.
"""
from .class_balanced_loss import class_balanced_loss
from .contrastive_loss import contrastive_loss
from .covariance_pooling import isqrt_cov
from .kernel_pooling import (compact_bilinear_pooling, count_sketch, kernel_pooling,
                             tensor_sketch_features)
from .long_tail_losses import (balanced_softmax_loss, ldam_loss, logit_adjusted_loss,
                               softmax_focal_loss)
from .triplet import mine_from_bank, mine_triplets, triplet_margin_loss

__all__ = ["balanced_softmax_loss", "class_balanced_loss", "compact_bilinear_pooling",
           "contrastive_loss", "count_sketch", "isqrt_cov", "kernel_pooling",
           "ldam_loss", "logit_adjusted_loss", "mine_from_bank", "mine_triplets",
           "softmax_focal_loss", "tensor_sketch_features", "triplet_margin_loss"]
