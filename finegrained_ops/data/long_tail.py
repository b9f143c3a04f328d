"""Long-tailed class profiles and seeded subsets (thesis 5.4.1, 4.2.2; Ouyang et al. 3.3.3).

Every subset function returns a sorted int64 index tensor into `labels`; the same seed gives
the same subset, and no class ever contributes more samples than it has.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._checks import as_labels, check_int, check_number, make_generator
from .._typing import Counts, Labels
from ._labels import indices_by_class


def long_tailed_counts(num_classes: int, n_max: int, imbalance_factor: float) -> Tensor:
    """Per-class counts n_i = floor(n_max · μ^i), μ = (1 / imbalance_factor)^(1 / (C - 1)).

    The long-tailed CIFAR profile (thesis 5.4.1): class 0 keeps n_max samples and the last
    class n_max / imbalance_factor (floored), so imbalance_factor(counts) equals the requested
    factor up to that rounding. Returns (num_classes,) int64.
    """
    check_int("num_classes", num_classes)
    check_int("n_max", n_max)
    _check_factor(imbalance_factor)
    if n_max / imbalance_factor < 1:
        raise ValueError(f"n_max / imbalance_factor = {n_max / imbalance_factor:.3g} < 1 would "
                         "leave the smallest class empty")
    exponent = torch.arange(num_classes, dtype=torch.float64) / max(num_classes - 1, 1)
    counts = n_max * torch.pow(torch.tensor(1.0 / imbalance_factor, dtype=torch.float64), exponent)
    return torch.floor(counts + 1e-9).to(torch.int64)  # 1e-9: 500·0.01 must stay 5, not 4


def imbalance_factor(counts: Counts) -> float:
    """Largest class count over the smallest (thesis 5.4.1). counts: (C,), all > 0. A float."""
    c = torch.as_tensor(counts)
    if c.dim() != 1 or c.numel() == 0:
        raise ValueError(f"counts must be a non-empty 1-D sequence, got shape {tuple(c.shape)}")
    if bool((c <= 0).any()):
        raise ValueError(f"every class needs a sample (counts > 0), got {c.tolist()}")
    return float(c.max()) / float(c.min())


def long_tailed_subset(labels: Labels, imbalance_factor: float, *, seed: int = 0,
                       n_max: Optional[int] = None) -> Tensor:
    """Indices of a long-tailed subset: class i keeps min(n_i, its size) random samples, with
    n_i from :func:`long_tailed_counts` (n_max defaults to the largest class's size).

    labels: (N,) class indices 0..C-1, class 0 the head. Returns sorted (M,) int64.
    """
    labels = as_labels(labels)
    groups = indices_by_class(labels)
    if n_max is None:
        n_max = max(len(g) for g in groups)
    counts = long_tailed_counts(len(groups), n_max, imbalance_factor)
    return _sample_per_class(groups, counts.tolist(), seed)


def pseudo_uniform_subset(labels: Labels, n_max: int, *, seed: int = 0) -> Tensor:
    """Indices keeping at most n_max random samples of every class (Ouyang et al. 3.3.3):
    classes larger than n_max are sampled down, smaller ones are untouched. Sorted (M,) int64.
    """
    labels = as_labels(labels)
    check_int("n_max", n_max)
    groups = indices_by_class(labels)
    return _sample_per_class(groups, [n_max] * len(groups), seed)


def balanced_subset(labels: Labels, per_class: int, *, seed: int = 0) -> Tensor:
    """Indices of per_class random samples of every class (all of a class that has fewer):
    the balanced set of stage-2 fine-tuning (thesis 4.2.2). Sorted (M,) int64."""
    labels = as_labels(labels)
    check_int("per_class", per_class)
    groups = indices_by_class(labels)
    return _sample_per_class(groups, [per_class] * len(groups), seed)


def _sample_per_class(groups, wanted, seed):
    generator = make_generator(seed)
    chosen = []
    for members, n in zip(groups, wanted):
        pick = torch.randperm(len(members), generator=generator)[:min(n, len(members))]
        chosen.append(members[pick])
    return torch.sort(torch.cat(chosen)).values if chosen else torch.empty(0, dtype=torch.int64)


def _check_factor(factor):
    check_number("imbalance_factor", factor, low=1)
