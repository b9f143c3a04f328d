"""Reference iSQRT-COV (Li et al., eq. 5-8; docs/semantics.md §6): the covariance, its trace
pre-normalisation, the coupled Newton-Schulz iterations and the post-compensation written
as the paper states them, with autograd through every step (the library's isqrt_cov has a
hand-written backward for the iterations)."""
import torch


def isqrt_cov(x, iterations=5):
    """Same contract as :func:`finegrained_ops.retrieval.isqrt_cov` for float32/float64 x:
    (N, C, H, W) -> (N, C (C + 1) / 2)."""
    n, c = x.shape[:2]
    features = x.flatten(2)
    centred = features - features.mean(dim=2, keepdim=True)
    cov = centred @ centred.transpose(1, 2) / features.shape[2]
    # a constant map (trace 0) gives 0, as the library's contract says (the paper's: NaN)
    trace = cov.diagonal(dim1=1, dim2=2).sum(dim=1).clamp(min=torch.finfo(x.dtype).tiny)
    identity = torch.eye(c, dtype=x.dtype, device=x.device)
    y, z = cov / trace[:, None, None], identity.expand(n, c, c)
    for _ in range(iterations):
        t = 0.5 * (3.0 * identity - z @ y)
        y, z = y @ t, t @ z
    rows, cols = torch.triu_indices(c, c, device=x.device)
    return (y * trace.sqrt()[:, None, None])[:, rows, cols]
