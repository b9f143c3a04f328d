"""Functional API: input validation and autograd around the native kernels in ``_C``."""
from .class_balanced_loss import (class_balanced_loss, class_balanced_weights, effective_number,
                                  sigmoid_bias_init)
from .kernel_pooling import (compact_bilinear_pooling, draw_hashes, draw_two_input_hashes,
                             estimate_rbf_gamma, kernel_pooling, rbf_alpha, signed_sqrt)
from .long_tail_losses import (balanced_softmax_loss, ldam_loss, ldam_margins, logit_adjust,
                               logit_adjusted_loss, logit_adjustment_offsets, softmax_focal_loss)
from .triplet import count_triplets, mine_from_bank, mine_triplets, triplet_margin_loss

__all__ = [
    "balanced_softmax_loss",
    "ldam_loss",
    "ldam_margins",
    "logit_adjust",
    "logit_adjusted_loss",
    "logit_adjustment_offsets",
    "softmax_focal_loss",
    "class_balanced_loss",
    "class_balanced_weights",
    "compact_bilinear_pooling",
    "count_triplets",
    "draw_hashes",
    "draw_two_input_hashes",
    "effective_number",
    "estimate_rbf_gamma",
    "kernel_pooling",
    "mine_from_bank",
    "mine_triplets",
    "rbf_alpha",
    "sigmoid_bias_init",
    "signed_sqrt",
    "triplet_margin_loss",
]
