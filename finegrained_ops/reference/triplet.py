"""Brute-force triplet mining and triplet margin loss (docs/semantics.md §3): the spec in code.

Every (anchor, positive, negative) is formed as a (Q, R, R) cube and filtered by the rule;
memory is cubic, so this is for tests on small batches. Mined triplets come out per
anchor, positives nearest first (ties by index), and for each positive its negatives in
index order: the order the native kernels use.
"""
import math

import torch
import torch.nn.functional as F

RULES = ("violating", "semihard", "hardest", "all")


def pairwise_distances(x, y, squared=True):
    """(Q, R) Euclidean distances from the difference vectors (squared by default)."""
    d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return d if squared else _root(d)


def _root(d):
    """sqrt with gradient 0 at d = 0 (coincident points), as torch.cdist has."""
    positive = d > 0
    return torch.where(positive, torch.where(positive, d, 1.0).sqrt(), 0.0)


def local_positive_count(num_positives, positive_fraction):
    """ceil(f * P) nearest positives are kept (at least one when P > 0)."""
    if num_positives == 0:
        return 0
    return min(num_positives, max(1, math.ceil(positive_fraction * num_positives - 1e-9)))


def candidate_masks(dist, query_labels, query_indices, bank_labels, extra_negative_labels,
                    positive_fraction):
    """(Q, N + E) bool masks of each anchor's kept positives and its negatives.

    dist: (Q, N + E) distances to the bank, then the extra negatives; query_indices: (Q,) each
    anchor's own index in the bank, or -1. Extra negatives are negatives of the anchors whose
    label they carry.
    """
    positive = torch.zeros(dist.shape, dtype=torch.bool)
    bank, d = bank_labels.tolist(), dist.tolist()
    for a, (label, own) in enumerate(zip(query_labels.tolist(), query_indices.tolist())):
        same = [j for j, other in enumerate(bank) if other == label and j != own]
        same.sort(key=lambda j: (d[a][j], j))
        for j in same[:local_positive_count(len(same), positive_fraction)]:
            positive[a, j] = True
    negative = torch.cat([query_labels[:, None] != bank_labels[None, :],
                          query_labels[:, None] == extra_negative_labels[None, :]], dim=1)
    return positive, negative


def mine_candidates(dist, positive, negative, margin, negatives):
    """(anchor, positive, negative) int64 of every mined triplet, in the documented order,
    on dist's device. The reference mines on the CPU whatever the device."""
    device = dist.device
    dist, positive, negative = dist.detach().cpu(), positive.cpu(), negative.cpu()
    if negatives == "hardest":
        positive, negative = _hardest(dist, positive, negative)
    d_ap, d_an = dist[:, :, None], dist[:, None, :]
    hinge = d_ap - d_an + margin
    keep = positive[:, :, None] & negative[:, None, :]
    if negatives == "violating":
        keep &= hinge > 0
    elif negatives == "semihard":
        keep &= (hinge > 0) & (d_an > d_ap)
    a, p, n = keep.nonzero(as_tuple=True)
    # Lexicographic (anchor, d_ap, positive, negative) by stable sorts, last key first.
    order = torch.arange(a.numel())
    for key in (n, p, dist[a, p], a):
        order = order[torch.sort(key[order], stable=True).indices]
    return a[order].to(device), p[order].to(device), n[order].to(device)


def _hardest(dist, positive, negative):
    """The farthest kept positive and nearest negative of each anchor having both."""
    both = positive.any(1) & negative.any(1)
    far = dist.masked_fill(~positive, -math.inf).max(1).indices  # first index among ties
    near = dist.masked_fill(~negative, math.inf).min(1).indices
    rows = torch.arange(dist.shape[0])
    hard_pos = torch.zeros_like(positive)
    hard_neg = torch.zeros_like(negative)
    hard_pos[rows[both], far[both]] = True
    hard_neg[rows[both], near[both]] = True
    return hard_pos, hard_neg


def _prepare(emb, extra, normalize):
    if extra is None:
        extra = emb.new_zeros((0, emb.shape[1]))
    if normalize:
        emb, extra = F.normalize(emb, dim=1), F.normalize(extra, dim=1)
    return emb, extra


def _extra_labels(extra_negative_labels, like):
    if extra_negative_labels is None:
        return like.new_zeros((0,))
    return extra_negative_labels


def mine_from_bank(query_embeddings, query_labels, bank_embeddings, bank_labels, margin=0.2,
                   negatives="violating", positive_fraction=1.0, extra_negatives=None,
                   extra_negative_labels=None, query_indices=None, squared=True, normalize=True):
    """Every triplet (query index, bank index, bank-or-extra index) the rule mines.

    query_indices: (Q,) the bank index of each query, excluded from its positives, or -1.
    """
    query, _ = _prepare(query_embeddings, None, normalize)
    bank, extra = _prepare(bank_embeddings, extra_negatives, normalize)
    if query_indices is None:
        query_indices = torch.full((query.shape[0],), -1, dtype=torch.int64, device=query.device)
    candidates = torch.cat([bank, extra])
    with torch.no_grad():
        dist = pairwise_distances(query, candidates, squared)
    positive, negative = candidate_masks(dist, query_labels, query_indices, bank_labels,
                                         _extra_labels(extra_negative_labels, bank_labels),
                                         positive_fraction)
    return mine_candidates(dist, positive, negative, margin, negatives)


def mine_triplets(emb, labels, margin=0.2, negatives="violating", positive_fraction=1.0,
                  extra_negatives=None, extra_negative_labels=None, squared=True,
                  normalize=True):
    """In-batch mining: every triplet of the batch (a negative index >= B is an extra)."""
    return mine_from_bank(emb, labels, emb, labels, margin, negatives, positive_fraction,
                          extra_negatives, extra_negative_labels,
                          torch.arange(emb.shape[0], device=emb.device), squared, normalize)


def triplet_margin_loss(emb, labels, margin=0.2, negatives="violating", positive_fraction=1.0,
                        extra_negatives=None, extra_negative_labels=None,
                        reduction="mean_nonzero", squared=True, normalize=True):
    """mean / sum of max(0, d(a,p) - d(a,n) + margin) over the mined triplets.

    reduction: 'mean_nonzero' (over triplets with a positive loss), 'mean' (over all mined
    triplets) or 'sum'. No triplet (or none with a positive loss) gives 0. Differentiable
    through autograd w.r.t. emb and extra_negatives.
    """
    a, p, n = mine_triplets(emb, labels, margin, negatives, positive_fraction, extra_negatives,
                            extra_negative_labels, squared, normalize)
    x, extra = _prepare(emb, extra_negatives, normalize)
    candidates = torch.cat([x, extra])

    def dist(i, j):
        d = ((x[i] - candidates[j]) ** 2).sum(-1)
        return d if squared else _root(d)

    losses = F.relu(dist(a, p) - dist(a, n) + margin)
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean_nonzero":
        losses = losses[losses > 0]
    return losses.sum() / max(losses.numel(), 1)
