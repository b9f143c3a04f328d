"""Domain similarity by the Earth Mover's Distance between class-mean features (thesis 4.3,
eq. 4.1-4.3), and greedy source-class selection for transfer learning (thesis 4.3.2)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import as_features, as_labels, check_number
from .._optional import require
from .._typing import Labels
from ..data.class_grouping import class_means

DEFAULT_EMD_SCALE = 0.01


def domain_distance(source_features: Tensor, source_labels: Labels, target_features: Tensor,
                    target_labels: Labels) -> float:
    """EMD between the domains' class means, each class weighted by its share of the domain's
    images (eq. 4.3), with Euclidean ground distance; solved exactly by POT's ``ot.emd2``.

    source_features (Ns, D), source_labels (Ns,) in [0, m); target likewise with n classes;
    every class needs a sample. Returns a float.
    """
    (ms, ws), (mt, wt) = (_weighted_means("source", source_features, source_labels),
                          _weighted_means("target", target_features, target_labels))
    if ms.shape[1] != mt.shape[1]:
        raise ValueError(f"source and target features must share D, got {ms.shape[1]} and "
                         f"{mt.shape[1]}")
    ot = require("ot", "domain_distance")
    cost = torch.cdist(ms, mt.to(ms.device)).cpu().numpy()
    return float(ot.emd2(ws.cpu().numpy(), wt.cpu().numpy(), cost))


def domain_similarity(source_features: Tensor, source_labels: Labels, target_features: Tensor,
                      target_labels: Labels, *, emd_scale: float = DEFAULT_EMD_SCALE) -> float:
    """exp(-γ · domain_distance) (eq. 4.2), γ = emd_scale > 0; the default 0.01 is the
    thesis's, for all its experiments. A float in (0, 1]."""
    _check_emd_scale(emd_scale)
    return math.exp(-emd_scale * domain_distance(source_features, source_labels,
                                                 target_features, target_labels))


def rank_source_classes(source_features: Tensor, source_labels: Labels, target_features: Tensor,
                        target_labels: Labels, *, emd_scale: float = DEFAULT_EMD_SCALE) -> Tensor:
    """Similarity of each source class alone, {(s_i, 1)}, to the target domain (thesis 4.3.2).

    A single source point moves all its mass to every target class: its EMD is the
    target-weighted mean distance sum_j w_tj ‖g(s_i) - g(t_j)‖; emd_scale as in
    :func:`domain_similarity`. Returns (m,) float64.
    """
    _check_emd_scale(emd_scale)
    (ms, _), (mt, wt) = (_weighted_means("source", source_features, source_labels),
                         _weighted_means("target", target_features, target_labels))
    return torch.exp(-emd_scale * (torch.cdist(ms, mt.to(ms.device)) @ wt.to(ms.device)))


def select_source_classes(source_features: Tensor, source_labels: Labels, target_features: Tensor,
                          target_labels: Labels, k: int,
                          *, emd_scale: float = DEFAULT_EMD_SCALE) -> Tensor:
    """The k source classes most similar to the target, most similar first (greedy top-k of
    :func:`rank_source_classes`, thesis 4.3.2). Returns (k,) int64 class indices."""
    sims = rank_source_classes(source_features, source_labels, target_features, target_labels,
                               emd_scale=emd_scale)
    if not (isinstance(k, int) and 1 <= k <= len(sims)):
        raise ValueError(f"k must be an int in [1, {len(sims)}] (source classes), got {k!r}")
    return torch.sort(sims, descending=True, stable=True).indices[:k]


def _weighted_means(name, features, labels):
    x = as_features(f"{name}_features", features).to(torch.float64)
    y = as_labels(labels, f"{name}_labels", x.shape[0], x.device)
    counts = torch.bincount(y).to(torch.float64)
    return class_means(x, y), counts / counts.sum()


def _check_emd_scale(emd_scale):
    check_number("emd_scale", emd_scale, low=0, low_open=True)
