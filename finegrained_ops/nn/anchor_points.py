"""Anchor-point classification on a learned embedding (thesis 2.3.4-2.3.5, eq. 2.3-2.5)."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import as_labels, check_int, check_number, make_generator
from .._typing import Labels
from .triplet import TripletMarginLoss


class AnchorPointClassifier(nn.Module):
    """Soft voting over K learnable anchor points per class (eq. 2.3).

        p_i = sum_j exp(-γ |f - u_ij|^2) / sum_l sum_j exp(-γ |f - u_lj|^2),  γ = vote_sharpness

    γ -> inf votes for the class of the nearest anchor; γ -> 0 gives every class the same
    score. Anchors start random; :meth:`init_from_embeddings` places them by k-means on
    each class's training embeddings (the paper's offline step), and training with
    :meth:`loss` (eq. 2.4) moves them.

    Args:
        num_classes: C >= 1. embedding_dim: D >= 1. anchors_per_class: K >= 1 (the paper's 3).
        vote_sharpness: γ > 0; the default 5 is the paper's, on L2-normalised 64-d embeddings.
        normalize: L2-normalise embeddings first (as the triplet loss does).

    Shape: embeddings (N, D) -> forward: (N, C) log p; predict: (N,) int64; loss: 0-dim.
    """

    def __init__(self, num_classes: int, embedding_dim: int, *, anchors_per_class: int = 3,
                 vote_sharpness: float = 5.0, normalize: bool = True) -> None:
        super().__init__()
        check_int("num_classes", num_classes)
        check_int("embedding_dim", embedding_dim)
        check_int("anchors_per_class", anchors_per_class)
        check_number("vote_sharpness", vote_sharpness, low=0, low_open=True)
        self.vote_sharpness, self.normalize = float(vote_sharpness), normalize
        self.anchors = nn.Parameter(
            0.1 * torch.randn(num_classes, anchors_per_class, embedding_dim))

    def forward(self, embeddings: Tensor) -> Tensor:
        """embeddings (N, D) -> (N, C) log-probabilities of the classes."""
        f = self._features(embeddings)
        u = self.anchors.reshape(-1, self.anchors.shape[-1]).to(f.dtype)
        sq = (f.pow(2).sum(1, keepdim=True) + u.pow(2).sum(1) - 2 * f @ u.t()).clamp_min(0)
        votes = (-self.vote_sharpness * sq).view(f.shape[0], *self.anchors.shape[:2])
        per_class = votes.logsumexp(dim=2)
        return per_class - per_class.logsumexp(dim=1, keepdim=True)

    def predict(self, embeddings: Tensor) -> Tensor:
        """(N,) the class with the highest confidence score."""
        return self(embeddings).argmax(dim=1)

    def loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean of -log p_y over the batch (eq. 2.4)."""
        labels = as_labels(labels, "labels", embeddings.shape[0], embeddings.device)
        if labels.numel() and int(labels.max()) >= self.anchors.shape[0]:
            raise ValueError(f"labels must be < num_classes={self.anchors.shape[0]}, got "
                             f"{int(labels.max())}")
        return F.nll_loss(self(embeddings), labels)

    @torch.no_grad()
    def init_from_embeddings(self, embeddings: Tensor, labels: Labels, *, iterations: int = 25,
                             seed: int = 0) -> AnchorPointClassifier:
        """Place each class's K anchors by k-means (k-means++ seeding) on its embeddings.

        A class with fewer than K samples repeats them. Every class needs a sample.
        Returns self.
        """
        f = self._features(embeddings)
        labels = as_labels(labels, "labels", f.shape[0], f.device)
        generator = make_generator(seed)
        num_classes, k = self.anchors.shape[:2]
        for c in range(num_classes):
            members = f[labels == c]
            if members.shape[0] == 0:
                raise ValueError(f"class {c} has no embeddings to place its anchors")
            self.anchors[c] = kmeans(members, k, iterations, generator).to(self.anchors.dtype)
        return self

    def _features(self, embeddings):
        if not (isinstance(embeddings, torch.Tensor) and embeddings.dim() == 2
                and embeddings.shape[1] == self.anchors.shape[-1]):
            raise ValueError(f"embeddings must be (N, {self.anchors.shape[-1]}), got "
                             f"{getattr(embeddings, 'shape', type(embeddings).__name__)}")
        return F.normalize(embeddings, dim=1) if self.normalize else embeddings

    def extra_repr(self) -> str:
        c, k, d = self.anchors.shape
        return (f"num_classes={c}, embedding_dim={d}, anchors_per_class={k}, "
                f"vote_sharpness={self.vote_sharpness}, normalize={self.normalize}")


class TripletAnchorPointLoss(nn.Module):
    """omega * triplet loss + (1 - omega) * anchor-point classification loss (eq. 2.5).

    The paper's Triplet-A: both terms train the embedding, the second also the anchors.
    ``triplet_kwargs`` go to :class:`TripletMarginLoss` (margin, negatives,
    positive_fraction, ...). The defaults, K = 3 anchors per class, vote_sharpness 5 and
    omega 0.1, are the paper's (Cui et al. 2016). Shape: embeddings (B, D), labels (B,) -> 0-dim.
    """

    def __init__(self, num_classes: int, embedding_dim: int, *, anchors_per_class: int = 3,
                 vote_sharpness: float = 5.0, omega: float = 0.1, **triplet_kwargs: Any) -> None:
        super().__init__()
        check_number("omega", omega, low=0, high=1)
        self.omega = omega
        self.classifier = AnchorPointClassifier(num_classes, embedding_dim,
                                                anchors_per_class=anchors_per_class,
                                                vote_sharpness=vote_sharpness)
        self.triplet = TripletMarginLoss(**triplet_kwargs)

    def forward(self, embeddings: Tensor, labels: Tensor, extra_negatives: Optional[Tensor] = None,
                extra_negative_labels: Optional[Tensor] = None) -> Tensor:
        """embeddings (B, D), labels (B,) -> 0-dim omega · triplet + (1 - omega) · anchor
        loss."""
        triplet = self.triplet(embeddings, labels, extra_negatives, extra_negative_labels)
        return self.omega * triplet + (1 - self.omega) * self.classifier.loss(embeddings, labels)


def kmeans(x: Tensor, k: int, iterations: int = 25,
           generator: Optional[torch.Generator] = None) -> Tensor:
    """(k, D) centres of x (n, D) by Lloyd's algorithm from k-means++ seeds (deterministic).

    With n <= k the samples themselves (repeated) are the centres. An empty cluster keeps
    its centre.
    """
    n = x.shape[0]
    if n <= k:
        return x[torch.arange(k, device=x.device) % n].clone()
    first = int(torch.randint(n, (), generator=generator))
    centres = [x[first]]
    closest = (x - x[first]).pow(2).sum(1)
    for _ in range(1, k):
        pick = int(torch.multinomial(closest.cpu().double() + 1e-12, 1, generator=generator))
        centres.append(x[pick])
        closest = torch.minimum(closest, (x - x[pick]).pow(2).sum(1))
    centres = torch.stack(centres)
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres
