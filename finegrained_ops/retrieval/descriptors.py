"""Global descriptors: a (N, C, H, W) feature map pooled to (N, C), L2-normalised by default
(docs/semantics.md §6). Any H, W >= 1; float16 / bfloat16 maps are pooled in float32 and the
descriptor returned in their dtype. Each function is differentiable where its pooling is, and
holds over the whole floating range: magnitudes are factored out before powers and norms
(finegrained_ops._numerics), so a map times 1e30 pools to its descriptor times 1e30."""
from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

from .._checks import FLOATING, check_int, check_number, check_tensor, check_value, compute_dtype
from .._numerics import l2_norm, l2_normalize, magnitude

# R-MAC: the overlap Tolias et al. aim for between neighbouring regions, and the numbers of
# regions along the long side the choice is made from.
RMAC_OVERLAP = 0.4
RMAC_LONG_SIDE_STEPS = (2, 3, 4, 5, 6, 7)


def mac(x: Tensor, *, normalize: bool = True) -> Tensor:
    """Maximum activation of convolutions: max over locations (Tolias et al., ICLR'16)."""
    return _pooled(x, normalize, lambda z: z.amax(dim=(2, 3)))


def spoc(x: Tensor, *, center_prior: bool = False, normalize: bool = True) -> Tensor:
    """Sum-pooled convolutional features (Babenko & Lempitsky, ICCV'15), as a mean over
    locations (the same direction as their sum). center_prior weights location (i, j) by
    exp(-d^2 / (2 sigma^2)), d its distance to the map's centre and sigma a third of the
    distance from the centre to the nearest border, as in the paper."""
    def pool(z):
        if not center_prior:
            return z.mean(dim=(2, 3))
        return (z * _center_prior(z.shape[2], z.shape[3], z.device)).sum(dim=(2, 3))
    return _pooled(x, normalize, pool)


def gem(x: Tensor, *, p: Union[float, Tensor] = 3.0, eps: float = 1e-6,
        normalize: bool = True) -> Tensor:
    """Generalised mean pooling (Radenović et al., TPAMI'18): (mean of clamp(x, eps)^p)^(1/p).
    p: a number > 0 or a 0-dim / (1,) floating tensor (a learnable p, as nn.GeM holds; > 0 and
    finite, checked without a host sync on CUDA); p = 1 is SPoC, p -> inf tends to MAC, and
    the default 3 is Radenović et al.'s. eps > 0
    keeps the power differentiable at 0. Computed as M (mean of (clamp(x, eps) / M)^p)^(1/p),
    M the largest value of each channel, so x^p cannot overflow."""
    if isinstance(p, torch.Tensor):
        check_tensor("p", p, dtypes=FLOATING)
        if p.numel() != 1 or p.dim() > 1:
            raise ValueError(f"p must be a number, a 0-dim or a (1,) tensor, got shape "
                             f"{tuple(p.shape)}")
        check_value(((p > 0) & torch.isfinite(p)).all(), "p must be finite and > 0")
    else:
        check_number("p", p, low=0, low_open=True)
    check_number("eps", eps, low=0, low_open=True)

    def pool(z):
        exponent = p.to(z.dtype).reshape(()) if isinstance(p, torch.Tensor) else p
        clamped = z.clamp(min=eps)
        largest = magnitude(clamped, dim=(2, 3))
        means = (clamped / largest).pow(exponent).mean(dim=(2, 3))
        return largest[:, :, 0, 0] * means.pow(1.0 / exponent)
    return _pooled(x, normalize, pool)


def rmac_regions(height: int, width: int, *, levels: int = 3) -> list[tuple[int, int, int]]:
    """The R-MAC regions of a height x width map (Tolias et al., ICLR'16, sec. 3): at level
    l = 1..levels, squares of side floor(2 min(H, W) / (l + 1)), l of them along the short
    side and l + m along the long one, m chosen so that neighbours overlap by about 40%, spread
    evenly from border to border. Returns [(top, left, side)], level by level."""
    check_int("height", height)
    check_int("width", width)
    check_int("levels", levels)
    short, long_side = min(height, width), max(height, width)
    extra = 0
    if height != width:
        def overlap_error(steps):
            step = (long_side - short) / (steps - 1)
            return abs((short ** 2 - short * step) / short ** 2 - RMAC_OVERLAP)
        extra = min(range(len(RMAC_LONG_SIDE_STEPS)),
                    key=lambda i: overlap_error(RMAC_LONG_SIDE_STEPS[i])) + 1
    extra_h, extra_w = (extra, 0) if height > width else (0, extra)
    regions = []
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        if side == 0:
            continue
        tops = _spread(height, side, level + extra_h)
        lefts = _spread(width, side, level + extra_w)
        regions += [(top, left, side) for top in tops for left in lefts]
    return regions


def rmac(x: Tensor, *, levels: int = 3, eps: float = 1e-6, normalize: bool = True) -> Tensor:
    """Regional MAC (Tolias et al., ICLR'16): the MAC of every region of rmac_regions, each
    L2-normalised, summed, and the sum L2-normalised (when normalize); levels = 3, as Tolias
    et al. eps > 0 guards the
    regions' normalisation (a region of zeros adds nothing)."""
    check_rmac_arguments(levels, eps)

    def pool(z):
        total = torch.zeros(z.shape[:2], dtype=z.dtype, device=z.device)
        for top, left, side in rmac_regions(z.shape[2], z.shape[3], levels=levels):
            region = z[:, :, top:top + side, left:left + side].amax(dim=(2, 3))
            total = total + region / (l2_norm(region, dim=1) + eps)
        return total
    return _pooled(x, normalize, pool)


def check_rmac_arguments(levels, eps):
    check_int("levels", levels)
    check_number("eps", eps, low=0, low_open=True)


def crow(x: Tensor, *, a: float = 2.0, b: float = 2.0, normalize: bool = True) -> Tensor:
    """Cross-dimensional weighting (Kalantidis et al., ECCV'16 workshops): locations weighted by
    S = (A / ||A||_a)^(1/b), A the sum over channels; channel k then by log(sum_h Q_h / Q_k),
    Q_k the fraction of its locations that are non-zero (0 for an all-zero channel), as in the
    authors' code; a = b = 2 are the authors' choice. For non-negative (post-ReLU) maps: a
    negative value is a ValueError (a device-side assertion on CUDA). Computed on x / M, M each
    map's largest value, and scaled back: CroW is homogeneous, and ||A||_a would overflow."""
    check_crow_arguments(a, b)
    check_tensor("x", x, dim=4, dtypes=FLOATING)
    check_value(~(x < 0).any(),
                "crow: x must be non-negative (a post-ReLU map): CroW's spatial weights are "
                "roots of channel sums")

    def pool(z):
        largest = magnitude(z, dim=(1, 2, 3))                   # (N, 1, 1, 1)
        z = z / largest
        total = z.sum(dim=1)                                    # (N, H, W)
        norm = total.flatten(1).norm(p=a, dim=1)[:, None, None]
        spatial = (total / torch.where(norm > 0, norm, torch.ones_like(norm))).pow(1.0 / b)
        pooled = (z * spatial[:, None]).sum(dim=(2, 3))
        nonzero = (z != 0).to(z.dtype).mean(dim=(2, 3))         # (N, C)
        ratio = nonzero.sum(dim=1, keepdim=True) / nonzero.clamp(min=torch.finfo(z.dtype).tiny)
        channel = torch.where(nonzero > 0, ratio.log(), torch.zeros_like(ratio))
        return largest[:, :, 0, 0] * pooled * channel
    return _pooled(x, normalize, pool)


def check_crow_arguments(a, b):
    check_number("a", a, low=0, low_open=True)
    check_number("b", b, low=0, low_open=True)


def _pooled(x, normalize, pool):
    """pool on x in float32 at least, L2-normalised when asked, in x's dtype."""
    check_tensor("x", x, dim=4, dtypes=FLOATING)
    if x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"x must have H, W >= 1, got shape {tuple(x.shape)}")
    z = x.to(compute_dtype(x.dtype))
    with torch.autocast(x.device.type, enabled=False):
        out = pool(z)
        if normalize:
            out = l2_normalize(out, dim=1)
    return out.to(x.dtype)


def _spread(length, side, count):
    """count starts of windows of `side` spread evenly over [0, length - side], the last at
    length - side (integer arithmetic: a float step once fell a pixel short)."""
    if count == 1:
        return [0]
    return [i * (length - side) // (count - 1) for i in range(count)]


def _center_prior(height, width, device):
    """(H, W) Gaussian weights centred on the map, sigma a third of the centre-border distance."""
    sigma = min(height, width) / 2 / 3
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5 - height / 2
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5 - width / 2
    d2 = ys[:, None] ** 2 + xs[None, :] ** 2
    return torch.exp(-d2 / (2 * sigma ** 2))
