"""Global-descriptor pooling layers: (N, C, H, W) -> (N, C), L2-normalised by default, and the
iSQRT-COV second-order head; see finegrained_ops.retrieval for what each computes."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_int, check_number
from ..retrieval import descriptors
from ..retrieval.covariance_pooling import isqrt_cov


class MAC(nn.Module):
    """Max over locations (retrieval.mac).

    Shape: (N, C, H, W) -> (N, C) in the input's dtype, L2-normalised when ``normalize``.
    """

    def __init__(self, *, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) -> descriptors (N, C)."""
        return descriptors.mac(x, normalize=self.normalize)


class SPoC(nn.Module):
    """Mean over locations, optionally with the centre prior (retrieval.spoc).

    Shape: (N, C, H, W) -> (N, C) in the input's dtype, L2-normalised when ``normalize``.
    """

    def __init__(self, *, center_prior: bool = False, normalize: bool = True) -> None:
        super().__init__()
        self.center_prior, self.normalize = center_prior, normalize

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) -> descriptors (N, C)."""
        return descriptors.spoc(x, center_prior=self.center_prior, normalize=self.normalize)

    def extra_repr(self) -> str:
        return f"center_prior={self.center_prior}"


class GeM(nn.Module):
    """Generalised mean pooling (retrieval.gem) with p learnable (a (1,) parameter) or fixed
    (a buffer). p > 0; the paper initialises it at 3.

    Shape: (N, C, H, W) -> (N, C) in the input's dtype, L2-normalised when ``normalize``.
    """

    def __init__(self, *, p: float = 3.0, learnable: bool = True, eps: float = 1e-6,
                 normalize: bool = True) -> None:
        super().__init__()
        check_number("p", p, low=0, low_open=True)
        check_number("eps", eps, low=0, low_open=True)
        value = torch.tensor([float(p)])
        if learnable:
            self.p = nn.Parameter(value)
        else:
            self.register_buffer("p", value)
        self.eps, self.normalize = eps, normalize

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) -> descriptors (N, C)."""
        return descriptors.gem(x, p=self.p, eps=self.eps, normalize=self.normalize)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4g}, learnable={isinstance(self.p, nn.Parameter)}"


class RMAC(nn.Module):
    """Regional MAC over `levels` scales of regions (retrieval.rmac).

    Shape: (N, C, H, W) -> (N, C) in the input's dtype, L2-normalised when ``normalize``.
    """

    def __init__(self, *, levels: int = 3, eps: float = 1e-6, normalize: bool = True) -> None:
        super().__init__()
        descriptors.check_rmac_arguments(levels, eps)
        self.levels, self.eps, self.normalize = levels, eps, normalize

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) -> descriptors (N, C)."""
        return descriptors.rmac(x, levels=self.levels, eps=self.eps, normalize=self.normalize)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class CroW(nn.Module):
    """Cross-dimensional weighting (retrieval.crow).

    Shape: (N, C, H, W) -> (N, C) in the input's dtype, L2-normalised when ``normalize``.
    """

    def __init__(self, *, a: float = 2.0, b: float = 2.0, normalize: bool = True) -> None:
        super().__init__()
        descriptors.check_crow_arguments(a, b)
        self.a, self.b, self.normalize = a, b, normalize

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) -> descriptors (N, C)."""
        return descriptors.crow(x, a=self.a, b=self.b, normalize=self.normalize)

    def extra_repr(self) -> str:
        return f"a={self.a}, b={self.b}"


class ISqrtCovPooling(nn.Module):
    """iSQRT-COV (retrieval.isqrt_cov): the square-root-normalised covariance of the location
    features. The paper first reduces the channels to 256 with a 1x1 convolution; put one in
    front for large C.

    Shape: (N, C, H, W) -> (N, C (C + 1) / 2) in the input's dtype.
    """

    def __init__(self, *, iterations: int = 5) -> None:
        super().__init__()
        check_int("iterations", iterations)
        self.iterations = iterations

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) -> (N, C (C + 1) / 2)."""
        return isqrt_cov(x, iterations=self.iterations)

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}"
