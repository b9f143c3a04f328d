"""The fused native class loss every member of the family calls (docs/semantics.md §4): the
class-balanced loss (class_balanced_loss.py) and the long-tail softmax losses
(long_tail_losses.py).

The native forward computes the reduced loss and its gradient in one fused pass and saves the
gradient; the backward only scales it by grad_output, and not even that when the scale is 1
on the CPU (csrc/precomputed_gradient/precomputed_gradient.h). Every argument is checked natively, once;
this layer only turns defaults into the op's arguments.
"""
import torch

from .._checks import check_tensor
from .._native import _C

LOSS_TYPES = tuple(_C.choices["class_loss.loss_type"])  # the names the native code parses
REDUCTIONS = tuple(_C.choices["class_loss.reduction"])


def fused_class_loss(logits, target, *, class_weights=None, logit_offsets=None,
                     target_margins=None, scale=1.0, gamma=0.0, loss_type="softmax",
                     reduction="mean", ignore_index=-100):
    """The native loss of the family.

    logits (N, C) float16/bfloat16/float32/float64 (half types read as they are and computed in
    float32); target (N,) int64 or (N, C) floating; class_weights, logit_offsets,
    target_margins (C,) float64 or the compute dtype, or None. For 'softmax', the logits
    entering the softmax are scale * (logits + logit_offsets - target_margins[y] onehot(y)) and
    gamma > 0 makes it the softmax focal loss; for 'focal', gamma is the sigmoid focal exponent.
    Returns the loss (0-dim, or (N,) for 'none') in logits' dtype, float32 for half logits
    under autocast.
    """
    check_tensor("logits", logits)
    compute_grad = logits.requires_grad and torch.is_grad_enabled()
    return _class_loss(logits, target, class_weights, logit_offsets, target_margins,
                       float(scale), float(gamma), loss_type, reduction, int(ignore_index),
                       compute_grad)[0]


# The op is defined in C++ with its device kernels, autograd and autocast
# (csrc/class_loss/class_loss_op.cpp); its fake kernel is here.
_class_loss = torch.ops.finegrained_ops.class_loss.default


@torch.library.register_fake("finegrained_ops::class_loss")
def _(logits, target, class_weights, logit_offsets, target_margins, scale, gamma, loss_type,
      reduction, ignore_index, compute_grad, loss_dtype=None):
    n = logits.shape[0]
    dtype = loss_dtype if loss_dtype is not None else logits.dtype
    loss = logits.new_empty((n,) if reduction == "none" else (), dtype=dtype)
    grad = torch.empty_like(logits) if compute_grad else logits.new_empty((0,))
    return loss, grad, logits.new_empty((), dtype=dtype)


# The backward of the losses whose gradient the forward computes
# (csrc/precomputed_gradient/scale_gradient_op.cpp), called from their C++ autograd.
_scale_gradient = torch.ops.finegrained_ops.scale_gradient.default


@torch.library.register_fake("finegrained_ops::scale_gradient")
def _(grad, grad_loss, norm):
    return torch.empty_like(grad)
