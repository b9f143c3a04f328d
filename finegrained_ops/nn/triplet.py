"""Module form of the fused triplet margin loss, with cross-rank mining under torch.distributed."""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .._checks import check_choice
from ..ops.triplet import REDUCTIONS, check_triplet_args, mine_triplets, triplet_margin_loss


class TripletMarginLoss(nn.Module):
    """Triplet margin loss with in-batch hard-negative mining (thesis ch. 2) as a module.

    Args:
        margin, negatives, positive_fraction, reduction, squared, normalize: as in
            :func:`finegrained_ops.triplet_margin_loss`.
        distributed: when torch.distributed is initialised with more than one rank, mine
            over the embeddings of every rank (all-gather): the loss equals the loss of the
            concatenated global batch on every rank. Each rank's own embeddings stay in the
            graph and receive world_size times their share of the gradient, so that
            DistributedDataParallel's gradient averaging yields exactly the single-process
            gradient of the global batch. Every rank must call the loss.

    Shape: embeddings (B, D), labels (B,) int64, optional extra_negatives (E, D) and
    extra_negative_labels (E,) -> 0-dim.

    Example::

        criterion = TripletMarginLoss(margin=0.2, positive_fraction=0.6)
        loss = criterion(model(images), labels)
    """

    def __init__(self, *, margin: float = 0.2, negatives: str = "violating",
                 positive_fraction: float = 1.0, reduction: str = "mean_nonzero",
                 squared: bool = True, normalize: bool = True, distributed: bool = False) -> None:
        super().__init__()
        check_triplet_args(margin, negatives, positive_fraction)
        check_choice("reduction", reduction, REDUCTIONS)
        self.margin, self.negatives, self.positive_fraction = margin, negatives, positive_fraction
        self.reduction, self.squared, self.normalize = reduction, squared, normalize
        self.distributed = distributed

    def forward(self, embeddings: Tensor, labels: Tensor, extra_negatives: Optional[Tensor] = None,
                extra_negative_labels: Optional[Tensor] = None) -> Tensor:
        """embeddings (B, D), labels (B,), extra negatives (E, D) and labels (E,) -> 0-dim loss."""
        embeddings, labels, extra_negatives, extra_negative_labels = self._global_batch(
            embeddings, labels, extra_negatives, extra_negative_labels)
        return triplet_margin_loss(embeddings, labels, margin=self.margin,
                                   negatives=self.negatives,
                                   positive_fraction=self.positive_fraction,
                                   extra_negatives=extra_negatives,
                                   extra_negative_labels=extra_negative_labels,
                                   reduction=self.reduction, squared=self.squared,
                                   normalize=self.normalize)

    def mine(self, embeddings: Tensor, labels: Tensor, extra_negatives: Optional[Tensor] = None,
             extra_negative_labels: Optional[Tensor] = None, max_triplets: Optional[int] = None,
             generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor, Tensor]:
        """The triplets forward() uses, as in :func:`finegrained_ops.mine_triplets`.

        Under ``distributed`` the indices refer to the gathered global batch (rank order).
        """
        embeddings, labels, extra_negatives, extra_negative_labels = self._global_batch(
            embeddings, labels, extra_negatives, extra_negative_labels)
        return mine_triplets(embeddings, labels, margin=self.margin, negatives=self.negatives,
                             positive_fraction=self.positive_fraction,
                             extra_negatives=extra_negatives,
                             extra_negative_labels=extra_negative_labels,
                             max_triplets=max_triplets, generator=generator, squared=self.squared,
                             normalize=self.normalize)

    def _global_batch(self, embeddings, labels, extra, extra_labels):
        if not (self.distributed and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return embeddings, labels, extra, extra_labels
        if extra is None:  # every rank joins the same collectives, with or without extras
            extra = embeddings.new_zeros((0, embeddings.shape[1]))
            extra_labels = labels.new_zeros((0,))
        embeddings, labels = all_gather_rows(embeddings, labels)
        extra, extra_labels = all_gather_rows(extra, extra_labels)
        if extra.shape[0] == 0:
            extra = extra_labels = None
        return embeddings, labels, extra, extra_labels

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, negatives={self.negatives!r}, "
                f"positive_fraction={self.positive_fraction}, reduction={self.reduction!r}, "
                f"squared={self.squared}, normalize={self.normalize}, "
                f"distributed={self.distributed}")


def all_gather_rows(rows, labels):
    """Concatenate (n_r, D) rows and (n_r,) labels of every rank, in rank order.

    Ranks may hold different n_r. The local rows stay attached to the graph with their
    gradient scaled by world_size (value unchanged: x + (y - y.detach()) with y = (w-1) x).
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([rows.shape[0]], device=rows.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    longest = max(sizes)

    def gather(t):
        padded = t.new_zeros((longest,) + tuple(t.shape[1:]))
        padded[:t.shape[0]] = t.detach()
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        return [part[:n] for part, n in zip(parts, sizes)]

    row_parts, label_parts = gather(rows), gather(labels)
    scaled = rows * (world - 1)
    row_parts[rank] = rows + (scaled - scaled.detach())
    label_parts[rank] = labels
    return torch.cat(row_parts), torch.cat(label_parts)
