"""Per-class index lists shared by the data tools and the recipes. Both cost O(N log N) in the
number of labels, whatever their values: sparse ids (a label of 2e6) cost no per-id tensor."""
import torch


def class_members(labels):
    """(classes, groups): the distinct labels of (N,) int64 `labels`, ascending, as a list of
    ints, and the indices of each, ascending."""
    order = torch.sort(labels, stable=True).indices
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    return classes.tolist(), list(torch.split(order, counts.tolist()))


def indices_by_class(labels):
    """[indices of class c, ascending] for c = 0..max(labels), for the callers whose classes
    are the ids 0..C-1 (absent ids share one empty tensor)."""
    classes, groups = class_members(labels)
    if not classes:
        return []
    by_class = [labels.new_empty(0)] * (classes[-1] + 1)
    for c, members in zip(classes, groups):
        by_class[c] = members
    return by_class
