"""Module form of the contrastive loss (retrieval.contrastive_loss)."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..retrieval.contrastive_loss import check_arguments, contrastive_loss


class ContrastiveLoss(nn.Module):
    """Contrastive loss over a batch's pairs; arguments as retrieval.contrastive_loss.

    Shape: embeddings (B, D), labels (B,) int64 -> 0-dim.
    """

    def __init__(self, *, pos_margin: float = 0.0, neg_margin: float = 1.0, squared: bool = False,
                 negatives: str = "all", normalize: bool = True,
                 reduction: str = "mean_nonzero") -> None:
        super().__init__()
        check_arguments(pos_margin, neg_margin, negatives, reduction)
        self.kwargs: dict[str, Any] = dict(pos_margin=pos_margin, neg_margin=neg_margin,
                                           squared=squared, negatives=negatives,
                                           normalize=normalize, reduction=reduction)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """embeddings (B, D), labels (B,) -> 0-dim loss."""
        return contrastive_loss(embeddings, labels, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.kwargs.items())
