"""Batched hard-negative triplet mining and the fused triplet margin loss (docs/semantics.md §3).

The loss never forms the triplet set: the native forward sorts each anchor's (few)
positives by distance, finds for every negative the range of positives it forms a mined
triplet with (binary search), and accumulates the loss and the weights of every
anchor-candidate distance; the gradient of the embeddings is that B x (B + E) weight matrix
times the embeddings (GEMM). Memory is O(B^2), time O(B^2 D + B^2 log P) whatever the
number of triplets.

Mined triplets are listed per anchor, positives nearest first (ties by index), and for each
positive its negatives in index order. A negative index >= B refers to
``extra_negatives[index - B]``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._checks import (FLOATING, as_float, check_choice, check_int, check_labels, check_number,
                       check_tensor)
from .._native import _C, check_devices

NEGATIVES = tuple(_C.choices["triplet.negatives"])  # the names the native code parses
REDUCTIONS = tuple(_C.choices["triplet.reduction"])


def triplet_margin_loss(embeddings: Tensor, labels: Tensor, *, margin: float = 0.2,
                        negatives: str = "violating", positive_fraction: float = 1.0,
                        extra_negatives: Optional[Tensor] = None,
                        extra_negative_labels: Optional[Tensor] = None,
                        reduction: str = "mean_nonzero", squared: bool = True,
                        normalize: bool = True) -> Tensor:
    """Fused in-batch mining + triplet margin loss max(0, d(a,p) - d(a,n) + margin).

    Args:
        embeddings: (B, D) float16/bfloat16/float32/float64 embeddings (half types read as they are
            and computed in float32).
        labels: (B,) int64 class labels.
        margin: >= 0; the default 0.2 is the thesis's (§2.5, Cui et al. 2016).
        negatives: which negatives each (anchor, positive) pair uses: 'violating' (loss > 0),
            'semihard' (d(a,p) < d(a,n) and loss > 0), 'hardest' (batch-hard: farthest
            positive, nearest negative per anchor) or 'all'.
        positive_fraction: in (0, 1]; each anchor keeps its ceil(f * (n_a - 1)) nearest
            same-class samples as positives (local positives; the paper uses 0.6).
        extra_negatives: (E, D) additional negatives (e.g. human-marked false positives),
            each a negative only for anchors of the class in ``extra_negative_labels`` (E,).
        reduction: 'mean_nonzero' (mean over triplets with positive loss; with the defaults
            this equals pytorch-metric-learning's TripletMarginLoss with
            LpDistance(power=2)), 'mean' (over all mined triplets) or 'sum'.
        squared: squared Euclidean distances (the paper's eq. 2.1) or plain ones.
        normalize: L2-normalise embeddings (and extra negatives) first.

    Returns:
        0-dim tensor in embeddings's dtype (float32 under autocast, as torch's losses); 0 (with a
        zero gradient) when no triplet counts.
        Differentiable once w.r.t. embeddings and extra_negatives.
    """
    check_tensor("embeddings", embeddings, dim=2)
    extra, extra_labels = _extras(embeddings, labels, extra_negatives, extra_negative_labels)
    compute_grad = torch.is_grad_enabled() and (embeddings.requires_grad or extra.requires_grad)
    return _triplet_margin_loss(embeddings, labels, extra, extra_labels,
                                as_float("margin", margin), negatives,
                                as_float("positive_fraction", positive_fraction), reduction,
                                bool(squared), bool(normalize), compute_grad)[0]


def mine_triplets(embeddings: Tensor, labels: Tensor, *, margin: float = 0.2,
                  negatives: str = "violating", positive_fraction: float = 1.0,
                  extra_negatives: Optional[Tensor] = None,
                  extra_negative_labels: Optional[Tensor] = None,
                  max_triplets: Optional[int] = None, generator: Optional[torch.Generator] = None,
                  squared: bool = True, normalize: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The triplets the loss would use, as (anchor, positive, negative) int64 index tensors.

    Arguments as in :func:`triplet_margin_loss`. max_triplets: when more triplets are mined,
    keep a uniform random subset of this size (without replacement, drawn natively from a seed
    taken from ``generator``, or from the global RNG when it is None), still in the documented
    order; the full set is never materialised.
    Returns three (T,) int64 tensors on embeddings's device; a negative index >= B is an extra.
    """
    with torch.no_grad():
        problem = _in_batch_problem(embeddings, labels, margin, negatives, positive_fraction,
                                    extra_negatives, extra_negative_labels, squared, normalize)
        if max_triplets is not None:
            check_int("max_triplets", max_triplets)
        seed = _draw_seed(generator) if max_triplets is not None else 0
        return _triplet_mine(*problem, -1 if max_triplets is None else max_triplets, -1, seed, 0)


def count_triplets(embeddings: Tensor, labels: Tensor, *, margin: float = 0.2,
                   negatives: str = "violating", positive_fraction: float = 1.0,
                   extra_negatives: Optional[Tensor] = None,
                   extra_negative_labels: Optional[Tensor] = None, squared: bool = True,
                   normalize: bool = True) -> Tensor:
    """How many triplets each anchor mines, without forming them: (B,) int64 on embeddings'
    device.

    Arguments as in :func:`triplet_margin_loss`. The counts are those of :func:`mine_triplets`
    (their sum is its length): e.g. to log how many triplets still violate the margin.
    """
    with torch.no_grad():
        return _triplet_count(*_in_batch_problem(embeddings, labels, margin, negatives,
                                                 positive_fraction, extra_negatives,
                                                 extra_negative_labels, squared, normalize))


def _in_batch_problem(embeddings, labels, margin, negatives, positive_fraction, extra,
                      extra_labels, squared, normalize):
    """The arguments of the native count and mining passes for in-batch mining: the batch is
    both the queries (each its own index in the bank) and the bank."""
    x, labels, extra, extra_labels = _prepare(embeddings, labels, margin, negatives,
                                              positive_fraction, extra, extra_labels)
    # In-batch: the same tensor as queries and bank, query_indices None (anchor a is row a), and
    # at most B - 1 positives per anchor (max_positives -1: the bank's size).
    return (x, labels, None, x, labels, extra, extra_labels,
            float(margin), negatives, float(positive_fraction), bool(squared), bool(normalize), -1)


def mine_from_bank(query_embeddings: Tensor, query_labels: Tensor, bank_embeddings: Tensor,
                   bank_labels: Tensor,
                   *, per_anchor: Optional[int] = 1, margin: float = 0.2,
                   negatives: str = "violating", positive_fraction: float = 1.0,
                   extra_negatives: Optional[Tensor] = None,
                   extra_negative_labels: Optional[Tensor] = None,
                   query_indices: Optional[Tensor] = None, chunk_size: Optional[int] = None,
                   generator: Optional[torch.Generator] = None, squared: bool = True,
                   normalize: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Mine triplets of each query against a whole feature bank (quasi-online sampling).

    The queries are processed in chunks, so memory is O(chunk_size * (N + E)).

    Args:
        query_embeddings: (Q, D) anchors; query_labels: (Q,) int64.
        bank_embeddings: (N, D) positives and negatives; bank_labels: (N,) int64.
        per_anchor: int >= 1: up to this many triplets per query, drawn uniformly without
            replacement among its mined triplets (seeded from ``generator``; the draw of a
            query depends only on the seed and its index, not on chunk_size). None: all.
        query_indices: (Q,) int64 bank index of each query (excluded from its positives) or
            -1; defaults to arange(Q) when ``query_embeddings is bank_embeddings``, else to -1.
        chunk_size: queries per chunk; the default keeps a chunk's distance matrix near 16M
            entries on the CPU and 64M on CUDA (enough anchors, one warp each, to fill a GPU).
        Other arguments as in :func:`triplet_margin_loss`.

    Returns:
        (query index, bank index, negative index) int64, a negative index >= N being an extra.
    """
    with torch.no_grad():
        self_retrieval = query_embeddings is bank_embeddings
        bank, bank_labels, extra, extra_labels = _prepare(
            bank_embeddings, bank_labels, margin, negatives, positive_fraction, extra_negatives,
            extra_negative_labels, name="bank_embeddings")
        query, query_labels, _, _ = _prepare(query_embeddings, query_labels, margin, negatives,
                                             positive_fraction, None, None,
                                             name="query_embeddings")
        if query.dtype != bank.dtype or query.shape[1] != bank.shape[1]:
            raise ValueError(f"query_embeddings {tuple(query.shape)} {query.dtype} and "
                             f"bank_embeddings {tuple(bank.shape)} {bank.dtype} need the same "
                             "D and dtype")
        if query_indices is None:
            q = query.shape[0]
            query_indices = (torch.arange(q, device=query.device) if self_retrieval
                             else torch.full((q,), -1, device=query.device))
        check_tensor("query_indices", query_indices, dim=1, dtypes=(torch.int64,))
        if query_indices.shape[0] != query.shape[0]:
            raise ValueError(f"query_indices has {query_indices.shape[0]} entries for "
                             f"{query.shape[0]} queries")
        check_devices(query_embeddings=query, bank_embeddings=bank, query_indices=query_indices)
        if per_anchor is not None:
            check_int("per_anchor", per_anchor)
        if chunk_size is None:
            entries = 1 << (26 if query.is_cuda else 24)
            chunk_size = max(1, entries // max(1, bank.shape[0] + extra.shape[0]))
        check_int("chunk_size", chunk_size)
        seed = _draw_seed(generator) if per_anchor else 0
        # Bounds every anchor's positives, sizing the native scratch: one read per call.
        class_sizes = torch.unique(bank_labels, return_counts=True)[1]
        max_positives = int(class_sizes.max()) if class_sizes.numel() else 0
        parts = []
        for start in range(0, query.shape[0], chunk_size):
            stop = start + chunk_size
            parts.append(_triplet_mine(
                query[start:stop], query_labels[start:stop], query_indices[start:stop], bank,
                bank_labels, extra, extra_labels, float(margin), negatives,
                float(positive_fraction), bool(squared), bool(normalize), max_positives, -1,
                -1 if per_anchor is None else per_anchor, seed, start))
        if not parts:
            empty = torch.empty(0, dtype=torch.int64, device=query.device)
            return empty, empty.clone(), empty.clone()
        if len(parts) == 1:
            return parts[0]
        return tuple(torch.cat(column) for column in zip(*parts))


def _draw_seed(generator):
    """The seed of a native draw, taken from `generator` (or the global RNG when None)."""
    return int(torch.randint(0, 2**62, (), generator=generator))


def check_triplet_args(margin, negatives, positive_fraction):
    """margin finite >= 0, a known negatives rule, positive_fraction in (0, 1]."""
    check_choice("negatives", negatives, NEGATIVES)
    check_number("margin", margin, low=0)
    check_number("positive_fraction", positive_fraction, low=0, high=1, low_open=True)


def _prepare(embeddings, labels, margin, negatives, positive_fraction, extra, extra_labels,
             name="embeddings"):
    """Validated (embeddings, labels, extra, extra_labels); the native op converts half types
    and normalises."""
    check_triplet_args(margin, negatives, positive_fraction)
    check_tensor(name, embeddings, dim=2, dtypes=FLOATING)
    check_labels("labels" if name == "embeddings" else name.replace("embeddings", "labels"),
                 labels, embeddings.shape[0])
    extra, extra_labels = _extras(embeddings, labels, extra, extra_labels)
    check_tensor("extra_negatives", extra, dim=2, dtypes=FLOATING)
    if extra.shape[1] != embeddings.shape[1]:
        raise ValueError(f"extra_negatives must have D={embeddings.shape[1]} columns, got shape "
                         f"{tuple(extra.shape)}")
    check_labels("extra_negative_labels", extra_labels, extra.shape[0])
    check_devices(**{name: embeddings, "labels": labels, "extra_negatives": extra,
                     "extra_negative_labels": extra_labels})
    if extra.dtype != embeddings.dtype:
        raise TypeError(f"extra_negatives must have {name}' dtype {embeddings.dtype}, got "
                        f"{extra.dtype}")
    return embeddings, labels, extra, extra_labels


def _extras(embeddings, labels, extra, extra_labels):
    """The extra negatives and their labels, both given or both None (then none: (0, D) and
    (0,), allocated, never filled)."""
    if (extra is None) != (extra_labels is None):
        raise ValueError("extra_negatives and extra_negative_labels must be given together")
    if extra is None:
        return embeddings.new_empty((0, embeddings.shape[1])), torch.empty(0, dtype=torch.int64,
                                                             device=embeddings.device)
    return extra, extra_labels


# The ops are defined in C++ with their device kernels and the loss's autograd
# (csrc/triplet/triplet_op.cpp); their fake kernels are here.
_triplet_margin_loss = torch.ops.finegrained_ops.triplet_margin_loss.default
_triplet_count = torch.ops.finegrained_ops.triplet_count.default
_triplet_mine = torch.ops.finegrained_ops.triplet_mine.default


@torch.library.register_fake("finegrained_ops::triplet_margin_loss")
def _(embeddings, labels, extra_negatives, extra_negative_labels, margin, negatives,
      positive_fraction, reduction, squared, normalize, compute_grad, loss_dtype=None):
    def grad_like(t):
        return torch.empty_like(t) if compute_grad else t.new_empty((0,))
    dtype = loss_dtype if loss_dtype is not None else embeddings.dtype
    return (embeddings.new_empty((), dtype=dtype), grad_like(embeddings),
            grad_like(extra_negatives), embeddings.new_empty((), dtype=dtype))


@torch.library.register_fake("finegrained_ops::triplet_count")
def _(query_embeddings, *_):
    return query_embeddings.new_empty((query_embeddings.shape[0],), dtype=torch.int64)


@torch.library.register_fake("finegrained_ops::triplet_mine")
def _(query_embeddings, *_):
    n = torch.library.get_ctx().new_dynamic_size()
    return tuple(query_embeddings.new_empty((n,), dtype=torch.int64) for _ in range(3))
