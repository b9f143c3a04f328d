"""Per-class index lists shared by the data tools and the recipes."""
import torch


def indices_by_class(labels):
    """[indices of class c, ascending] for c = 0..max(labels) (empty for absent classes)."""
    order = torch.sort(labels, stable=True).indices
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1 if labels.numel() else 0)
    return list(torch.split(order, counts.tolist()))
