"""Global-descriptor pooling layers: (N, C, H, W) maps or (N, L, C) token sequences (a ViT's,
DINOv2's or CLIP's, input_format='NLC', as KernelPooling) -> (N, C), L2-normalised by
default, and the iSQRT-COV second-order head; see finegrained_ops.retrieval for what each
computes."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import FLOATING, check_choice, check_int, check_number, check_tensor
from ..retrieval import descriptors
from ..retrieval.covariance_pooling import isqrt_cov
from .kernel_pooling import INPUT_FORMATS


class _LocationPooling(nn.Module):
    """A head that pools over locations, whatever their layout: (N, L, C) tokens are pooled
    as a (N, C, 1, L) map (the heads that need the grid itself refuse them)."""

    def __init__(self, input_format: str) -> None:
        super().__init__()
        check_choice("input_format", input_format, INPUT_FORMATS)
        self.input_format = input_format

    def _maps(self, x: Tensor) -> Tensor:
        if self.input_format == "NCHW":
            return x  # the functions check it
        check_tensor("x", x, dim=3, dtypes=FLOATING)
        return x.transpose(1, 2).unsqueeze(2)

    def extra_repr(self) -> str:
        return f"input_format={self.input_format!r}"


class MAC(_LocationPooling):
    """Max over locations (retrieval.mac).

    Shape: (N, C, H, W) or (N, L, C) (input_format) -> (N, C) in the input's dtype,
    L2-normalised when ``normalize``.
    """

    def __init__(self, *, normalize: bool = True, input_format: str = "NCHW") -> None:
        super().__init__(input_format)
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) or (N, L, C) -> descriptors (N, C)."""
        return descriptors.mac(self._maps(x), normalize=self.normalize)


class SPoC(_LocationPooling):
    """Mean over locations, optionally with the centre prior (retrieval.spoc; the prior needs
    the grid, so not with input_format='NLC').

    Shape: (N, C, H, W) or (N, L, C) (input_format) -> (N, C) in the input's dtype,
    L2-normalised when ``normalize``.
    """

    def __init__(self, *, center_prior: bool = False, normalize: bool = True,
                 input_format: str = "NCHW") -> None:
        super().__init__(input_format)
        if center_prior and input_format == "NLC":
            raise ValueError("SPoC's center_prior weighs locations by their place on the H x W "
                             "grid, which (N, L, C) tokens do not give: reshape them to "
                             "(N, C, H, W) and use input_format='NCHW'")
        self.center_prior, self.normalize = center_prior, normalize

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) or (N, L, C) -> descriptors (N, C)."""
        return descriptors.spoc(self._maps(x), center_prior=self.center_prior,
                                normalize=self.normalize)

    def extra_repr(self) -> str:
        return f"center_prior={self.center_prior}, {super().extra_repr()}"


class GeM(_LocationPooling):
    """Generalised mean pooling (retrieval.gem) with p learnable (a (1,) parameter) or fixed
    (a buffer). p > 0; the paper initialises it at 3.

    Shape: (N, C, H, W) or (N, L, C) (input_format) -> (N, C) in the input's dtype,
    L2-normalised when ``normalize``.
    """

    def __init__(self, *, p: float = 3.0, learnable: bool = True, eps: float = 1e-6,
                 normalize: bool = True, input_format: str = "NCHW") -> None:
        super().__init__(input_format)
        check_number("p", p, low=0, low_open=True)
        check_number("eps", eps, low=0, low_open=True)
        value = torch.tensor([float(p)])
        if learnable:
            self.p = nn.Parameter(value)
        else:
            self.register_buffer("p", value)
        self.eps, self.normalize = eps, normalize

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) or (N, L, C) -> descriptors (N, C)."""
        return descriptors.gem(self._maps(x), p=self.p, eps=self.eps, normalize=self.normalize)

    def extra_repr(self) -> str:
        return (f"p={self.p.item():.4g}, learnable={isinstance(self.p, nn.Parameter)}, "
                f"{super().extra_repr()}")


class RMAC(nn.Module):
    """Regional MAC over `levels` scales of regions (retrieval.rmac). Its regions are squares
    of the H x W grid, so it takes maps only: reshape (N, L, C) patch tokens to (N, C, H, W).

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


class CroW(_LocationPooling):
    """Cross-dimensional weighting (retrieval.crow): its spatial weights are per location, so
    tokens work as well as maps.

    Shape: (N, C, H, W) or (N, L, C) (input_format) -> (N, C) in the input's dtype,
    L2-normalised when ``normalize``.
    """

    def __init__(self, *, a: float = 2.0, b: float = 2.0, normalize: bool = True,
                 input_format: str = "NCHW") -> None:
        super().__init__(input_format)
        descriptors.check_crow_arguments(a, b)
        self.a, self.b, self.normalize = a, b, normalize

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) or (N, L, C) -> descriptors (N, C)."""
        return descriptors.crow(self._maps(x), a=self.a, b=self.b, normalize=self.normalize)

    def extra_repr(self) -> str:
        return f"a={self.a}, b={self.b}, {super().extra_repr()}"


class ISqrtCovPooling(_LocationPooling):
    """iSQRT-COV (retrieval.isqrt_cov): the square-root-normalised covariance of the location
    features. The paper first reduces the channels to 256 with a 1x1 convolution; put one in
    front for large C.

    Shape: (N, C, H, W) or (N, L, C) (input_format) -> (N, C (C + 1) / 2) in the input's
    dtype.
    """

    def __init__(self, *, iterations: int = 5, input_format: str = "NCHW") -> None:
        super().__init__(input_format)
        check_int("iterations", iterations)
        self.iterations = iterations

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) or (N, L, C) -> (N, C (C + 1) / 2)."""
        return isqrt_cov(self._maps(x), iterations=self.iterations)

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}, {super().extra_repr()}"
