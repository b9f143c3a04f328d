"""Dataset granularity measures (thesis 6.2.3, eq. 6.1-6.5): how fine-grained a labelled
feature set is. RS, RSM, Rank and RankM grow with granularity (harder data); the Silhouette
index is the classic separation score (it grows as classes separate, and is scikit-learn's).

All distances are computed a chunk of samples at a time: RSM and RankM cost O(n·k) (plus
O(sum n_c²) for the medoids), RS and Silhouette O(n²), Rank O(n² log n).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._checks import as_features, as_labels
from .._numerics import l2_normalize
from .._typing import Labels

MEASURES = ("rankm", "rank", "rs", "rsm", "silhouette")
DISTANCES = ("euclidean", "cosine")


def granularity(features: Tensor, labels: Labels, *, measure: str = "rankm",
                metric: str = "euclidean", normalize: bool = True,
                chunk_size: int = 1024) -> float:
    """Granularity of a labelled data set.

    features (n, D) floating; labels (n,) class indices (k >= 2 classes present).
    measure: 'rankm' | 'rank' | 'rs' | 'rsm' | 'silhouette'. metric: 'euclidean' or 'cosine'
    (1 - cosine similarity). normalize: L2-normalise features first. Returns a float. RS and
    RSM average the ratios a / b of a sample's distance to its own class and to the nearest
    other one, with 0 / 0 = 1 (classes that coincide); a sample on another class (b = 0 < a)
    makes them infinite, a ValueError.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    if metric not in DISTANCES:
        raise ValueError(f"metric must be one of {DISTANCES}, got {metric!r}")
    x = as_features("features", features).to(torch.float64)
    y = as_labels(labels, "labels", x.shape[0], x.device)
    _, y = torch.unique(y, return_inverse=True)  # classes 0..k-1
    counts = torch.bincount(y)
    if len(counts) < 2:
        raise ValueError("granularity needs at least 2 classes")
    if normalize or metric == "cosine":
        x = l2_normalize(x, dim=1)
    dist = _distance_fn(metric)
    if measure in ("rs", "rank") and bool((counts < 2).any()):
        raise ValueError(f"measure {measure!r} needs at least 2 samples in every class")
    if measure in ("rsm", "rankm"):
        return _medoid_measure(x, y, counts, dist, measure, chunk_size)
    if measure == "rank":
        return _rank(x, y, counts, dist, chunk_size)
    return _silhouette_like(x, y, counts, dist, measure, chunk_size)


def class_medoids(features: Tensor, labels: Labels, *, metric: str = "euclidean",
                  chunk_size: int = 1024) -> Tensor:
    """(k, D) medoid of each class: its sample with the least total distance to the class.

    features (n, D) floating; labels must be 0..k-1 with every class present; metric
    'euclidean' or 'cosine' (1 - cosine similarity, of any rows). Returns rows of features."""
    x = as_features("features", features)
    y = as_labels(labels, "labels", x.shape[0], x.device)
    return x[_medoid_indices(x, y, _distance_fn(metric), chunk_size)]


def _distance_fn(metric):
    if metric not in DISTANCES:
        raise ValueError(f"metric must be one of {DISTANCES}, got {metric!r}")
    if metric == "cosine":
        return lambda a, b: (1 - l2_normalize(a, dim=1) @ l2_normalize(b, dim=1).T).clamp_min(0)
    return lambda a, b: torch.cdist(a, b)


def _ratio(a, b, measure):
    """a / b of RS and RSM, with 0 / 0 = 1 (a sample as near another class as its own: the
    classes coincide there); a > 0 over b = 0 is infinite, and refused."""
    if bool(((b == 0) & (a > 0)).any()):
        raise ValueError(f"features: measure {measure!r} is infinite, a sample lies on another "
                         "class's " + ("medoid" if measure == "rsm" else "samples")
                         + " (distance 0) but not on its own class's")
    return torch.where(b > 0, a / torch.where(b > 0, b, torch.ones_like(b)), torch.ones_like(a))


def _medoid_indices(x, y, dist, chunk_size):
    medoids = []
    for c in range(int(y.max()) + 1):
        members = (y == c).nonzero().flatten()
        if len(members) == 0:
            raise ValueError(f"class {c} has no samples")
        xc = x[members]
        totals = torch.cat([dist(xc[s:s + chunk_size], xc).sum(dim=1)
                            for s in range(0, len(xc), chunk_size)])
        medoids.append(members[int(totals.argmin())])
    return torch.stack(medoids)


def _medoid_measure(x, y, counts, dist, measure, chunk_size):
    medoids = x[_medoid_indices(x, y, dist, chunk_size)]
    k = len(counts)
    total = 0.0
    for s in range(0, len(x), chunk_size):
        d = dist(x[s:s + chunk_size], medoids)                      # (chunk, k)
        own = d.gather(1, y[s:s + chunk_size, None]).squeeze(1)
        if measure == "rsm":
            other = d.scatter(1, y[s:s + chunk_size, None], float("inf")).min(dim=1).values
            total += float(_ratio(own, other, measure).sum())
        else:  # rank of the own medoid among all medoids, 1 = nearest
            rank = 1 + (d < own[:, None]).sum(dim=1)
            total += float((k / (k - 1) * (1 - 1 / rank.double())).sum())
    return total / len(x)


def _class_mean_distances(x, y, counts, dist, chunk_size):
    """Yields (rows, a, b): mean distance of each sample to the rest of its class, and to the
    nearest other class (mean over that class's samples)."""
    k = len(counts)
    for s in range(0, len(x), chunk_size):
        rows = torch.arange(s, min(s + chunk_size, len(x)), device=x.device)
        d = dist(x[rows], x)                                         # (chunk, n)
        sums = torch.zeros(len(rows), k, dtype=d.dtype, device=d.device).index_add_(1, y, d)
        own = y[rows]
        own_count = counts[own].to(d.dtype)
        a = sums.gather(1, own[:, None]).squeeze(1) / (own_count - 1).clamp_min(1)
        means = sums / counts.to(d.dtype)
        b = means.scatter(1, own[:, None], float("inf")).min(dim=1).values
        yield rows, a, b


def _silhouette_like(x, y, counts, dist, measure, chunk_size):
    total = 0.0
    for rows, a, b in _class_mean_distances(x, y, counts, dist, chunk_size):
        if measure == "rs":
            total += float(_ratio(a, b, measure).sum())
        else:  # scikit-learn: s = (b - a) / max(a, b), and 0 for a sample alone in its class
            s = (b - a) / torch.maximum(a, b)
            s = torch.where(counts[y[rows]] > 1, torch.nan_to_num(s), torch.zeros_like(s))
            total += float(s.sum())
    return total / len(x)


def _rank(x, y, counts, dist, chunk_size):
    n = len(x)
    total = 0.0
    for s in range(0, n, chunk_size):
        rows = torch.arange(s, min(s + chunk_size, n), device=x.device)
        d = dist(x[rows], x)
        d[torch.arange(len(rows)), rows] = float("inf")                # the sample itself
        order = d.argsort(dim=1, stable=True)[:, :n - 1]                # the n - 1 others
        same = (y[order] == y[rows, None]).double()
        ranks = torch.arange(1, n, dtype=torch.float64, device=x.device)
        relevant = counts[y[rows]].double() - 1
        ap = (same.cumsum(dim=1) * same / ranks).sum(dim=1) / relevant  # mean of j / R_ij
        total += float((n / (n - 1) * (1 - ap)).sum())
    return total / n
