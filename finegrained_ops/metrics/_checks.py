"""Argument checks shared by the metrics."""
import torch


def as_features(name, x):
    """A floating (N, D) tensor without NaN, or a clear error."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() != 2:
        raise ValueError(f"{name} must be (N, D), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if bool(torch.isnan(x).any()):
        raise ValueError(f"{name} contains NaN")
    return x


def as_class_labels(name, labels, n, device=None):
    """(n,) int64 class indices >= 0 matching n rows, or a clear error."""
    t = torch.as_tensor(labels, device=device)
    if t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be a 1-D integer tensor, got {t.dtype} {tuple(t.shape)}")
    if t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} entries but there are {n} samples")
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be >= 0, got min {int(t.min())}")
    return t.to(torch.int64)
