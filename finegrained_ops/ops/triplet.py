"""Batched hard-negative triplet mining and the fused triplet margin loss (DESIGN §4).

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
import math

import torch
import torch.nn.functional as F

from .._native import _C
from ._validation import (FLOATING, check_choice, check_int, check_same_device, check_tensor,
                          compute_dtype)

NEGATIVES = {"violating": 0, "semihard": 1, "hardest": 2, "all": 3}
REDUCTIONS = {"mean_nonzero": 0, "mean": 1, "sum": 2}
_NO_RANKS = torch.empty(0, dtype=torch.int64)


def triplet_margin_loss(emb, labels, margin=0.2, negatives="violating", positive_fraction=1.0,
                        extra_negatives=None, extra_negative_labels=None,
                        reduction="mean_nonzero", squared=True, normalize=True):
    """Fused in-batch mining + triplet margin loss max(0, d(a,p) - d(a,n) + margin).

    Args:
        emb: (B, D) float16/bfloat16/float32/float64 embeddings (half types computed in float32).
        labels: (B,) int64 class labels.
        margin: >= 0.
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
        0-dim tensor in emb's dtype; 0 (with a zero gradient) when no triplet counts.
        Differentiable once w.r.t. emb and extra_negatives.
    """
    x, labels, extra, extra_labels = _prepare(emb, labels, margin, negatives, positive_fraction,
                                              extra_negatives, extra_negative_labels, normalize)
    check_choice("reduction", reduction, REDUCTIONS)
    compute_grad = torch.is_grad_enabled() and (x.requires_grad or extra.requires_grad)
    loss, _, _, _ = _triplet_margin_loss(x, labels, extra, extra_labels, float(margin),
                                         NEGATIVES[negatives], float(positive_fraction),
                                         REDUCTIONS[reduction], bool(squared), compute_grad)
    return loss.to(emb.dtype)


def mine_triplets(emb, labels, margin=0.2, negatives="violating", positive_fraction=1.0,
                  extra_negatives=None, extra_negative_labels=None, max_triplets=None,
                  generator=None, squared=True, normalize=True):
    """The triplets the loss would use, as (anchor, positive, negative) int64 index tensors.

    Arguments as in :func:`triplet_margin_loss`. max_triplets: when more triplets are mined,
    keep a uniform random subset of this size (without replacement, drawn from
    ``generator``), still in the documented order; the full set is never materialised.
    Returns three (T,) int64 tensors on emb's device; a negative index >= B is an extra.
    """
    with torch.no_grad():
        x, labels, extra, extra_labels = _prepare(emb, labels, margin, negatives,
                                                  positive_fraction, extra_negatives,
                                                  extra_negative_labels, normalize)
        problem = (x, labels, torch.arange(x.shape[0], device=x.device), x, labels, extra,
                   extra_labels, float(margin), NEGATIVES[negatives], float(positive_fraction),
                   bool(squared))
        ranks = _NO_RANKS.to(x.device)
        if max_triplets is not None:
            check_int("max_triplets", max_triplets)
            total = int(_triplet_count(*problem).sum())
            if total > max_triplets:
                ranks = sample_ranks(total, max_triplets, generator).to(x.device)
        return _triplet_mine(*problem, ranks, -1, 0, 0)


def mine_from_bank(query_emb, query_labels, bank_emb, bank_labels, per_anchor=1, margin=0.2,
                   negatives="violating", positive_fraction=1.0, extra_negatives=None,
                   extra_negative_labels=None, query_indices=None, chunk_size=None,
                   generator=None, squared=True, normalize=True):
    """Mine triplets of each query against a whole feature bank (quasi-online sampling).

    The queries are processed in chunks, so memory is O(chunk_size * (N + E)).

    Args:
        query_emb: (Q, D) anchors; query_labels: (Q,) int64.
        bank_emb: (N, D) positives and negatives; bank_labels: (N,) int64.
        per_anchor: int >= 1: up to this many triplets per query, drawn uniformly without
            replacement among its mined triplets (seeded from ``generator``; the draw of a
            query depends only on the seed and its index, not on chunk_size). None: all.
        query_indices: (Q,) int64 bank index of each query (excluded from its positives) or
            -1; defaults to arange(Q) when ``query_emb is bank_emb``, else to -1.
        chunk_size: queries per chunk; default keeps a chunk's distance matrix near 16M entries.
        Other arguments as in :func:`triplet_margin_loss`.

    Returns:
        (query index, bank index, negative index) int64, a negative index >= N being an extra.
    """
    with torch.no_grad():
        self_retrieval = query_emb is bank_emb
        bank, bank_labels, extra, extra_labels = _prepare(
            bank_emb, bank_labels, margin, negatives, positive_fraction, extra_negatives,
            extra_negative_labels, normalize, name="bank_emb")
        query, query_labels, _, _ = _prepare(query_emb, query_labels, margin, negatives,
                                             positive_fraction, None, None, normalize,
                                             name="query_emb")
        if query.dtype != bank.dtype or query.shape[1] != bank.shape[1]:
            raise ValueError(f"query_emb {tuple(query.shape)} {query.dtype} and bank_emb "
                             f"{tuple(bank.shape)} {bank.dtype} need the same D and dtype")
        if query_indices is None:
            q = query.shape[0]
            query_indices = (torch.arange(q) if self_retrieval else torch.full((q,), -1))
            query_indices = query_indices.to(query.device)
        check_tensor("query_indices", query_indices, dim=1, dtypes=(torch.int64,))
        if query_indices.shape[0] != query.shape[0]:
            raise ValueError(f"query_indices has {query_indices.shape[0]} entries for "
                             f"{query.shape[0]} queries")
        check_same_device(query_emb=query, bank_emb=bank, query_indices=query_indices)
        if per_anchor is not None:
            check_int("per_anchor", per_anchor)
        if chunk_size is None:
            chunk_size = max(1, (1 << 24) // max(1, bank.shape[0] + extra.shape[0]))
        check_int("chunk_size", chunk_size)
        seed = int(torch.randint(0, 2**62, (), generator=generator)) if per_anchor else 0
        parts = []
        for start in range(0, query.shape[0], chunk_size):
            stop = start + chunk_size
            parts.append(_triplet_mine(
                query[start:stop], query_labels[start:stop], query_indices[start:stop], bank,
                bank_labels, extra, extra_labels, float(margin), NEGATIVES[negatives],
                float(positive_fraction), bool(squared), _NO_RANKS.to(query.device),
                -1 if per_anchor is None else per_anchor, seed, start))
        if not parts:
            empty = torch.empty(0, dtype=torch.int64, device=query.device)
            return empty, empty.clone(), empty.clone()
        return tuple(torch.cat(column) for column in zip(*parts))


def sample_ranks(total, k, generator=None):
    """k distinct integers drawn uniformly from [0, total), sorted (int64, on CPU).

    Memory O(k) when k is well below total: draw with replacement, deduplicate, repeat until
    k are distinct, then keep a uniform k of them (exchangeable, hence a uniform k-subset).
    """
    if 2 * k >= total:
        return torch.randperm(total, generator=generator)[:k].sort().values
    picked = torch.empty(0, dtype=torch.int64)
    while picked.numel() < k:
        draw = torch.randint(total, (2 * (k - picked.numel()) + 16,), generator=generator)
        picked = torch.cat([picked, draw]).unique()
    keep = torch.randperm(picked.numel(), generator=generator)[:k].sort().values
    return picked[keep]


def check_triplet_args(margin, negatives, positive_fraction):
    """margin finite >= 0, a known negatives rule, positive_fraction in (0, 1]."""
    check_choice("negatives", negatives, NEGATIVES)
    if not (isinstance(margin, (int, float)) and not isinstance(margin, bool)
            and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if not (isinstance(positive_fraction, (int, float)) and 0 < positive_fraction <= 1):
        raise ValueError(f"positive_fraction must be in (0, 1], got {positive_fraction!r}")


def _prepare(emb, labels, margin, negatives, positive_fraction, extra, extra_labels, normalize,
             name="emb"):
    """Validated (embeddings, labels, extra, extra_labels) in the compute dtype, normalised."""
    check_triplet_args(margin, negatives, positive_fraction)
    check_tensor(name, emb, dim=2, dtypes=FLOATING)
    _check_labels("labels" if name == "emb" else name.replace("emb", "labels"), labels,
                  emb.shape[0])
    if (extra is None) != (extra_labels is None):
        raise ValueError("extra_negatives and extra_negative_labels must be given together")
    if extra is None:
        extra = emb.new_zeros((0, emb.shape[1]))
        extra_labels = labels.new_zeros((0,))
    check_tensor("extra_negatives", extra, dim=2, dtypes=FLOATING)
    if extra.shape[1] != emb.shape[1]:
        raise ValueError(f"extra_negatives must have D={emb.shape[1]} columns, got shape "
                         f"{tuple(extra.shape)}")
    _check_labels("extra_negative_labels", extra_labels, extra.shape[0])
    check_same_device(**{name: emb, "labels": labels, "extra_negatives": extra,
                         "extra_negative_labels": extra_labels})
    dtype = compute_dtype(emb.dtype)
    emb, extra = emb.to(dtype), extra.to(dtype)
    if normalize:
        emb, extra = F.normalize(emb, dim=1), F.normalize(extra, dim=1)
    return emb, labels, extra, extra_labels


def _check_labels(name, labels, n):
    check_tensor(name, labels, dim=1)
    if labels.dtype != torch.int64:
        raise TypeError(f"{name} must be int64 class labels, got {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but the embeddings have {n} rows")


@torch.library.custom_op("finegrained_ops::triplet_margin_loss", mutates_args=())
def _triplet_margin_loss(emb: torch.Tensor, labels: torch.Tensor, extra: torch.Tensor,
                         extra_labels: torch.Tensor, margin: float, rule: int,
                         positive_fraction: float, reduction: int, squared: bool,
                         compute_grad: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(_C.triplet_margin_loss_forward(emb, labels, extra, extra_labels, margin, rule,
                                                positive_fraction, reduction, squared,
                                                compute_grad))


@_triplet_margin_loss.register_fake
def _(emb, labels, extra, extra_labels, margin, rule, positive_fraction, reduction, squared,
      compute_grad):
    def grad_like(t):
        return torch.empty_like(t) if compute_grad else t.new_empty((0,))
    return emb.new_empty(()), grad_like(emb), grad_like(extra), emb.new_empty(())


def _setup_context(ctx, inputs, output):
    emb, _, extra = inputs[:3]
    _, grad_emb, grad_extra, norm = output
    ctx.mark_non_differentiable(grad_emb, grad_extra, norm)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(grad_emb, grad_extra, norm, emb, extra)


def _backward(ctx, grad_loss, *_):
    if grad_loss is None:
        return (None,) * 10
    grad_emb, grad_extra = _triplet_margin_loss_backward(grad_loss, *ctx.saved_tensors)
    return (grad_emb, None, grad_extra if ctx.needs_input_grad[2] else None) + (None,) * 7


@torch.library.custom_op("finegrained_ops::triplet_margin_loss_backward", mutates_args=())
def _triplet_margin_loss_backward(grad_loss: torch.Tensor, grad_emb: torch.Tensor,
                                  grad_extra: torch.Tensor, norm: torch.Tensor,
                                  emb: torch.Tensor, extra: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales the saved gradients by grad_loss / norm. emb and extra are inputs only so that a
    second derivative through them raises (this op has no autograd) instead of silently
    missing the loss's own second-order terms."""
    scale = grad_loss / norm
    return grad_emb * scale, grad_extra * scale


@_triplet_margin_loss_backward.register_fake
def _(grad_loss, grad_emb, grad_extra, norm, emb, extra):
    return torch.empty_like(grad_emb), torch.empty_like(grad_extra)


_triplet_margin_loss.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("finegrained_ops::triplet_count", mutates_args=())
def _triplet_count(query: torch.Tensor, query_labels: torch.Tensor, query_self: torch.Tensor,
                   refs: torch.Tensor, ref_labels: torch.Tensor, extra: torch.Tensor,
                   extra_labels: torch.Tensor, margin: float, rule: int,
                   positive_fraction: float, squared: bool) -> torch.Tensor:
    return _C.triplet_count(query, query_labels, query_self, refs, ref_labels, extra,
                            extra_labels, margin, rule, positive_fraction, squared)


@_triplet_count.register_fake
def _(query, *_):
    return query.new_empty((query.shape[0],), dtype=torch.int64)


@torch.library.custom_op("finegrained_ops::triplet_mine", mutates_args=())
def _triplet_mine(query: torch.Tensor, query_labels: torch.Tensor, query_self: torch.Tensor,
                  refs: torch.Tensor, ref_labels: torch.Tensor, extra: torch.Tensor,
                  extra_labels: torch.Tensor, margin: float, rule: int,
                  positive_fraction: float, squared: bool, ranks: torch.Tensor,
                  per_anchor: int, seed: int, anchor_offset: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(_C.triplet_mine(query, query_labels, query_self, refs, ref_labels, extra,
                                 extra_labels, margin, rule, positive_fraction, squared, ranks,
                                 per_anchor, seed, anchor_offset))


@_triplet_mine.register_fake
def _(query, *_):
    n = torch.library.get_ctx().new_dynamic_size()
    return tuple(query.new_empty((n,), dtype=torch.int64) for _ in range(3))
