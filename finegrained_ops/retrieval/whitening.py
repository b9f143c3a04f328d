"""Learned whitening of global descriptors (docs/semantics.md §6): PCA whitening (Jégou &
Chum, ECCV'12) or, from matching pairs, the supervised whitening of Radenović et al. (after
Mikolajczyk & Matas); either way centre, project, keep the leading `output_dim` axes,
L2-normalise."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import FLOATING, as_labels, check_int, check_number, check_tensor, make_generator
from .._typing import Labels


class PCAWhitening(nn.Module):
    """y = normalise(P (x - mean)), P the (output_dim, D) projection learned by :meth:`fit` (PCA)
    or :meth:`fit_pairs` (supervised, from matching pairs).

    Both learn within the r-dimensional span of the centred descriptors: a direction none of
    them varies in (a dead channel, a constant offset) carries nothing and is left out, so
    ``output_dim`` defaults to r and may not exceed it, and descriptors that do not vary at all are
    refused. ``mean`` (D,) and ``projection`` (output_dim, D) are float64 buffers: they survive
    state_dict(), move with .to(device) and stay float64 under .float() / .half(). Before fit
    the module raises.

    Args:
        output_dim: the output's width (default r, the dimensions the descriptors vary in), at
            most r.
        power: eigenvalues are raised to -power; 0.5 is full whitening, smaller values soften
            it (Jégou & Chum's power-law), 0 is PCA rotation alone.
        shrinkage: eps added to every eigenvalue, as a fraction of the largest, so near-zero
            directions are not blown up.

    Shape: (N, D) floating -> (N, output_dim), in the input's dtype.
    """

    def __init__(self, *, output_dim: Optional[int] = None, power: float = 0.5,
                 shrinkage: float = 1e-6) -> None:
        super().__init__()
        if output_dim is not None:
            check_int("output_dim", output_dim)
        check_number("power", power, low=0)
        check_number("shrinkage", shrinkage, low=0)
        self.output_dim, self.power, self.shrinkage = output_dim, power, shrinkage
        self.register_buffer("mean", None)
        self.register_buffer("projection", None)
        self.register_load_state_dict_pre_hook(_take_fitted_shapes)

    @torch.no_grad()
    def fit(self, descriptors: Tensor) -> PCAWhitening:
        """Learns mean and projection from (N, D) descriptors, N >= 2 (in float64): the leading
        `output_dim` principal axes of the centred descriptors, each scaled by
        (eigenvalue + shrinkage·largest)^(-power). Returns self."""
        x = self._descriptors(descriptors)
        self.mean = x.mean(dim=0)
        variances, axes = self._span(x - self.mean)
        count = self._output_dim(len(variances))
        eigenvalues = variances[:count] + self.shrinkage * variances[0]
        self.projection = axes[:, :count].T * eigenvalues.pow(-self.power)[:, None]
        return self

    @torch.no_grad()
    def fit_pairs(self, descriptors: Tensor, pairs: Tensor) -> PCAWhitening:
        """Supervised whitening (Radenović et al.'s learned whitening, after Mikolajczyk &
        Matas; cirtorch's ``whitenlearn``): whiten the covariance S of matching-pair
        differences, then rotate onto the principal axes of the whitened descriptors, keeping
        the leading `output_dim`.

        descriptors (N, D), N >= 2; pairs (P, 2) int64 indices into them of matching
        descriptors (same object or class; the first column the queries), P >= 1. As
        cirtorch, the mean is that of the query descriptors ``descriptors[pairs[:, 0]]`` and
        the rotation the principal axes of all descriptors centred on it. Within the
        r-dimensional span of the centred descriptors: S = mean over pairs of
        (x_i - x_j)(x_i - x_j)ᵀ, its eigenvalues plus shrinkage·largest to the power -power
        (S^(-1/2) at the default, equal to the Cholesky whitening of their code up to a
        rotation the second step undoes). Raises ValueError when the pair differences do not
        span those r dimensions: the directions no pair varies in would be blown up until they
        dominate. Returns self.
        """
        x = self._descriptors(descriptors)
        check_tensor("pairs", pairs, dim=2, dtypes=(torch.int64,))
        if pairs.shape[0] < 1 or pairs.shape[1] != 2:
            raise ValueError(f"pairs must be (P, 2) with P >= 1, got shape {tuple(pairs.shape)}")
        if int(pairs.min()) < 0 or int(pairs.max()) >= x.shape[0]:
            raise ValueError(f"pairs must index the {x.shape[0]} descriptors, got values in "
                             f"[{int(pairs.min())}, {int(pairs.max())}]")
        pairs = pairs.to(x.device)
        self.mean = x[pairs[:, 0]].mean(dim=0)
        centred = x - self.mean
        _, span = self._span(centred)
        r = span.shape[1]
        count = self._output_dim(r)
        eigenvalues, axes = _eigen(_second_moment((x[pairs[:, 0]] - x[pairs[:, 1]]) @ span))
        if int(_nonzero(eigenvalues).sum()) < r:
            raise ValueError(f"the pair differences span {int(_nonzero(eigenvalues).sum())} of "
                             f"the {r} dimensions the descriptors vary in: whitening would blow "
                             "up the directions no pair varies in until they dominate. Pairs "
                             "within classes never vary between them: with same-label pairs, "
                             "fit on more descriptors than r + the number of classes, or reduce "
                             "the dimension first (PCA)")
        eigenvalues = eigenvalues + self.shrinkage * eigenvalues[0]
        whiten = span @ (axes * eigenvalues.pow(-self.power)) @ axes.T      # (D, r)
        _, rotation = _eigen(_second_moment(centred @ whiten))
        self.projection = rotation[:, :count].T @ whiten.T
        return self

    def _descriptors(self, descriptors):
        """(N, D) real floating descriptors, N >= 2, output_dim <= D, in float64."""
        check_tensor("descriptors", descriptors, dim=2, dtypes=FLOATING)
        n, d = descriptors.shape
        if n < 2:
            raise ValueError(f"fit needs at least 2 descriptors, got {n}")
        if self.output_dim is not None and self.output_dim > d:
            raise ValueError(f"output_dim must be at most D={d}, got {self.output_dim}")
        return descriptors.to(torch.float64)

    def _output_dim(self, r):
        """output_dim, or r when None; at most r."""
        if self.output_dim is not None and self.output_dim > r:
            raise ValueError(f"the descriptors vary in {r} dimensions: output_dim must be at most "
                             f"that, "
                             f"got {self.output_dim}")
        return r if self.output_dim is None else self.output_dim

    def forward(self, x: Tensor) -> Tensor:
        """x (N, D) float16/bfloat16/float32/float64 -> (N, output_dim) in x's dtype, unit rows."""
        if self.projection is None:
            raise RuntimeError("PCAWhitening: call fit(descriptors) before applying it")
        check_tensor("x", x, dim=2, dtypes=FLOATING)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x must have D={self.mean.shape[0]} columns, got {x.shape[1]}")
        y = (x.to(torch.float64) - self.mean) @ self.projection.T
        return F.normalize(y, dim=1).to(x.dtype)

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for name in ("mean", "projection"):  # a cast (.float(), .half()) keeps them float64
            t = getattr(self, name)
            if t is not None and t.dtype != torch.float64:
                setattr(self, name, t.to(torch.float64))
        return self

    def extra_repr(self) -> str:
        return (f"output_dim={self.output_dim}, power={self.power}, "
                f"fitted={self.projection is not None}")

    @staticmethod
    def _span(centred):
        """The nonzero variances of the centred rows, largest first, and their axes as
        columns: the span the descriptors vary in. Raises if they do not vary."""
        variances, axes = _eigen(_second_moment(centred))
        keep = _nonzero(variances)
        if not bool(keep.any()):
            raise ValueError("the descriptors do not vary: there is nothing to whiten")
        return variances[keep], axes[:, keep]


def same_label_pairs(labels: Labels, *, seed: int = 0) -> Tensor:
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


def _eigen(moment):
    """Eigenvalues of a symmetric matrix (clamped at 0), largest first, and their
    eigenvectors as columns."""
    eigenvalues, eigenvectors = torch.linalg.eigh(moment)
    order = eigenvalues.argsort(descending=True)
    return eigenvalues[order].clamp(min=0), eigenvectors[:, order]


def _nonzero(eigenvalues):
    """Which of descending eigenvalues are not zero up to round-off (the matrix_rank rule)."""
    return eigenvalues > eigenvalues[0] * len(eigenvalues) * torch.finfo(eigenvalues.dtype).eps


def _second_moment(rows):
    """(D, D) mean of the outer products of the rows of (M, D)."""
    return rows.T @ rows / rows.shape[0]


def _take_fitted_shapes(module, state_dict, prefix, *args):
    """A fitted state dict loads into an unfitted module (its buffers take the saved shapes),
    and only into one of its output dimension."""
    saved = state_dict.get(prefix + "projection")
    if saved is not None and module.output_dim is not None and saved.shape[0] != module.output_dim:
        raise ValueError(f"the state dict's projection has {saved.shape[0]} rows (its output "
                         f"dimension), but this PCAWhitening has output_dim={module.output_dim}")
    for name in ("mean", "projection"):
        saved = state_dict.get(prefix + name)
        if saved is not None and getattr(module, name) is None:
            setattr(module, name, torch.empty_like(saved, dtype=torch.float64))
