"""Kernel pooling and compact bilinear pooling (thesis ch. 3, Algorithm 1; docs/semantics.md §2).

One native op computes the whole pooled row: the Count Sketches of every location (read in
x's dtype and layout), their spectra summed over locations and inverse-transformed once per
image and order (no per-location d-dimensional output ever exists), the order-0 and order-1
blocks, alpha, and the signed square root with L2 normalisation. Its backward recomputes the
spectra rather than saving them (saving them would cost N·L·p·d memory). The sketches' hashes
reach it as a sketch table (:func:`sketch_table`), which the modules build once.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._checks import (FLOATING, check_int, check_number, check_tensor, compute_dtype,
                       make_generator)
from .._native import check_devices  # imported first: loading the extension registers the ops


def kernel_pooling(x: Tensor, hash_index: Tensor, hash_sign: Tensor, alpha: Optional[Tensor],
                   sketch_dim: int, *, normalize: bool = False) -> Tensor:
    """Taylor-series kernel feature map of every location, averaged over locations.

    Args:
        x: (N, L, C) features at L >= 1 locations, any strides; float16/bfloat16 (computed in
            float32), float32 or float64.
        hash_index: (p, C) int64 in [0, sketch_dim), the bucket h_t(k) of channel k in sketch t.
        hash_sign: (p, C) floating, +-1: the sign s_t(k), or 0 to leave channel k out of
            sketch t (as two-input compact bilinear pooling does). A constant: no gradient.
        alpha: (p + 1,) floating coefficients; alpha_i scales the order-i block, so
            φ(x)·φ(y) ≈ sum_i alpha_i² (x·y)^i (eq. 3.7).
        sketch_dim: sketch size d >= 2 of every order >= 2 (any d, odd included).
        normalize: apply the signed square root, then L2 normalisation, to each row (what
            :func:`sqrt_normalize` does), in the same native pass.

    Returns:
        (N, 1 + C + (p - 1)·sketch_dim) in x's dtype: [alpha_0, alpha_1·mean_l x_l,
        alpha_i·mean_l IFFT(prod_{t<=i} FFT(CS_t(x_l))) for i = 2..p]. Differentiable
        (once) w.r.t. x and alpha. p = 1 gives [alpha_0, alpha_1·mean_l x_l].

    The hashes are turned into a sketch table on every call; :class:`~finegrained_ops.nn.
    KernelPooling` builds it once.
    """
    check_int("sketch_dim", sketch_dim, 2)
    _check_hash_channels(x, hash_index)
    table = _sketch_table(hash_index, hash_sign, sketch_dim)
    return _kernel_pooling(x, table, alpha, sketch_dim, normalize)[0]


def compact_bilinear_pooling(x: Tensor, hash_index: Tensor, hash_sign: Tensor, sketch_dim: int,
                             y: Optional[Tensor] = None, *, normalize: bool = False) -> Tensor:
    """Compact bilinear pooling (Gao et al. 2016): the order-2 block of kernel pooling alone;
    with `y`, the two-input form (Fukui et al. 2016's MCB; two-stream bilinear CNNs), a sketch
    of the pooled outer product of x and y.

    Args:
        x: (N, L, C) floating, any strides.
        hash_index: (2, C) int64 in [0, sketch_dim); with y, (2, C + C_y), as from
            :func:`draw_two_input_hashes`: sketch 1 reads row 0's first C entries, for x's
            channels, sketch 2 row 1's last C_y, for y's; the other entries are not used.
        hash_sign: hash_index's shape, +-1 (0 where a channel is left out of a sketch).
        sketch_dim: sketch size d >= 2.
        y: optional (N, L, C_y) second stream at the same locations, x's dtype and device.
        normalize: signed square root, then L2 normalisation of each row, in the same pass.

    Returns:
        (N, sketch_dim) in x's dtype, mean_l IFFT(FFT(CS_1(x_l))·FFT(CS_2(y_l))) (y = x
        without y): an unbiased sketch of mean_l x_l y_lᵀ (irfft's 1/d; Gao's Caffe code is d times
        larger). Two inputs run the same native op on the channels [x, y], so both get
        gradients.
    """
    if y is not None:
        x = _concat_streams(x, y, hash_index)
        hash_sign = two_input_signs(hash_sign, y.shape[2])
    _check_hash_channels(x, hash_index)
    if isinstance(hash_index, torch.Tensor) and hash_index.dim() == 2 and hash_index.shape[0] != 2:
        raise ValueError(f"compact bilinear pooling takes two sketches: hash_index must be "
                         f"(2, C), got shape {tuple(hash_index.shape)}")
    check_int("sketch_dim", sketch_dim, 2)
    table = _sketch_table(hash_index, hash_sign, sketch_dim)
    return _kernel_pooling(x, table, None, sketch_dim, normalize)[0]


def sketch_table(hash_index: Tensor, hash_sign: Tensor, sketch_dim: int) -> Tensor:
    """The hashes of p count sketches as the native kernels read them (docs/semantics.md §2).

    hash_index (p, C) int64 in [0, sketch_dim) and hash_sign (p, C) floating of +-1 (0: channel
    left out) -> (p, 2C + sketch_dim + 1) int64 on their device: per sketch, each channel's
    signed bucket, then the channels grouped by bucket. Built once by the modules (a buffer,
    rebuilt when hashes are loaded), per call by the functions.
    """
    return _sketch_table(hash_index, hash_sign, sketch_dim)


def two_input_signs(hash_sign, y_channels):
    """hash_sign (2, C + C_y) with sketch 1 restricted to the first C channels (x's) and
    sketch 2 to the last C_y (y's): what two-input compact bilinear pooling reads."""
    channels = hash_sign.shape[1]
    y_channel = torch.arange(channels, device=hash_sign.device) >= channels - y_channels
    return torch.where(torch.stack([~y_channel, y_channel]), hash_sign, 0)


def _check_hash_channels(x, hash_index):
    """hash_index must hash x's C channels (the native op sees only the table built from it)."""
    if (isinstance(x, torch.Tensor) and isinstance(hash_index, torch.Tensor) and x.dim() == 3
            and hash_index.dim() == 2 and hash_index.shape[1] != x.shape[2]):
        raise ValueError(f"hash_index must be (p, C) with C = {x.shape[2]} (x's channels), got "
                         f"shape {tuple(hash_index.shape)}")


def _concat_streams(x, y, hash_index):
    """[x, y] along channels, after checking that y matches x and the hashes cover both."""
    check_tensor("x", x, dim=3, dtypes=FLOATING)
    check_tensor("y", y, dim=3, dtypes=FLOATING)
    check_devices(x=x, y=y)
    if y.shape[:2] != x.shape[:2] or y.dtype != x.dtype:
        raise ValueError(f"y must be (N, L, C_y) = ({x.shape[0]}, {x.shape[1]}, C_y) in x's "
                         f"dtype {x.dtype}, got shape {tuple(y.shape)} {y.dtype}")
    check_tensor("hash_index", hash_index, dim=2, dtypes=(torch.int64,))
    channels = x.shape[2] + y.shape[2]
    if hash_index.shape != (2, channels):
        raise ValueError(f"with y, hash_index must be (2, C + C_y) = (2, {channels}) (from "
                         f"draw_two_input_hashes), got shape {tuple(hash_index.shape)}")
    return torch.cat([x, y], dim=2)


def draw_hashes(in_channels: int, sketch_dim: int, order: int, *,
                seed: int = 0) -> tuple[Tensor, Tensor]:
    """Hash functions of `order` count sketches, drawn from a dedicated torch.Generator(seed).

    Returns hash_index (order, in_channels) int64 uniform in [0, sketch_dim) and hash_sign
    (order, in_channels) float32 uniform in {-1, +1}. The global RNG is never touched, and the
    same seed gives the same hashes on every machine; sketch t of a higher order reuses the
    draws of a lower one, so compact bilinear pooling equals kernel pooling's order-2 block.
    """
    check_int("in_channels", in_channels)
    check_int("sketch_dim", sketch_dim, 2)
    check_int("order", order)
    generator = make_generator(seed)
    index = torch.empty(order, in_channels, dtype=torch.int64)
    sign = torch.empty(order, in_channels, dtype=torch.float32)
    for t in range(order):
        index[t] = torch.randint(sketch_dim, (in_channels,), generator=generator)
        sign[t] = torch.randint(2, (in_channels,), generator=generator) * 2.0 - 1.0
    return index, sign


def draw_two_input_hashes(x_channels: int, y_channels: int, sketch_dim: int,
                          *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Hashes of two-input compact bilinear pooling: sketch 1 over x's channels, sketch 2 over
    y's, as one (2, C + C_y) pair for the native op on the channels [x, y].

    Returns hash_index (2, x_channels + y_channels) int64 in [0, sketch_dim) and hash_sign of the
    same shape, float32. With (index, sign) = ``draw_hashes(max(C, C_y), sketch_dim, 2, seed)``,
    sketch 1
    is row 0's first C entries, on x's channels, and sketch 2 row 1's first C_y, on y's (one
    draw, so the two are independent); every other entry has index 0 and sign 0 (left out).
    So with C = C_y, pooling (x, x) equals single-input compact bilinear pooling of x with
    ``draw_hashes(C, sketch_dim, 2, seed)``.
    """
    check_int("x_channels", x_channels)
    check_int("y_channels", y_channels)
    # One draw for both: two draws from the same seed would share their random stream, and
    # x's signs and buckets would repeat y's.
    drawn_index, drawn_sign = draw_hashes(max(x_channels, y_channels), sketch_dim, 2, seed=seed)
    index = torch.zeros(2, x_channels + y_channels, dtype=torch.int64)
    sign = torch.zeros(2, x_channels + y_channels, dtype=torch.float32)
    for out, drawn in ((index, drawn_index), (sign, drawn_sign)):
        out[0, :x_channels] = drawn[0, :x_channels]
        out[1, x_channels:] = drawn[1, :y_channels]
    return index, sign


def rbf_alpha(rbf_gamma: float, order: int) -> Tensor:
    """Coefficients alpha_i = sqrt(exp(-2γ)(2γ)^i / i!), i = 0..order, with which kernel pooling
    approximates the Gaussian RBF kernel exp(-γ‖x - y‖²) of L2-normalised inputs (eq. 3.11).

    Returns (order + 1,) float64.
    """
    check_number("rbf_gamma", rbf_gamma, low=0, low_open=True)
    check_int("order", order, 0)
    i = torch.arange(order + 1, dtype=torch.float64)
    log_alpha_sq = -2.0 * rbf_gamma + i * math.log(2.0 * rbf_gamma) - torch.lgamma(i + 1)
    return torch.exp(0.5 * log_alpha_sq)


def estimate_rbf_gamma(features: Tensor) -> float:
    """γ = 1 / mean inner product of distinct pairs of feature vectors (thesis 3.3.2).

    features: (..., C) floating; all leading axes are flattened into M >= 2 vectors. The mean
    over the M(M-1) ordered pairs i != j is (‖sum x‖² - sum ‖x‖²) / (M(M-1)), O(M·C). Returns a
    float. Raises ValueError when that mean is not positive (γ would not be defined).
    """
    check_tensor("features", features, dtypes=FLOATING)
    if features.dim() < 2:
        raise ValueError(f"features must be (..., C) vectors, got shape {tuple(features.shape)}")
    vectors = features.reshape(-1, features.shape[-1]).to(torch.float64)
    m = vectors.shape[0]
    if m < 2:
        raise ValueError(f"estimate_rbf_gamma needs at least 2 feature vectors, got {m}")
    total = vectors.sum(dim=0)
    mean_inner = (total.dot(total) - vectors.pow(2).sum()) / (m * (m - 1))
    if not bool(mean_inner > 0):
        raise ValueError(f"the mean inner product of the features is {float(mean_inner):.4g}; "
                         "γ = 1 / mean needs it > 0 (pass rbf_gamma explicitly)")
    return float(1.0 / mean_inner)


def signed_sqrt(x: Tensor, *, eps: float = 1e-12) -> Tensor:
    """sign(x)·(sqrt(|x| + eps) - sqrt(eps)): the signed square root with a finite gradient.

    The plain sign(x)·sqrt(|x|) has an infinite derivative at 0 that turns into NaN
    (cbp #1); here the derivative is 1 / (2 sqrt(|x| + eps)) everywhere, 0 included (at most
    1 / (2 sqrt(eps)) = 5e5 with the default eps), and the value is off by at most
    sqrt(eps) = 1e-6. Any shape; twice differentiable. (Finite differences with a step much
    larger than eps see a smaller slope at exactly 0: the curvature there is 1 / eps^1.5.)
    """
    return _SignedSqrt.apply(x, eps)


def sqrt_normalize(y: Optional[Tensor], eps: float = 1e-12) -> Tensor:
    """F.normalize(signed_sqrt(y, eps), dim=1) in one native pass each way (thesis 3.3.1, the
    sketching heads' post-processing): y (N, D) floating -> (N, D) in y's dtype (half types
    computed in float32). Differentiable once."""
    return _sqrt_normalize(y, float(eps))


class _SignedSqrt(torch.autograd.Function):
    """Autograd through sign(x) would give 0 at x = 0, not the function's slope there."""

    @staticmethod
    def forward(x, eps):
        return torch.sign(x) * (torch.sqrt(x.abs() + eps) - math.sqrt(eps))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.eps = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (2 * torch.sqrt(x.abs() + ctx.eps)), None


# The ops are defined in C++ with their device kernels and autograd
# (csrc/kernel_pooling/kernel_pooling_op.cpp); their fake kernels are here.
_sketch_table = torch.ops.finegrained_ops.sketch_table.default
_kernel_pooling = torch.ops.finegrained_ops.kernel_pooling.default
_kernel_pooling_backward = torch.ops.finegrained_ops.kernel_pooling_backward.default


@torch.library.register_fake("finegrained_ops::sketch_table")
def _(hash_index, hash_sign, sketch_dim):
    order, channels = hash_index.shape
    return hash_index.new_empty((order, 2 * channels + sketch_dim + 1))


def _pooled_width(x, table, alpha, sketch_dim):
    return (0 if alpha is None else 1 + x.shape[2]) + (table.shape[0] - 1) * sketch_dim


@torch.library.register_fake("finegrained_ops::kernel_pooling")
def _(x, table, alpha, sketch_dim, normalize):
    shape = (x.shape[0], _pooled_width(x, table, alpha, sketch_dim))
    return x.new_empty(shape), x.new_empty(shape, dtype=compute_dtype(x.dtype))


@torch.library.register_fake("finegrained_ops::kernel_pooling_backward")
def _(grad, x, table, alpha, blocks, out, sketch_dim, normalize):
    grad_alpha = (torch.empty_like(alpha) if alpha is not None
                  else x.new_empty((0,), dtype=compute_dtype(x.dtype)))
    return torch.empty_like(x), grad_alpha


_sqrt_normalize = torch.ops.finegrained_ops.sqrt_normalize.default


@torch.library.register_fake("finegrained_ops::sqrt_normalize")
def _(y, eps):
    return torch.empty_like(y)


@torch.library.register_fake("finegrained_ops::sqrt_normalize_backward")
def _(grad, y, z, eps):
    return torch.empty_like(y)
