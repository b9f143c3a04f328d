"""Retrieval metrics: Recall@K, precision@1, MAP@R and mAP (xu2020 Recall@K; the definitions
of pytorch-metric-learning's AccuracyCalculator, whose values they reproduce).

Similarities are computed a chunk of queries at a time (memory O(chunk·N), never N×N), and
only the top k gallery items each metric needs are ranked. Without a gallery, the queries are
retrieved against themselves and each query's own entry is excluded (exclude_self). Queries
with no same-label gallery item ("lone" queries) are left out of every metric, as in PML.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import as_features, as_labels, check_tensor
from .._typing import Labels

METRICS = ("cosine", "euclidean")


def recall_at_k(query: Tensor, query_labels: Labels, gallery: Optional[Tensor] = None,
                gallery_labels: Optional[Labels] = None, *, ks: Sequence[int] = (1, 2, 4, 8),
                exclude_self: bool = True, metric: str = "cosine",
                chunk_size: int = 1024) -> dict[int, float]:
    """Fraction of queries with at least one same-label item among their k nearest neighbours.

    query (Nq, D), query_labels (Nq,); gallery (Ng, D), gallery_labels (Ng,) or None (the
    queries themselves). metric: 'cosine' or 'euclidean'. Returns {k: float}.
    """
    hits = {k: 0 for k in ks}
    total = 0
    retrieval = _Retrieval(query, query_labels, gallery, gallery_labels, exclude_self, metric)
    if any(not isinstance(k, int) or not 1 <= k <= retrieval.max_k for k in ks):
        raise ValueError(f"every k must be an int in [1, {retrieval.max_k}] (the gallery size), "
                         f"got {tuple(ks)}")
    for matches, relevant in retrieval.ranked_matches(max(ks), chunk_size):
        total += len(relevant)
        for k in ks:
            hits[k] += int(matches[:, :k].any(dim=1).sum())
    return {k: hits[k] / _require_queries(total) for k in ks}


def precision_at_1(query: Tensor, query_labels: Labels, gallery: Optional[Tensor] = None,
                   gallery_labels: Optional[Labels] = None, *, exclude_self: bool = True,
                   metric: str = "cosine", chunk_size: int = 1024) -> float:
    """Fraction of queries whose nearest neighbour has their label (= Recall@1). A float."""
    return recall_at_k(query, query_labels, gallery, gallery_labels, ks=(1,),
                       exclude_self=exclude_self, metric=metric, chunk_size=chunk_size)[1]


def map_at_r(query: Tensor, query_labels: Labels, gallery: Optional[Tensor] = None,
             gallery_labels: Optional[Labels] = None, *, exclude_self: bool = True,
             metric: str = "cosine", chunk_size: int = 1024) -> float:
    """MAP@R (Musgrave et al.): for each query with R same-label gallery items,
    (1/R)·sum_{i<=R} P(i)·rel(i) over its R nearest neighbours; the mean over queries."""
    retrieval = _Retrieval(query, query_labels, gallery, gallery_labels, exclude_self, metric)
    return retrieval.average_precision(retrieval.max_relevant, chunk_size, at_r=True)


def mean_average_precision(query: Tensor, query_labels: Labels, gallery: Optional[Tensor] = None,
                           gallery_labels: Optional[Labels] = None, *, exclude_self: bool = True,
                           metric: str = "cosine", chunk_size: int = 1024) -> float:
    """mAP over the full ranking: for each query, sum over its relevant items of the precision
    at their rank, divided by R; the mean over queries. Ranks the whole gallery (a sort per
    query), so it costs more than the other metrics."""
    retrieval = _Retrieval(query, query_labels, gallery, gallery_labels, exclude_self, metric)
    return retrieval.average_precision(retrieval.max_k, chunk_size, at_r=False)


class _Retrieval:
    def __init__(self, query, query_labels, gallery, gallery_labels, exclude_self, metric):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        query = as_features("query", query)
        self.query_labels = as_labels(query_labels, "query_labels", query.shape[0],
                                      query.device)
        self.self_retrieval = gallery is None
        if self.self_retrieval:
            if gallery_labels is not None:
                raise ValueError("gallery_labels given without a gallery")
            gallery, gallery_labels = query, self.query_labels
        gallery = as_features("gallery", gallery)
        if gallery.shape[1] != query.shape[1] or gallery.device != query.device:
            raise ValueError(f"query and gallery must share D and device, got "
                             f"{tuple(query.shape)} on {query.device} and "
                             f"{tuple(gallery.shape)} on {gallery.device}")
        self.gallery_labels = as_labels(gallery_labels, "gallery_labels", gallery.shape[0],
                                        gallery.device)
        self.exclude = self.self_retrieval and exclude_self
        dtype = torch.promote_types(query.dtype, gallery.dtype)
        query, gallery = query.to(dtype), gallery.to(dtype)
        if metric == "cosine":
            self.query, self.gallery = F.normalize(query, dim=1), F.normalize(gallery, dim=1)
            self.gallery_offset = None
        else:  # rank by -|q - g|² = 2 q·g - |g|² - |q|², the last constant within a row
            self.query, self.gallery = query, gallery
            self.gallery_offset = gallery.pow(2).sum(dim=1)
        self.max_k = gallery.shape[0] - int(self.exclude)
        # Same-label gallery items per query, over dense ids (O(N), whatever the label values).
        ids, dense = torch.unique(torch.cat([self.query_labels, self.gallery_labels]),
                                  return_inverse=True)
        nq = len(self.query_labels)
        label_counts = torch.bincount(dense[nq:], minlength=len(ids))
        self.relevant = label_counts[dense[:nq]] - int(self.exclude)
        self.max_relevant = max(int(self.relevant.max()), 1)

    def ranked_matches(self, k, chunk_size):
        """Yields, per chunk of non-lone queries, matches (q, k) bool (the gallery item at each
        rank shares the query's label) and relevant (q,) (same-label gallery items)."""
        for start in range(0, self.query.shape[0], chunk_size):
            stop = min(start + chunk_size, self.query.shape[0])
            sim = self.query[start:stop] @ self.gallery.T
            if self.gallery_offset is not None:
                sim = 2 * sim - self.gallery_offset
            if self.exclude:
                rows = torch.arange(stop - start, device=sim.device)
                sim[rows, rows + start] = float("-inf")
            top = sim.topk(k, dim=1).indices
            matches = self.gallery_labels[top] == self.query_labels[start:stop, None]
            keep = self.relevant[start:stop] > 0
            yield matches[keep], self.relevant[start:stop][keep]

    def average_precision(self, k, chunk_size, at_r):
        total, count = 0.0, 0
        for matches, relevant in self.ranked_matches(k, chunk_size):
            if at_r:  # only the first R ranks of each query count
                rank = torch.arange(1, k + 1, device=matches.device)
                matches = matches & (rank[None, :] <= relevant[:, None])
            total += _sum_of_average_precisions(matches, relevant)
            count += len(relevant)
        return total / _require_queries(count)


def evaluate_ranking(ranking: Tensor, query_labels: Labels, gallery_labels: Labels,
                     *, ks: Sequence[int] = (1, 2, 4, 8),
                     exclude_self: bool = False) -> dict[str, Any]:
    """mAP and Recall@K of rankings computed elsewhere, such as diffusion_rerank's.

    ranking (Nq, Ng) int64: each row a permutation of the gallery's indices, best first;
    query_labels (Nq,), gallery_labels (Ng,). exclude_self: the queries are the gallery
    (Nq = Ng), and item i is dropped from query i's ranking. Queries with no same-label gallery
    item are left out, as in the other metrics. Returns {'mAP': float, 'recall': {k: float}}.
    """
    check_tensor("ranking", ranking, dim=2, dtypes=(torch.int64,))
    nq, ng = ranking.shape
    query_labels = as_labels(query_labels, "query_labels", nq, ranking.device)
    gallery_labels = as_labels(gallery_labels, "gallery_labels", ng, ranking.device)
    if exclude_self and nq != ng:
        raise ValueError(f"exclude_self needs the queries to be the gallery (Nq = Ng), got "
                         f"Nq={nq}, Ng={ng}")
    most = ng - int(exclude_self)
    if any(not isinstance(k, int) or not 1 <= k <= most for k in ks):
        raise ValueError(f"every k must be an int in [1, {most}] (the gallery size"
                         f"{', less the query itself' if exclude_self else ''}), got {tuple(ks)}")
    if not torch.equal(ranking.sort(dim=1).values,
                       torch.arange(ng, device=ranking.device).expand(nq, ng)):
        raise ValueError("every row of ranking must be a permutation of the gallery's indices "
                         f"0..{ng - 1} (mAP needs the whole ranking)")
    if exclude_self:
        itself = ranking == torch.arange(nq, device=ranking.device)[:, None]
        ranking = ranking[~itself].view(nq, ng - 1)
    matches = gallery_labels[ranking] == query_labels[:, None]
    relevant = matches.sum(dim=1)
    keep = relevant > 0
    matches, relevant = matches[keep], relevant[keep]
    count = _require_queries(len(relevant))
    return {"mAP": _sum_of_average_precisions(matches, relevant) / count,
            "recall": {k: int(matches[:, :k].any(dim=1).sum()) / count for k in ks}}


def _sum_of_average_precisions(matches, relevant):
    """Sum over queries of (1/R)·Σ_i P(i)·rel(i), from their ranked matches (q, k) bool and
    their relevant counts R (q,)."""
    rank = torch.arange(1, matches.shape[1] + 1, device=matches.device)
    precision = matches.cumsum(dim=1).double() / rank
    return float(((precision * matches).sum(dim=1) / relevant).sum())


def _require_queries(count):
    if count == 0:
        raise ValueError("no query has a same-label item in the gallery")
    return count
