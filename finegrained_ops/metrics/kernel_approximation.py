"""Relative error of a kernel feature map against the Gaussian RBF kernel (thesis eq. 3.12)."""
from __future__ import annotations

import torch
from torch import Tensor


def kernel_approximation_error(phi_x: Tensor, phi_y: Tensor, x: Tensor, y: Tensor,
                               rbf_gamma: float) -> Tensor:
    """|φ(x)·φ(y) - exp(-γ‖x - y‖²)| / exp(-γ‖x - y‖²) for each pair of rows.

    phi_x, phi_y (N, F) feature maps (e.g. kernel pooling with alpha='rbf'); x, y (N, D) the
    inputs; rbf_gamma > 0. Returns (N,) float64 relative errors.
    """
    for name, t in (("phi_x", phi_x), ("phi_y", phi_y), ("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating (N, ·) tensor")
    if phi_x.shape != phi_y.shape or x.shape != y.shape or phi_x.shape[0] != x.shape[0]:
        raise ValueError(f"shapes must pair up: phi {tuple(phi_x.shape)}/{tuple(phi_y.shape)}, "
                         f"inputs {tuple(x.shape)}/{tuple(y.shape)}")
    if not rbf_gamma > 0:
        raise ValueError(f"rbf_gamma must be > 0, got {rbf_gamma!r}")
    exact = torch.exp(-rbf_gamma * (x.double() - y.double()).pow(2).sum(dim=1))
    approx = (phi_x.double() * phi_y.double()).sum(dim=1)
    return (approx - exact).abs() / exact
