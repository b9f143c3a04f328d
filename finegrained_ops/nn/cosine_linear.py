"""A linear layer of cosines: the classifier the margin losses need (LDAM, Cao et al. 2019:
the official code's NormedLinear)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int


class CosineLinear(nn.Module):
    """cos(x_i, w_c): the rows of the input and of the weight L2-normalised, then their
    products, so every output is in [-1, 1]. LDAM (and the margin losses) subtract a margin
    from such a cosine and scale it: after an ordinary Linear, whose logits are unbounded, the
    margin means nothing and training diverges.

    Args:
        in_features: D, the embedding width.
        out_features: C, the number of classes.

    Shape: (N, D) -> (N, C) in the input's dtype. ``weight`` is (C, D), as nn.Linear's,
    uniform in [-1, 1] as the official NormedLinear's (only its directions matter). No bias: it
    would move the outputs out of [-1, 1].
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        check_int("in_features", in_features, 1)
        check_int("out_features", out_features, 1)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x (N, D) -> cosines (N, C)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.in_features:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected (N, {self.in_features}) input, got {shape}")
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
