"""Norms that hold over the whole floating range (docs/semantics.md §1, floating point).

A float32 sum of squares overflows above |x| ~ 1e19 and underflows below ~1e-19, so
F.normalize of a row of 1e30s is 0 and of 1e-30s is not a unit vector. Here the largest
magnitude m of each slice is factored out first: ||x|| = m ||x / m||. The norm is homogeneous,
so with m detached the values and the gradients are the plain formula's wherever that one is
finite. Pure PyTorch.
"""
import torch
import torch.nn.functional as F


def magnitude(x, dim):
    """The largest |x| along dim (kept), detached, with 1 where it is 0: a safe divisor."""
    m = x.detach().abs().amax(dim=dim, keepdim=True)
    return torch.where(m > 0, m, torch.ones_like(m))


def l2_norm(x, dim):
    """||x|| along dim (kept) without overflow or underflow."""
    m = magnitude(x, dim)
    return m * (x / m).norm(dim=dim, keepdim=True)


def l2_normalize(x, dim=1):
    """F.normalize(x, dim) for any magnitude: unit slices, zero slices stay zero."""
    return F.normalize(x / magnitude(x, dim), dim=dim)
