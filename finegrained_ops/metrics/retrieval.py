"""Retrieval metrics: Recall@K, precision@1, MAP@R and mAP (xu2020 Recall@K; the definitions
of pytorch-metric-learning's AccuracyCalculator, whose values they reproduce).

Similarities are computed a chunk of queries at a time (memory O(chunk·N), never N×N), and
only the top k gallery items each metric needs are ranked. Without a gallery, the queries are
retrieved against themselves and each query's own entry is excluded (exclude_self). Queries
with no same-label gallery item ("lone" queries) are left out of every metric, as in PML.
"""
import torch
import torch.nn.functional as F

from .._checks import as_features, as_labels

METRICS = ("cosine", "euclidean")


def recall_at_k(query, query_labels, gallery=None, gallery_labels=None, ks=(1, 2, 4, 8),
                exclude_self=True, metric="cosine", chunk_size=1024):
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
    return {k: hits[k] / retrieval.require_queries(total) for k in ks}


def precision_at_1(query, query_labels, gallery=None, gallery_labels=None, exclude_self=True,
                   metric="cosine", chunk_size=1024):
    """Fraction of queries whose nearest neighbour has their label (= Recall@1). A float."""
    return recall_at_k(query, query_labels, gallery, gallery_labels, (1,), exclude_self, metric,
                       chunk_size)[1]


def map_at_r(query, query_labels, gallery=None, gallery_labels=None, exclude_self=True,
             metric="cosine", chunk_size=1024):
    """MAP@R (Musgrave et al.): for each query with R same-label gallery items,
    (1/R)·sum_{i<=R} P(i)·rel(i) over its R nearest neighbours; the mean over queries."""
    retrieval = _Retrieval(query, query_labels, gallery, gallery_labels, exclude_self, metric)
    return retrieval.average_precision(retrieval.max_relevant, chunk_size, at_r=True)


def mean_average_precision(query, query_labels, gallery=None, gallery_labels=None,
                           exclude_self=True, metric="cosine", chunk_size=1024):
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
        label_counts = torch.bincount(self.gallery_labels,
                                      minlength=int(self.query_labels.max()) + 1)
        self.relevant = label_counts[self.query_labels.clamp_max(len(label_counts) - 1)]
        self.relevant = torch.where(self.query_labels < len(label_counts), self.relevant, 0)
        self.relevant = self.relevant - int(self.exclude)
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
            rank = torch.arange(1, k + 1, device=matches.device)
            if at_r:  # only the first R ranks of each query count
                matches = matches & (rank[None, :] <= relevant[:, None])
            precision = matches.cumsum(dim=1).double() / rank
            total += float(((precision * matches).sum(dim=1) / relevant).sum())
            count += len(relevant)
        return total / self.require_queries(count)

    @staticmethod
    def require_queries(count):
        if count == 0:
            raise ValueError("no query has a same-label item in the gallery")
        return count
