"""The contrastive (siamese) loss over the pairs of a batch (docs/semantics.md §6; Hadsell,
Chopra & LeCun, CVPR'06, DrLIM; Radenović et al.'s squared form for retrieval)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import (FLOATING, check_choice, check_labels, check_number, check_same_device,
                       check_tensor, compute_dtype)

REDUCTIONS = ("mean_nonzero", "mean", "sum")


def contrastive_loss(embeddings: Tensor, labels: Tensor, *, pos_margin: float = 0.0,
                     neg_margin: float = 1.0, squared: bool = False, negatives: str = "all",
                     normalize: bool = True, reduction: str = "mean_nonzero") -> Tensor:
    """Pulls same-label pairs within pos_margin and pushes different-label pairs beyond
    neg_margin, over every ordered pair (i, j), i != j, of the batch:

        positive pair: max(0, d_ij - pos_margin)^e      negative pair: max(0, neg_margin - d_ij)^e

    with d the Euclidean distance of the (L2-normalised, when normalize) embeddings and e = 2 if
    squared else 1. squared=True, pos_margin=0 is Radenović et al.'s y d^2 + (1 - y)
    max(0, m - d)^2; the defaults equal pytorch-metric-learning's ContrastiveLoss.

    Args:
        embeddings: (B, D) float16/bfloat16/float32/float64 (half types computed in float32,
            as every op here). labels: (B,) int64 on the embeddings' device, any values (the
            triplet loss's labels).
        negatives: 'all', or 'hardest' (each anchor's nearest negative only).
        reduction: 'mean_nonzero' (PML's default: the positive and the negative terms each
            averaged over their non-zero pairs, then added) | 'mean' (over all the pairs
            counted) | 'sum'.

    Returns: 0-dim, in embeddings' dtype; 0 when the batch has no pair of either kind.
    """
    check_tensor("embeddings", embeddings, dim=2, dtypes=FLOATING)
    check_labels("labels", labels, len(embeddings))
    check_same_device(embeddings=embeddings, labels=labels)
    check_arguments(pos_margin, neg_margin, negatives, reduction)
    x = embeddings.to(compute_dtype(embeddings.dtype))  # cdist has no half kernels
    x = F.normalize(x, dim=1) if normalize else x
    dist = torch.cdist(x, x)
    same = labels[:, None] == labels[None, :]
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=x.device)
    positive, negative = same & not_self, ~same
    if negatives == "hardest":
        masked = dist.masked_fill(~negative, float("inf"))
        nearest = masked.argmin(dim=1, keepdim=True)
        has_negative = negative.any(dim=1, keepdim=True)
        negative = torch.zeros_like(negative).scatter_(1, nearest, True) & has_negative
    power = 2 if squared else 1
    pos_terms = F.relu(dist[positive] - pos_margin).pow(power)
    neg_terms = F.relu(neg_margin - dist[negative]).pow(power)
    if reduction == "sum":
        loss = pos_terms.sum() + neg_terms.sum()
    elif reduction == "mean":
        count = pos_terms.numel() + neg_terms.numel()
        loss = (pos_terms.sum() + neg_terms.sum()) / max(count, 1)
    else:
        loss = _mean_nonzero(pos_terms) + _mean_nonzero(neg_terms)
    return loss.to(embeddings.dtype)


def check_arguments(pos_margin, neg_margin, negatives, reduction):
    """The hyperparameters of contrastive_loss (nn.ContrastiveLoss checks them when built)."""
    check_number("pos_margin", pos_margin)
    check_number("neg_margin", neg_margin)
    check_choice("negatives", negatives, ("all", "hardest"))
    check_choice("reduction", reduction, REDUCTIONS)


def _mean_nonzero(terms):
    nonzero = (terms > 0).sum()
    return terms.sum() / nonzero.clamp(min=1)
