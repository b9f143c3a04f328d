"""Learned PCA whitening of global descriptors (docs/semantics.md §6; Jégou & Chum, ECCV'12;
the post-processing of Radenović et al.): centre, project on the principal axes scaled by
eigenvalue^(-power), keep the leading `dim` axes, L2-normalise."""
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int, check_number, check_tensor


class PCAWhitening(nn.Module):
    """y = normalise(P (x - mean)), P the (dim, D) projection learned by :meth:`fit`.

    ``mean`` (D,) and ``projection`` (dim, D) are float64 buffers: they survive state_dict()
    and move with .to(device). Before fit the module raises.

    Args:
        dim: output dimension (default D, no reduction), at most D.
        power: eigenvalues are raised to -power; 0.5 is full whitening, smaller values soften
            it (Jégou & Chum's power-law), 0 is PCA rotation alone.
        shrinkage: eps added to every eigenvalue, as a fraction of the largest, so near-zero
            directions are not blown up.

    Shape: (N, D) -> (N, dim), in the input's dtype.
    """

    def __init__(self, dim=None, power=0.5, shrinkage=1e-6):
        super().__init__()
        if dim is not None:
            check_int("dim", dim)
        check_number("power", power, low=0)
        check_number("shrinkage", shrinkage, low=0)
        self.dim, self.power, self.shrinkage = dim, power, shrinkage
        self.register_buffer("mean", None)
        self.register_buffer("projection", None)
        self.register_load_state_dict_pre_hook(_take_fitted_shapes)

    @torch.no_grad()
    def fit(self, descriptors):
        """Learns mean and projection from (N, D) descriptors, N >= 2 (in float64). Returns self."""
        check_tensor("descriptors", descriptors, dim=2)
        n, d = descriptors.shape
        if n < 2:
            raise ValueError(f"fit needs at least 2 descriptors, got {n}")
        out_dim = d if self.dim is None else self.dim
        if out_dim > d:
            raise ValueError(f"dim must be at most D={d}, got {out_dim}")
        x = descriptors.to(torch.float64)
        mean = x.mean(dim=0)
        centred = x - mean
        eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / n)
        order = eigenvalues.argsort(descending=True)[:out_dim]
        eigenvalues = eigenvalues[order].clamp(min=0) + self.shrinkage * eigenvalues.max()
        self.mean = mean
        self.projection = eigenvectors[:, order].T * eigenvalues.pow(-self.power)[:, None]
        return self

    def forward(self, x):
        if self.projection is None:
            raise RuntimeError("PCAWhitening: call fit(descriptors) before applying it")
        check_tensor("x", x, dim=2)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x must have D={self.mean.shape[0]} columns, got {x.shape[1]}")
        y = (x.to(torch.float64) - self.mean) @ self.projection.T
        return F.normalize(y, dim=1).to(x.dtype)

    def extra_repr(self):
        return f"dim={self.dim}, power={self.power}, fitted={self.projection is not None}"


def _take_fitted_shapes(module, state_dict, prefix, *args):
    """A fitted state dict loads into an unfitted module: its buffers take the saved shapes."""
    for name in ("mean", "projection"):
        saved = state_dict.get(prefix + name)
        if saved is not None and getattr(module, name) is None:
            setattr(module, name, torch.empty_like(saved, dtype=torch.float64))
