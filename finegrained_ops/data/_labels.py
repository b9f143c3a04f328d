"""Label checks and per-class index lists shared by the data tools."""
import torch


def as_labels(labels, name="labels", n=None, device="cpu"):
    """labels as a 1-D int64 tensor of class indices >= 0 on `device` (from a tensor, array or
    sequence); n, when given, is the number of samples they must label."""
    t = torch.as_tensor(labels)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got {t.dtype}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} entries but there are {n} samples")
    t = t.to(device=device, dtype=torch.int64)
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be >= 0, got min {int(t.min())}")
    return t


def indices_by_class(labels):
    """[indices of class c, ascending] for c = 0..max(labels) (empty for absent classes)."""
    order = torch.sort(labels, stable=True).indices
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1 if labels.numel() else 0)
    return list(torch.split(order, counts.tolist()))


def make_generator(seed):
    return torch.Generator().manual_seed(int(seed))
