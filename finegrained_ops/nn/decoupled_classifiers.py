"""Decoupled classifiers (Kang et al., ICLR'20, "Decoupling representation and classifier for
long-tailed recognition"): keep the representation learned with instance-balanced sampling and
re-balance only the classifier. LWS, here, learns one scale per class on the trained weights;
τ-norm rescales them (train.tau_normalize); cRT re-trains the classifier
(train.retrain_classifier)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class LearnableWeightScaling(nn.Module):
    """LWS (Kang et al., sec. 4): logits_c = f_c * linear(x)_c with ``linear`` frozen and one
    learnable scale f_c per class (initialised to 1), trained with class-balanced sampling.

    Args:
        linear: the trained nn.Linear classifier, (C, D) weight; its parameters are frozen
            (requires_grad False) and it becomes a submodule.

    Shape: (N, D) features -> (N, C) logits. Parameter: ``scales`` (C,).
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        self.linear = linear.requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(linear.out_features, device=linear.weight.device,
                                              dtype=linear.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """x (N, D) -> logits (N, C), the linear layer's scaled per class."""
        return self.linear(x) * self.scales
