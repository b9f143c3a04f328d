"""Query expansion and database-side augmentation (docs/semantics.md §6): a descriptor replaced
by the normalised sum of itself and its nearest gallery neighbours, weighted by similarity^α
(Radenović et al., TPAMI'18; α = 0 is the average query expansion of Chum et al., ICCV'07).
Chunked, so memory is O(chunk_size · N); on the descriptors' device."""
from __future__ import annotations

import torch
from torch import Tensor

from .._checks import FLOATING, check_int, check_number, check_tensor, check_value
from .._numerics import l2_normalize


def query_expansion(query: Tensor, gallery: Tensor, *, k: int = 2, alpha: float = 3.0,
                    chunk_size: int = 1024) -> Tensor:
    """α-QE: q' = normalise(q + sum over the k most similar gallery items g of max(0, q·g)^α g).

    query (Nq, D), gallery (N, D): L2-normalised descriptors (normalised here), one dtype and
    device. k in [1, N]; alpha >= 0 (0: average QE; the default 3 is Radenović et al.'s).
    Returns (Nq, D), L2-normalised. Follow with diffusion (diffusion_rerank) or plain cosine
    ranking.
    """
    q, g = _descriptors(query, gallery)
    return _expand(q, g, k, alpha, chunk_size, add_self=True)


def database_augmentation(gallery: Tensor, *, k: int = 2, alpha: float = 3.0,
                          chunk_size: int = 1024) -> Tensor:
    """DBA: every gallery item replaced by the α-weighted sum of its k nearest gallery items,
    itself included (its own weight is 1), normalised. gallery (N, D); k in [1, N]. Returns
    (N, D). Apply to the gallery once, then expand queries against the augmented gallery."""
    g = _descriptor("gallery", gallery)
    return _expand(g, g, k, alpha, chunk_size, add_self=False)


def _descriptors(query, gallery):
    """query and gallery checked and L2-normalised."""
    g = _descriptor("gallery", gallery)
    q = _descriptor("query", query)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery must share D, got {q.shape[1]} and {g.shape[1]}")
    if q.device != g.device or q.dtype != g.dtype:
        raise ValueError(f"query and gallery must share device and dtype, got {q.device} "
                         f"{q.dtype} and {g.device} {g.dtype}")
    return q, g


def _descriptor(name, t):
    """(N, D) floating finite descriptors, L2-normalised: top-k ranks NaN first, so one NaN
    gallery row would enter every expansion."""
    check_tensor(name, t, dim=2, dtypes=FLOATING)
    check_value(torch.isfinite(t).all(), f"{name} must be finite (no NaN or Inf)")
    return l2_normalize(t, dim=1)


def _expand(items, gallery, k, alpha, chunk_size, add_self):
    check_int("k", k)
    if k > gallery.shape[0]:
        raise ValueError(f"k must be at most the gallery size {gallery.shape[0]}, got {k}")
    check_number("alpha", alpha, low=0)
    check_int("chunk_size", chunk_size)
    out = []
    for chunk in items.split(chunk_size):
        sims, nearest = (chunk @ gallery.T).topk(k, dim=1)
        weights = sims.clamp(min=0).pow(alpha)                    # (chunk, k)
        expanded = (weights[:, :, None] * gallery[nearest]).sum(dim=1)
        out.append(l2_normalize(chunk + expanded if add_self else expanded, dim=1))
    return torch.cat(out) if out else items.clone()
