"""finegrained_ops: native PyTorch operators for fine-grained and long-tailed recognition.

Importing the package loads the compiled extension; a missing build is a loud ImportError.
What each op computes is in docs/semantics.md; the papers cited by short name in docstrings
("thesis eq. 3.7", "Ouyang et al.") are listed in docs/references.md.
"""
from . import _native, data, metrics, nn, ops, reference, retrieval, train
from ._native import BUILD_INFO
from .ops import (balanced_softmax_loss, class_balanced_loss, class_balanced_weights,
                  compact_bilinear_pooling, count_triplets, draw_hashes, draw_two_input_hashes,
                  effective_number, estimate_rbf_gamma, kernel_pooling, ldam_loss, ldam_margins,
                  logit_adjust, logit_adjusted_loss, logit_adjustment_offsets, mine_from_bank,
                  mine_triplets, rbf_alpha, sigmoid_bias_init, signed_sqrt,
                  softmax_focal_loss,
                  triplet_margin_loss)
from .version import __version__

__all__ = [
    "BUILD_INFO",
    "__version__",
    "balanced_softmax_loss",
    "class_balanced_loss",
    "class_balanced_weights",
    "compact_bilinear_pooling",
    "count_triplets",
    "data",
    "draw_hashes",
    "draw_two_input_hashes",
    "effective_number",
    "estimate_rbf_gamma",
    "kernel_pooling",
    "ldam_loss",
    "ldam_margins",
    "logit_adjust",
    "logit_adjusted_loss",
    "logit_adjustment_offsets",
    "metrics",
    "mine_from_bank",
    "mine_triplets",
    "nn",
    "ops",
    "rbf_alpha",
    "reference",
    "retrieval",
    "sigmoid_bias_init",
    "signed_sqrt",
    "softmax_focal_loss",
    "train",
    "triplet_margin_loss",
]
