"""τ-norm (Kang et al., ICLR'20, "Decoupling representation and classifier for long-tailed
recognition", sec. 4): re-balance a trained classifier without training, by rescaling each
class's weight vector. Its siblings: cRT (retrain_classifier) and LWS
(nn.LearnableWeightScaling)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import FLOATING, check_number, check_tensor
from .._numerics import l2_norm


def tau_normalize(weight: Tensor, *, tau: float = 1.0) -> Tensor:
    """τ-normalised classifier weights w_c / ||w_c||^tau (Kang et al., eq. 3).

    weight: (C, D) one row per class. tau >= 0: 0 is the identity, 1 unit-norm rows (the paper
    picks tau on a validation set). Returns (C, D) in weight's dtype; a zero row stays zero.
    """
    check_tensor("weight", weight, dim=2, dtypes=FLOATING)
    check_number("tau", tau, low=0)
    norms = l2_norm(weight, dim=1)  # no overflow for rows of 1e30
    scale = torch.where(norms > 0, norms.pow(-tau), torch.ones_like(norms))
    return weight * scale


def tau_normalized_linear(linear: nn.Linear, *, tau: float = 1.0) -> nn.Linear:
    """A copy of ``linear`` (an nn.Linear classifier, (C, D) weight) with τ-normalised weights,
    the post-hoc τ-norm classifier. The bias is kept (the paper's classifiers have none; a
    trained bias carries the class prior that τ-norm removes from the weights, so pass a
    bias-free layer to reproduce the paper exactly). No gradient flows to ``linear``."""
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    out = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(tau_normalize(linear.weight, tau=tau))
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out
