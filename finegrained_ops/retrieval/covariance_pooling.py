"""Matrix-square-root normalised covariance pooling, iSQRT-COV (Li et al., CVPR'18,
"Towards Faster Training of Global Covariance Pooling Networks by Iterative Matrix Square Root
Normalization"; docs/semantics.md §6): the second-order head kernel pooling is compared with."""
import torch

from .._checks import FLOATING, check_int, check_tensor


def isqrt_cov(x, iterations=5):
    """(N, C, H, W) -> (N, C (C + 1) / 2): the upper triangle (row by row, diagonal included) of
    sqrt(tr Σ) · Y_K, Y_K the Newton-Schulz approximation of (Σ / tr Σ)^(1/2) after
    `iterations` steps, Σ the covariance of the H·W location features (Li et al., eq. 5-8):

        Y_0 = Σ / tr Σ, Z_0 = I;  T_k = (3 I - Z_{k-1} Y_{k-1}) / 2,  Y_k = Y_{k-1} T_k,  Z_k = T_k Z_{k-1}

    The backward runs through the iterations (autograd): it keeps about 3 * iterations C x C
    matrices per image, ~4 MB in float32 at the paper's C = 256. float16 / bfloat16 maps are
    computed in float32, autocast off, and the result returned in their dtype: the iteration
    is not stable in half precision.
    """
    check_tensor("x", x, dim=4, dtypes=FLOATING)
    check_int("iterations", iterations)
    n, c = x.shape[:2]
    z = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    with torch.autocast(x.device.type, enabled=False):
        features = z.flatten(2)                                   # (N, C, M)
        centred = features - features.mean(dim=2, keepdim=True)
        cov = centred @ centred.transpose(1, 2) / features.shape[2]
        trace = cov.diagonal(dim1=1, dim2=2).sum(dim=1).clamp(min=torch.finfo(z.dtype).tiny)
        y = cov / trace[:, None, None]
        identity = torch.eye(c, dtype=z.dtype, device=z.device).expand(n, c, c)
        zk = identity
        for _ in range(iterations):
            t = 0.5 * (3.0 * identity - zk @ y)
            y, zk = y @ t, t @ zk
        root = y * trace.sqrt()[:, None, None]
        rows, cols = torch.triu_indices(c, c, device=z.device)
        return root[:, rows, cols].to(x.dtype)
