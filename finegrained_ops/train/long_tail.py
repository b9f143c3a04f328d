"""Two-stage training for long-tailed data (thesis 4.2.2): learn features on the whole
long-tailed set, then fine-tune on a more balanced subset with a small learning rate."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._checks import as_labels, make_generator
from .._typing import Labels
from ..data.long_tail import pseudo_uniform_subset
from .loop import fit


def two_stage_long_tail(model: nn.Module, loss_fn: Callable[..., Tensor], dataset: Dataset,
                        labels: Labels,
                        optimizer_fn: Callable[[list[nn.Parameter], float], torch.optim.Optimizer],
                        lr: float, epochs: int, finetune_lr: float, finetune_epochs: int,
                        *, batch_size: int = 64, per_class_cap: Optional[int] = None,
                        finetune_loss_fn: Optional[Callable[..., Tensor]] = None, seed: int = 0,
                        **fit_kwargs: Any
                        ) -> tuple[list[dict[str, float]], list[dict[str, float]], Tensor]:
    """Stage 1: train on ``dataset`` as it is. Stage 2: fine-tune on at most
    ``per_class_cap`` samples per class (default: the smallest class count, i.e. a balanced
    subset) with ``finetune_lr``.

    Args:
        model, loss_fn: as in :func:`fit`; batches of ``dataset`` are ``(input, label)``.
        labels: (N,) int64, the class of every item of ``dataset``.
        optimizer_fn: ``optimizer_fn(params, lr)`` builds each stage's optimizer (a fresh
            one for stage 2, so no momentum carries over).
        finetune_loss_fn: stage-2 loss (default ``loss_fn``).
        seed: shuffling and subset seed. Other keywords go to :func:`fit`.

    Returns:
        (stage-1 history, stage-2 history, stage-2 subset indices (sorted int64 tensor)).
    """
    labels = as_labels(labels, "labels", len(dataset))
    counts = labels.bincount()
    cap = int(counts[counts > 0].min()) if per_class_cap is None else per_class_cap
    subset = pseudo_uniform_subset(labels, cap, seed=seed)
    histories: list[list[dict[str, float]]] = []
    for data, stage_lr, stage_epochs, stage_loss in (
            (dataset, lr, epochs, loss_fn),
            (Subset(dataset, subset.tolist()), finetune_lr, finetune_epochs,
             finetune_loss_fn or loss_fn)):
        loader = DataLoader(data, batch_size=batch_size, shuffle=True,
                            generator=make_generator(seed + len(histories)))
        params = list(model.parameters()) + (list(stage_loss.parameters())
                                             if hasattr(stage_loss, "parameters") else [])
        histories.append(fit(model, stage_loss, loader, optimizer_fn(params, stage_lr),
                             stage_epochs, **fit_kwargs))
    return histories[0], histories[1], subset
