"""Diffusion re-ranking on a reciprocal kNN graph (Iscen et al. 2017; the lecture notes'
query expansion as a linear system): rank the gallery by the solution f of (I - αS) f = y."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import as_features, check_int, check_number
from .._optional import require


def diffusion_rerank(query: Tensor, gallery: Tensor, *, k: int = 50, alpha: float = 0.99,
                     similarity_power: float = 3, tol: float = 1e-6,
                     max_iter: int = 1000) -> tuple[Tensor, Tensor]:
    """Re-rank a gallery for each query by diffusion over the gallery's manifold.

    1. Affinities a_ij = max(0, x_i·x_j)^γ between L2-normalised gallery items, kept only for
       reciprocal k nearest neighbours (i in kNN(j) and j in kNN(i)).
    2. Symmetric normalisation S = D^(-1/2) A D^(-1/2).
    3. Per query, y_i = max(0, q·x_i)^γ on the query's k nearest gallery items (0 elsewhere),
       then (I - αS) f = y by conjugate gradient (scipy.sparse; the matrix is SPD for α < 1).

    query (Nq, D), gallery (Ng, D) floating; k in [1, Ng); alpha in (0, 1); γ =
    similarity_power > 0 (the defaults alpha = 0.99 and γ = 3 are Iscen et al.'s); tol > 0, the
    conjugate gradient's relative residual; max_iter >= 1 its iterations.
    Returns scores (Nq, Ng) float64 (higher = more relevant) and ranking (Nq, Ng) int64
    (gallery indices, best first).
    """
    sparse = require("scipy.sparse", "diffusion_rerank")
    cg = require("scipy.sparse.linalg", "diffusion_rerank").cg

    q = F.normalize(as_features("query", query).to(torch.float64), dim=1).cpu()
    x = F.normalize(as_features("gallery", gallery).to(torch.float64), dim=1).cpu()
    n = x.shape[0]
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"query and gallery must share D, got {q.shape[1]} and {x.shape[1]}")
    if not (isinstance(k, int) and 1 <= k < n):
        raise ValueError(f"k must be an int in [1, {n}) (smaller than the gallery), got {k!r}")
    check_number("alpha", alpha, low=0, high=1, low_open=True, high_open=True)
    check_number("similarity_power", similarity_power, low=0, low_open=True)
    check_number("tol", tol, low=0, low_open=True)
    check_int("max_iter", max_iter)

    sims, neighbours = (x @ x.T).fill_diagonal_(-2.0).topk(k, dim=1)
    rows = torch.arange(n).repeat_interleave(k).numpy()
    cols = neighbours.flatten().numpy()
    weights = sims.flatten().clamp_min(0).pow(similarity_power).numpy()
    knn = sparse.csr_matrix((weights, (rows, cols)), shape=(n, n))
    affinity = knn.minimum(knn.T)  # zero unless the edge is there in both directions
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    inv_sqrt = sparse.diags(np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-300)), 0.0))
    system = sparse.identity(n, format="csr") - alpha * (inv_sqrt @ affinity @ inv_sqrt)

    query_sims, query_neighbours = (q @ x.T).topk(k, dim=1)
    scores = np.zeros((q.shape[0], n))
    for i in range(q.shape[0]):
        y = np.zeros(n)
        y[query_neighbours[i].numpy()] = query_sims[i].clamp_min(0).pow(similarity_power).numpy()
        f, info = cg(system, y, rtol=tol, maxiter=max_iter)
        if info > 0:
            raise RuntimeError(f"conjugate gradient did not converge in {max_iter} iterations "
                               f"for query {i}")
        scores[i] = f
    scores = torch.from_numpy(scores)
    return scores, scores.argsort(dim=1, descending=True, stable=True)
