"""Reference contrastive loss (docs/semantics.md §6; Hadsell, Chopra & LeCun's DrLIM loss over
every ordered pair of a batch): a loop over the pairs, each term written as the definition
states it. retrieval.contrastive_loss computes the same with masks over the distance matrix."""
import torch


def contrastive_loss(embeddings, labels, pos_margin=0.0, neg_margin=1.0, squared=False,
                     negatives="all", normalize=True, reduction="mean_nonzero"):
    """Same contract as :func:`finegrained_ops.retrieval.contrastive_loss` for float32/float64
    embeddings (B, D) and labels (B,)."""
    x = embeddings / embeddings.norm(dim=1, keepdim=True) if normalize else embeddings
    labels = torch.as_tensor(labels).tolist()
    b, power = len(labels), 2 if squared else 1
    pos_terms, neg_terms = [], []
    for i in range(b):
        # vector_norm: its gradient at d = 0 (coinciding embeddings) is 0, as cdist's
        distances = [torch.linalg.vector_norm(x[i] - x[j]) for j in range(b)]
        negative_ids = [j for j in range(b) if labels[j] != labels[i]]
        if negatives == "hardest" and negative_ids:
            nearest = min(negative_ids, key=lambda j: (distances[j].item(), j))
            negative_ids = [nearest]
        for j in range(b):
            if j != i and labels[j] == labels[i]:
                pos_terms.append(torch.clamp(distances[j] - pos_margin, min=0) ** power)
        for j in negative_ids:
            neg_terms.append(torch.clamp(neg_margin - distances[j], min=0) ** power)
    zero = x.sum() * 0
    pos = torch.stack(pos_terms) if pos_terms else zero[None][:0]
    neg = torch.stack(neg_terms) if neg_terms else zero[None][:0]
    if reduction == "sum":
        return zero + pos.sum() + neg.sum()
    if reduction == "mean":
        return zero + (pos.sum() + neg.sum()) / max(len(pos_terms) + len(neg_terms), 1)
    return zero + _mean_nonzero(pos) + _mean_nonzero(neg)


def _mean_nonzero(terms):
    """The mean over the terms with a positive loss (0 if none)."""
    nonzero = int((terms > 0).sum())
    return terms.sum() / max(nonzero, 1)
