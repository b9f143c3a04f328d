"""Query expansion and database-side augmentation (docs/semantics.md §6): a descriptor replaced
by the normalised sum of itself and its nearest gallery neighbours, weighted by similarity^α
(Radenović et al., TPAMI'18; α = 0 is the average query expansion of Chum et al., ICCV'07).
Chunked, so memory is O(chunk_size · N); on the descriptors' device."""
import torch
import torch.nn.functional as F

from .._checks import check_int, check_number, check_tensor


def query_expansion(query, gallery, k=2, alpha=3.0, chunk_size=1024):
    """α-QE: q' = normalise(q + sum over the k most similar gallery items g of max(0, q·g)^α g).

    query (Nq, D), gallery (N, D): L2-normalised descriptors (normalised here), one dtype and
    device. k in [1, N]; alpha >= 0 (0: average QE). Returns (Nq, D), L2-normalised. Follow
    with diffusion (metrics.diffusion_rerank) or plain cosine ranking.
    """
    q, g = _descriptors(query, gallery)
    return _expand(q, g, k, alpha, chunk_size, add_self=True)


def database_augmentation(gallery, k=2, alpha=3.0, chunk_size=1024):
    """DBA: every gallery item replaced by the α-weighted sum of its k nearest gallery items,
    itself included (its own weight is 1), normalised. gallery (N, D); k in [1, N]. Returns
    (N, D). Apply to the gallery once, then expand queries against the augmented gallery."""
    g, _ = _descriptors(gallery, gallery)
    return _expand(g, g, k, alpha, chunk_size, add_self=False)


def _descriptors(query, gallery):
    check_tensor("query", query, dim=2)
    check_tensor("gallery", gallery, dim=2)
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query and gallery must share D, got {query.shape[1]} and "
                         f"{gallery.shape[1]}")
    if query.device != gallery.device or query.dtype != gallery.dtype:
        raise ValueError(f"query and gallery must share device and dtype, got {query.device} "
                         f"{query.dtype} and {gallery.device} {gallery.dtype}")
    return F.normalize(query, dim=1), F.normalize(gallery, dim=1)


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
        out.append(F.normalize(chunk + expanded if add_self else expanded, dim=1))
    return torch.cat(out) if out else items.clone()
