"""Classifier re-training on frozen features with class-balanced sampling: cRT and the LWS
scales (Kang et al., ICLR'20, sec. 4; nn.decoupled_classifiers)."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from .._checks import as_labels, check_int, check_number, check_tensor
from .._typing import Labels
from ..data.samplers import ClassBalancedSampler
from .loop import fit


def retrain_classifier(classifier: nn.Module, features: Tensor, labels: Labels, *,
                       epochs: int = 10, lr: float = 0.1, batch_size: int = 256, seed: int = 0,
                       loss_fn: Optional[Callable[..., Tensor]] = None,
                       **fit_kwargs: Any) -> list[dict[str, float]]:
    """Trains ``classifier`` in place on frozen ``features`` with class-balanced sampling (every
    draw picks a class uniformly, then one of its samples) and cross-entropy.

    cRT: pass a freshly initialised nn.Linear (the paper re-initialises the classifier). LWS:
    pass nn.LearnableWeightScaling(trained_linear), whose only trainable tensor is the scales.

    Args:
        classifier: an nn.Module mapping (N, D) features to (N, C) logits.
        features: (N, D) floating, e.g. from train.extract_features on the backbone.
        labels: (N,) int64 class indices.
        epochs, lr (SGD with momentum 0.9, cosine decay to 0 as in the paper), batch_size.
        seed: the sampler's seed. loss_fn: default F.cross_entropy. Other keywords go to fit.

    Returns: fit's history.
    """
    check_tensor("features", features, dim=2)
    labels = as_labels(labels, "labels", len(features))
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_number("lr", lr, low=0, low_open=True)
    params = [p for p in classifier.parameters() if p.requires_grad]
    if not params:
        raise ValueError("classifier has no trainable parameters")
    loader = DataLoader(TensorDataset(features, labels), batch_size=batch_size,
                        sampler=ClassBalancedSampler(labels, seed=seed))
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    return fit(classifier, loss_fn or nn.functional.cross_entropy, loader, optimizer, epochs,
               scheduler=scheduler, **{"progress": False, **fit_kwargs})
