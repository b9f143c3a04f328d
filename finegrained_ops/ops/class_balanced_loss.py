"""Class-balanced softmax / sigmoid / focal loss (thesis ch. 5; DESIGN §5).

The native forward computes the loss and d(loss)/d(logits) in one fused pass and saves the
gradient; the backward only scales it by grad_output. That holds one (N, C) tensor between
forward and backward, the same as recomputing would (it would have to save the logits),
and reads the logits once instead of twice.
"""
import math

import torch
from torch.autograd.function import once_differentiable

from .._native import _C
from ._validation import FLOATING, check_choice, check_same_device, check_tensor, compute_dtype

LOSS_TYPES = {"softmax": 0, "sigmoid": 1, "focal": 2}
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def effective_number(samples_per_class, beta):
    """Effective number of samples E_n = (1 - beta^n) / (1 - beta) of each class (eq. 5.2).

    samples_per_class: (C,) counts (tensor or sequence). beta in [0, 1). Returns (C,) float64
    (on the counts' device when a tensor is given). beta = 0 gives 1; beta -> 1 gives n.
    """
    counts = _counts_tensor(samples_per_class).to(torch.float64)
    _check_beta(beta)
    return (1.0 - beta ** counts) / (1.0 - beta)


def class_balanced_weights(samples_per_class, beta):
    """Class weights (1 - beta) / (1 - beta^n_c), normalised so they sum to C (eq. 5.6).

    samples_per_class: (C,) counts > 0. Returns (C,) float64.
    """
    counts = _counts_tensor(samples_per_class)
    _check_beta(beta)
    check_counts_positive(counts)
    weights = 1.0 / effective_number(counts, beta)
    return weights * (counts.numel() / weights.sum())


def class_balanced_loss(logits, target, samples_per_class, beta=0.9999, gamma=0.5,
                        loss_type="focal", reduction="mean", ignore_index=-100):
    """Class-balanced loss: each sample's loss weighted by (1 - beta) / (1 - beta^n_y), normalised.

    Args:
        logits: (N, C) float16/bfloat16/float32/float64 (half types are computed in float32).
        target: (N,) int64 class indices, or for 'sigmoid'/'focal' a (N, C) multi-hot (or soft)
            target with values in [0, 1]; a multi-hot sample weighs the sum of its classes' weights.
        samples_per_class: (C,) training samples of each class, all > 0 (tensor or sequence).
        beta: in [0, 1); 0 is no re-weighting, -> 1 is inverse class frequency.
        gamma: focal-loss focusing parameter >= 0 (ignored unless loss_type='focal').
        loss_type: 'focal' | 'sigmoid' | 'softmax'.
        reduction: 'mean' (sum / number of positive labels, N for single-label targets; the
            official normalisation, not divided by the sum of weights) | 'sum' | 'none' (N,).
        ignore_index: class-index targets equal to it get zero loss and gradient and are not
            counted by 'mean'.

    Returns:
        0-dim tensor ('mean', 'sum') or (N,) ('none') in logits' dtype. A batch with no
        positive label gives 0 (not NaN) under 'mean'. Differentiable once (no double
        backward: the returned gradient is a constant of the graph).
    """
    check_hyperparameters(beta, gamma, loss_type, reduction)
    check_tensor("logits", logits, dim=2, dtypes=FLOATING)
    check_tensor("target", target)
    n, c = logits.shape
    if target.dim() == 1:
        if target.dtype != torch.int64:
            raise TypeError(f"class-index target must be int64, got {target.dtype}")
        if target.shape[0] != n:
            raise ValueError(f"target has {target.shape[0]} entries but logits has N={n} rows")
    elif target.dim() == 2:
        if loss_type == "softmax":
            raise ValueError("multi-hot (N, C) targets need loss_type 'sigmoid' or 'focal'")
        if target.shape != logits.shape:
            raise ValueError(f"multi-hot target shape {tuple(target.shape)} must equal logits "
                             f"shape {tuple(logits.shape)}")
        if not target.is_floating_point():
            raise TypeError(f"multi-hot target must be floating point, got {target.dtype}")
    else:
        raise ValueError(f"target must be (N,) class indices or (N, C) multi-hot, got shape "
                         f"{tuple(target.shape)}")
    counts = _counts_tensor(samples_per_class, device=logits.device)
    if counts.shape != (c,):
        raise ValueError(f"samples_per_class must have C={c} entries, got shape {tuple(counts.shape)}")
    check_same_device(logits=logits, target=target, samples_per_class=counts)

    dtype = compute_dtype(logits.dtype)
    z = logits.to(dtype)
    if target.dim() == 2:
        target = target.to(dtype)
    compute_grad = torch.is_grad_enabled() and logits.requires_grad
    loss, _, _ = _class_balanced_loss(z, target, counts, float(beta), float(gamma),
                                      LOSS_TYPES[loss_type], REDUCTIONS[reduction],
                                      int(ignore_index), compute_grad)
    return loss.to(logits.dtype)


def check_hyperparameters(beta, gamma, loss_type, reduction):
    """beta in [0, 1), finite gamma >= 0, known loss_type and reduction, or a ValueError."""
    check_choice("loss_type", loss_type, LOSS_TYPES)
    check_choice("reduction", reduction, REDUCTIONS)
    _check_beta(beta)
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")


def check_counts_positive(counts):
    """Every class needs a sample: a class with n = 0 has no effective number."""
    if bool((counts <= 0).any()):
        raise ValueError("samples_per_class must be > 0 for every class (a class with no samples "
                         f"has no effective number), got {counts.tolist()}")


def _check_beta(beta):
    if not (isinstance(beta, (int, float)) and 0.0 <= beta < 1.0):
        raise ValueError(f"beta must be a number in [0, 1), got {beta!r}")


def _counts_tensor(samples_per_class, device=None):
    """(C,) counts as given if a tensor (any real dtype), else float64 on `device`."""
    counts = samples_per_class
    if not isinstance(counts, torch.Tensor):
        counts = torch.as_tensor(counts, dtype=torch.float64, device=device)
    if counts.dim() != 1:
        raise ValueError(f"samples_per_class must be 1-D (C,), got shape {tuple(counts.shape)}")
    return counts


@torch.library.custom_op("finegrained_ops::class_balanced_loss", mutates_args=())
def _class_balanced_loss(logits: torch.Tensor, target: torch.Tensor,
                         samples_per_class: torch.Tensor, beta: float, gamma: float,
                         loss_type: int, reduction: int, ignore_index: int,
                         compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(_C.class_balanced_loss_forward(logits, target, samples_per_class, beta, gamma,
                                                loss_type, reduction, ignore_index, compute_grad))


@_class_balanced_loss.register_fake
def _(logits, target, samples_per_class, beta, gamma, loss_type, reduction, ignore_index,
      compute_grad):
    n = logits.shape[0]
    loss = logits.new_empty((n,) if reduction == REDUCTIONS["none"] else ())
    grad = torch.empty_like(logits) if compute_grad else logits.new_empty((0,))
    return loss, grad, logits.new_empty(())


def _setup_context(ctx, inputs, output):
    _, grad, norm = output
    ctx.mark_non_differentiable(grad, norm)
    ctx.set_materialize_grads(False)  # no (N, C) zeros for the non-differentiable outputs
    ctx.save_for_backward(grad, norm)
    ctx.per_sample = inputs[6] == REDUCTIONS["none"]


@once_differentiable
def _backward(ctx, grad_loss, _grad_grad, _grad_norm):
    if grad_loss is None:  # grads are not materialised: the loss itself was not used
        return (None,) * 9
    grad, norm = ctx.saved_tensors
    scale = grad_loss / norm
    if ctx.per_sample:
        scale = scale.unsqueeze(1)
    return grad * scale, None, None, None, None, None, None, None, None


_class_balanced_loss.register_autograd(_backward, setup_context=_setup_context)
