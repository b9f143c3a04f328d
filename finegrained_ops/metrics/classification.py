"""Classification accuracy: top-k, per class, balanced, and head/tail splits by training
counts (thesis table 4.4; many/medium/few-shot)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .._checks import as_labels
from .._typing import Counts, Labels


def topk_accuracy(logits: Tensor, target: Labels, *,
                  ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of samples whose target is among the k highest logits, for each k.

    logits (N, C) floating; target (N,) int64 in [0, C). Returns {k: float}.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("logits must be an (N, C) tensor")
    target = as_labels(target, "target", logits.shape[0], logits.device)
    n, c = logits.shape
    if n == 0:
        raise ValueError("logits must not be empty")
    if int(target.max()) >= c:
        raise ValueError(f"target must be < C={c}, got max {int(target.max())}")
    if any(not isinstance(k, int) or not 1 <= k <= c for k in ks):
        raise ValueError(f"every k must be an int in [1, C={c}], got {tuple(ks)}")
    top = logits.topk(max(ks), dim=1).indices == target[:, None]
    return {k: top[:, :k].any(dim=1).double().mean().item() for k in ks}


def per_class_accuracy(pred: Tensor, target: Labels, *,
                       num_classes: Optional[int] = None) -> Tensor:
    """(C,) float64 accuracy of each class over its test samples (NaN where a class has none).

    pred: (N,) predicted classes or (N, C) scores (argmax); target (N,) int64.
    """
    pred, target = _predictions(pred, target)
    c = num_classes or int(max(pred.max(), target.max())) + 1
    total = torch.bincount(target, minlength=c).double()
    correct = torch.bincount(target[pred == target], minlength=c).double()
    return correct / total  # 0 / 0 = NaN for classes without test samples


def balanced_accuracy(pred: Tensor, target: Labels) -> float:
    """Mean per-class accuracy over the classes present in target (scikit-learn's
    balanced_accuracy_score). Returns a float."""
    acc = per_class_accuracy(pred, target)
    return acc[~torch.isnan(acc)].mean().item()


def head_tail_accuracy(pred: Tensor, target: Labels, samples_per_class: Counts,
                       *, threshold: int = 100) -> dict[str, float]:
    """Accuracy on test samples of head classes (>= threshold training samples) and of tail
    classes (< threshold), as in thesis table 4.4, plus overall.

    pred: (N,) classes or (N, C) scores; target (N,); samples_per_class (C,). Returns
    {'overall', 'head', 'tail'} floats (NaN for a split with no test sample).
    """
    counts = torch.as_tensor(samples_per_class).to(torch.int64)
    return _split_accuracy(pred, target, counts, {"head": counts >= threshold,
                                                  "tail": counts < threshold})


def shot_accuracy(pred: Tensor, target: Labels, samples_per_class: Counts,
                  *, thresholds: tuple[int, int] = (100, 20)) -> dict[str, float]:
    """Many-shot (>= thresholds[0] training samples), medium-shot and few-shot
    (< thresholds[1]) accuracy, plus overall. Returns {'overall', 'many', 'medium', 'few'}."""
    many, few = thresholds
    if not few <= many:
        raise ValueError(f"thresholds must be (many, few) with few <= many, got {thresholds!r}")
    counts = torch.as_tensor(samples_per_class).to(torch.int64)
    return _split_accuracy(pred, target, counts, {"many": counts >= many,
                                                  "medium": (counts < many) & (counts >= few),
                                                  "few": counts < few})


def _split_accuracy(pred, target, counts, masks):
    pred, target = _predictions(pred, target)
    if counts.dim() != 1 or int(target.max()) >= counts.numel():
        raise ValueError(f"samples_per_class must be (C,) covering every target class, got shape "
                         f"{tuple(counts.shape)} for max target {int(target.max())}")
    correct = (pred == target).double()
    result = {"overall": correct.mean().item()}
    for name, class_mask in masks.items():
        in_split = class_mask.to(target.device)[target]
        result[name] = correct[in_split].mean().item() if bool(in_split.any()) else float("nan")
    return result


def _predictions(pred, target):
    pred = torch.as_tensor(pred)
    if pred.dim() == 2:
        pred = pred.argmax(dim=1)
    if pred.dim() != 1 or pred.is_floating_point():
        raise TypeError("pred must be (N,) integer classes or (N, C) scores")
    target = as_labels(target, "target", pred.shape[0], pred.device)
    if target.numel() == 0:
        raise ValueError("pred and target must not be empty")
    return pred.to(torch.int64), target
