"""Learned whitening of global descriptors (docs/semantics.md §6): PCA whitening (Jégou &
Chum, ECCV'12) or, from matching pairs, the supervised whitening of Radenović et al. (after
Mikolajczyk & Matas); either way centre, project, keep the leading `dim` axes, L2-normalise."""
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import as_labels, check_int, check_number, check_tensor, make_generator


class PCAWhitening(nn.Module):
    """y = normalise(P (x - mean)), P the (dim, D) projection learned by :meth:`fit` (PCA) or
    :meth:`fit_pairs` (supervised, from matching pairs).

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
        """Learns mean and projection from (N, D) descriptors, N >= 2 (in float64): the
        principal axes, each scaled by (eigenvalue + shrinkage·largest)^(-power). Returns self."""
        x, out_dim = self._descriptors(descriptors)
        self.mean = x.mean(dim=0)
        eigenvalues, axes = self._eigen(_second_moment(x - self.mean), out_dim)
        self.projection = axes.T * eigenvalues.pow(-self.power)[:, None]
        return self

    @torch.no_grad()
    def fit_pairs(self, descriptors, pairs):
        """Supervised whitening (Radenović et al.'s learned whitening, after Mikolajczyk &
        Matas): whiten the covariance S of matching-pair differences, then rotate onto the
        principal axes of the whitened descriptors, keeping the leading `dim`.

        descriptors (N, D), N >= 2; pairs (P, 2) int64 indices into them of matching
        descriptors (same object or class), P >= 1. Within the r-dimensional span of the
        centred descriptors (a direction none varies in, such as a dead channel, carries
        nothing): S = mean over pairs of (x_i - x_j)(x_i - x_j)ᵀ, its eigenvalues plus
        shrinkage·largest to the power -power (S^(-1/2) at the default, equal to the Cholesky
        whitening of their code up to a rotation the second step undoes). The mean is that of
        all descriptors; dim defaults to r. Raises ValueError when the pair differences do not
        span those r dimensions: the directions no pair varies in would be blown up until they
        dominate. Returns self.
        """
        x, _ = self._descriptors(descriptors)
        check_tensor("pairs", pairs, dim=2, dtypes=(torch.int64,))
        if pairs.shape[0] < 1 or pairs.shape[1] != 2:
            raise ValueError(f"pairs must be (P, 2) with P >= 1, got shape {tuple(pairs.shape)}")
        if int(pairs.min()) < 0 or int(pairs.max()) >= x.shape[0]:
            raise ValueError(f"pairs must index the {x.shape[0]} descriptors, got values in "
                             f"[{int(pairs.min())}, {int(pairs.max())}]")
        self.mean = x.mean(dim=0)
        centred = x - self.mean
        variances, span = self._eigen(_second_moment(centred), x.shape[1], shrink=False)
        span = span[:, _nonzero(variances)]
        r = span.shape[1]
        if r == 0 or (self.dim or 0) > r:
            raise ValueError(f"the descriptors vary in {r} dimensions: dim must be at most that, "
                             f"got {self.dim}" if r else "the descriptors do not vary")
        pairs = pairs.to(x.device)
        eigenvalues, axes = self._eigen(
            _second_moment((x[pairs[:, 0]] - x[pairs[:, 1]]) @ span), r, shrink=False)
        if int(_nonzero(eigenvalues).sum()) < r:
            raise ValueError(f"the pair differences span {int(_nonzero(eigenvalues).sum())} of "
                             f"the {r} dimensions the descriptors vary in: whitening would blow "
                             "up the directions no pair varies in until they dominate. Pairs "
                             "within classes never vary between them: with same-label pairs, "
                             "fit on more descriptors than r + the number of classes, or reduce "
                             "the dimension first (PCA)")
        eigenvalues = eigenvalues + self.shrinkage * eigenvalues[0]
        whiten = span @ (axes * eigenvalues.pow(-self.power)) @ axes.T      # (D, r)
        _, rotation = self._eigen(_second_moment(centred @ whiten), self.dim or r, shrink=False)
        self.projection = rotation.T @ whiten.T
        return self

    def _descriptors(self, descriptors):
        """(N, D) descriptors in float64 and the output dimension, checked."""
        check_tensor("descriptors", descriptors, dim=2)
        n, d = descriptors.shape
        if n < 2:
            raise ValueError(f"fit needs at least 2 descriptors, got {n}")
        out_dim = d if self.dim is None else self.dim
        if out_dim > d:
            raise ValueError(f"dim must be at most D={d}, got {out_dim}")
        return descriptors.to(torch.float64), out_dim

    def _eigen(self, moment, count, shrink=True):
        """The `count` largest eigenvalues (clamped at 0, plus shrinkage·largest) and their
        eigenvectors as columns, largest first."""
        eigenvalues, eigenvectors = torch.linalg.eigh(moment)
        order = eigenvalues.argsort(descending=True)[:count]
        shrinkage = self.shrinkage * eigenvalues.max() if shrink else 0.0
        return eigenvalues[order].clamp(min=0) + shrinkage, eigenvectors[:, order]

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


def same_label_pairs(labels, seed=0):
    """Matching pairs for :meth:`PCAWhitening.fit_pairs` from class labels: within each label,
    the members in an order drawn from torch.Generator(seed), each paired with the next (the
    last with the first). A label with one member gives no pair.

    labels (N,) integer. Returns (P, 2) int64 indices, P = N minus the single-member labels.
    """
    labels = as_labels(labels, "labels")
    generator = make_generator(seed)
    pairs = []
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten().cpu()
        if len(members) > 1:
            members = members[torch.randperm(len(members), generator=generator)]
            pairs.append(torch.stack([members, members.roll(-1)], dim=1))
    if not pairs:
        raise ValueError("same_label_pairs: no label has two members")
    return torch.cat(pairs)


def _nonzero(eigenvalues):
    """Which of descending eigenvalues are not zero up to round-off (the matrix_rank rule)."""
    return eigenvalues > eigenvalues[0] * len(eigenvalues) * torch.finfo(eigenvalues.dtype).eps


def _second_moment(rows):
    """(D, D) mean of the outer products of the rows of (M, D)."""
    return rows.T @ rows / rows.shape[0]


def _take_fitted_shapes(module, state_dict, prefix, *args):
    """A fitted state dict loads into an unfitted module: its buffers take the saved shapes."""
    for name in ("mean", "projection"):
        saved = state_dict.get(prefix + name)
        if saved is not None and getattr(module, name) is None:
            setattr(module, name, torch.empty_like(saved, dtype=torch.float64))
