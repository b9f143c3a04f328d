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
