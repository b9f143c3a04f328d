"""Class means, visual similarity between classes, and hierarchical class grouping
(Ouyang et al. 2016, sec. 4.1 and eq. 3)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .._checks import as_labels
from .._optional import require
from .._typing import Labels


def class_means(features: Tensor, labels: Labels, *, num_classes: Optional[int] = None) -> Tensor:
    """(k, D) mean feature of each class. features (N, D) floating; labels (N,) in [0, k).

    k = num_classes (default max(labels) + 1); every class needs a sample. Float64 sums,
    returned in features' dtype.
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError("features must be an (N, D) tensor")
    if not features.is_floating_point():
        raise TypeError(f"features must be floating point, got {features.dtype}")
    labels = as_labels(labels, "labels", features.shape[0])
    if bool(torch.isnan(features).any()):
        raise ValueError("features contain NaN")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.numel() and int(labels.max()) >= k:
        raise ValueError(f"labels must be < num_classes={k}, got max {int(labels.max())}")
    counts = torch.bincount(labels, minlength=k)
    if bool((counts == 0).any()):
        empty = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"classes {empty} have no samples (a class mean needs one)")
    sums = torch.zeros(k, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, labels.to(features.device), features.to(torch.float64))
    return (sums / counts.to(sums.device)[:, None]).to(features.dtype)


def class_similarity(features: Tensor, labels: Labels,
                     *, num_classes: Optional[int] = None) -> Tensor:
    """Sim(a, b) = mean over pairs of <h_a,i, h_b,j> (Ouyang eq. 3), as a (k, k) matrix.

    The double sum factorises: Sim(a, b) = <mean_a, mean_b>, the Gram matrix of class means,
    so it costs O(N·D + k²·D) instead of O(N²·D).
    """
    means = class_means(features, labels, num_classes=num_classes).to(torch.float64)
    return means @ means.T


@dataclass(frozen=True)
class ClassTree:
    """Nested class groups. Level 0 is the root (every class in group 0); level l >= 1 splits
    the classes into group_counts[l - 1] groups, each inside one group of level l - 1.

    assignments[l] is a (k,) int64 tensor: the group of every class at level l.
    """

    assignments: tuple

    @property
    def num_levels(self) -> int:
        return len(self.assignments)

    @property
    def num_classes(self) -> int:
        return int(self.assignments[0].numel())

    def groups(self, level: int) -> list[list[int]]:
        """The classes of each group at `level`, as sorted lists, group 0 first."""
        a = self.assignments[level]
        return [sorted((a == g).nonzero().flatten().tolist()) for g in range(int(a.max()) + 1)]

    def group_of(self, cls: int, level: int) -> int:
        return int(self.assignments[level][cls])

    def parent(self, level: int, group: int) -> int:
        """The group at level - 1 that contains `group` of `level` (level >= 1)."""
        if level < 1:
            raise ValueError("the root (level 0) has no parent")
        member = int((self.assignments[level] == group).nonzero()[0])
        return self.group_of(member, level - 1)

    def children(self, level: int, group: int) -> list[int]:
        """The groups at level + 1 inside `group` of `level`, ascending."""
        if level + 1 >= self.num_levels:
            return []
        inside = self.assignments[level] == group
        return sorted(set(self.assignments[level + 1][inside].tolist()))


def hierarchical_groups(similarity: Tensor, *,
                        group_counts: Sequence[int] = (4, 7, 18)) -> ClassTree:
    """Group classes into nested clusters by visual similarity (Ouyang et al. 4.1).

    similarity: (k, k) symmetric class similarity, e.g. :func:`class_similarity`. Classes are
    clustered by average linkage on the distance between class means that the Gram matrix
    implies, sqrt(S_aa + S_bb - 2 S_ab); cutting one dendrogram at each count makes every
    level refine the one above. group_counts: strictly increasing, each <= k.
    Returns a :class:`ClassTree` with 1 + len(group_counts) levels.
    """
    hierarchy = require("scipy.cluster.hierarchy", "hierarchical_groups")
    squareform = require("scipy.spatial.distance", "hierarchical_groups").squareform
    s = torch.as_tensor(similarity, dtype=torch.float64).cpu()
    if s.dim() != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity must be a square (k, k) matrix, got {tuple(s.shape)}")
    if not torch.allclose(s, s.T, rtol=1e-9, atol=1e-12) or bool(torch.isnan(s).any()):
        raise ValueError("similarity must be symmetric and free of NaN")
    k = s.shape[0]
    counts = list(group_counts)
    if any(not isinstance(c, int) or c < 1 or c > k for c in counts) or counts != sorted(set(counts)):
        raise ValueError(f"group_counts must be strictly increasing ints in [1, k={k}], got "
                         f"{group_counts!r}")
    assignments = [torch.zeros(k, dtype=torch.int64)]
    if counts and k > 1:
        diag = s.diagonal()
        dist = (diag[:, None] + diag[None, :] - 2 * s).clamp_min(0).sqrt().numpy()
        np.fill_diagonal(dist, 0.0)
        tree = hierarchy.linkage(squareform(dist, checks=False), method="average")
        # One cut per count (cuts of one dendrogram are nested by construction); scipy's
        # cut_tree given several counts at once returns a wrong column when one count is k.
        cuts = [hierarchy.cut_tree(tree, n_clusters=[c])[:, 0] for c in counts]
        assignments += [_renumber(torch.from_numpy(cut.astype(np.int64))) for cut in cuts]
    elif counts:  # a single class: every level is one group
        assignments += [torch.zeros(k, dtype=torch.int64) for _ in counts]
    return ClassTree(tuple(assignments))


def _renumber(groups):
    """Number groups by their smallest class, so the numbering does not depend on scipy."""
    order = sorted(set(groups.tolist()), key=lambda g: int((groups == g).nonzero()[0]))
    mapping = {g: i for i, g in enumerate(order)}
    return torch.tensor([mapping[g] for g in groups.tolist()], dtype=torch.int64)
