"""Reference class-balanced loss: the official formulas (richardaecn/class-balanced-loss,
``src/cifar_main.py``) written with plain tensor ops. Thesis ch. 5, eq. 5.6-5.13; docs/semantics.md §4.
"""
import torch
import torch.nn.functional as F


def class_balanced_loss(logits, target, samples_per_class, beta=0.9999, gamma=0.5,
                        loss_type="focal", reduction="mean", ignore_index=-100):
    """Same contract as :func:`finegrained_ops.class_balanced_loss`, computed naively.

    logits (N, C); target int64 (N,) or multi-hot (N, C); samples_per_class (C,).
    """
    n, c = logits.shape
    counts = torch.as_tensor(samples_per_class, dtype=torch.float64, device=logits.device)
    effective_number = (1.0 - beta ** counts) / (1.0 - beta)
    weights = 1.0 / effective_number
    weights = (weights / weights.sum() * c).to(logits.dtype)

    if target.dim() == 1:
        valid = target != ignore_index
        labels = torch.where(valid, target, torch.zeros_like(target))
        one_hot = F.one_hot(labels, c).to(logits.dtype) * valid[:, None].to(logits.dtype)
    else:
        valid = torch.ones(n, dtype=torch.bool, device=logits.device)
        one_hot = target.to(logits.dtype)
    # Weight of a sample: the weights of its positive classes, applied to all C terms.
    sample_weight = (one_hot * weights).sum(dim=1)

    if loss_type == "softmax":
        per_sample = -(one_hot * F.log_softmax(logits, dim=1)).sum(dim=1) * sample_weight
        divisor = valid.sum()
    else:
        bce = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="none")
        if loss_type == "focal" and gamma != 0:
            # The official stable modulator: exp(-gamma*t*z - gamma*log1p(exp(-z))).
            modulator = torch.exp(-gamma * one_hot * logits - gamma * F.softplus(-logits))
            bce = modulator * bce
        elif loss_type not in ("sigmoid", "focal"):
            raise ValueError(f"unknown loss_type {loss_type!r}")
        per_sample = (bce * sample_weight[:, None]).sum(dim=1)
        divisor = one_hot.sum()

    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / divisor.clamp_min(1)
