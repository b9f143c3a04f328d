"""Reference long-tail softmax losses, each written straight from its paper's formula with plain
tensor ops (docs/semantics.md §4.2): logit adjustment (Menon et al.), Balanced Softmax (Ren et
al.), LDAM (Cao et al., kaidic/LDAM-DRW ``losses.py``) and the softmax focal loss.

Shapes: logits (N, C); target (N,) int64 class indices (``ignore_index`` rows count nowhere)
or (N, C) soft rows summing to 1; samples_per_class (C,). Reductions as the native functions.
"""
import torch
import torch.nn.functional as F


def _reduce(per_sample, divisor, reduction):
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / divisor if divisor > 0 else per_sample.sum() * 0


def _one_hot(logits, target, ignore_index):
    """(N, C) target rows and the (N,) mask of rows that count."""
    if target.dim() == 2:
        return target.to(logits.dtype), torch.ones(len(target), dtype=torch.bool,
                                                  device=target.device)
    valid = target != ignore_index
    labels = torch.where(valid, target, torch.zeros_like(target))
    return F.one_hot(labels, logits.shape[1]).to(logits.dtype) * valid[:, None], valid


def _sample_weights(t, class_weights):
    """W = sum_c t_c w_c of each row (w = 1 without weights: the row's target mass)."""
    return t.sum(dim=1) if class_weights is None else (t * class_weights.to(t.dtype)).sum(dim=1)


def _reduce_weighted(per_sample, t, class_weights, reduction):
    """'mean' divides by the target's mass, 'weighted_mean' by the samples' weights."""
    if reduction == "weighted_mean":
        return _reduce(per_sample, _sample_weights(t, class_weights).sum(), "mean")
    return _reduce(per_sample, t.sum(), reduction)


def _cross_entropy(logits, target, class_weights, reduction, ignore_index):
    """W * -sum_c t_c log softmax(logits)_c per row."""
    t, _ = _one_hot(logits, target, ignore_index)
    per_sample = -(t * F.log_softmax(logits, dim=1)).sum(dim=1) * _sample_weights(t, class_weights)
    return _reduce_weighted(per_sample, t, class_weights, reduction)


def logit_adjusted_loss(logits, target, samples_per_class, tau=1.0, class_weights=None,
                        reduction="mean", ignore_index=-100):
    """CE(z + tau log pi, y), pi_c = n_c / sum n (Menon et al., eq. 10)."""
    counts = torch.as_tensor(samples_per_class, dtype=torch.float64, device=logits.device)
    prior = counts / counts.sum()
    return _cross_entropy(logits + (tau * prior.log()).to(logits.dtype), target, class_weights,
                          reduction, ignore_index)


def balanced_softmax_loss(logits, target, samples_per_class, class_weights=None, reduction="mean",
                          ignore_index=-100):
    """CE(z + log n, y) (Ren et al., eq. 4: softmax with each logit scaled by its class count)."""
    counts = torch.as_tensor(samples_per_class, dtype=torch.float64, device=logits.device)
    return _cross_entropy(logits + counts.log().to(logits.dtype), target, class_weights,
                          reduction, ignore_index)


def ldam_loss(logits, target, samples_per_class, max_margin=0.5, scale=30.0, class_weights=None,
              reduction="weighted_mean", ignore_index=-100):
    """The official LDAMLoss.forward: margins m_c = C / n_c^(1/4) scaled to max m_c = max_margin,
    x_m = x - m_y onehot(y), F.cross_entropy(s x_m, y, weight=w), whose mean is the weighted
    mean ('weighted_mean': sum / sum of w_y); 'mean' divides by the counted rows."""
    counts = torch.as_tensor(samples_per_class, dtype=torch.float64, device=logits.device)
    margins = 1.0 / counts.sqrt().sqrt()
    margins = margins * (max_margin / margins.max())
    one_hot, _ = _one_hot(logits, target, ignore_index)
    x_m = logits - one_hot * margins.to(logits.dtype)
    weight = None if class_weights is None else class_weights.to(logits.dtype)
    if reduction == "mean":
        per_sample = F.cross_entropy(scale * x_m, target, weight=weight, reduction="none",
                                     ignore_index=ignore_index)
        return _reduce(per_sample, one_hot.sum(), "mean")
    return F.cross_entropy(scale * x_m, target, weight=weight,
                           reduction="mean" if reduction == "weighted_mean" else reduction,
                           ignore_index=ignore_index)


def softmax_focal_loss(logits, target, gamma=2.0, class_weights=None, reduction="mean",
                       ignore_index=-100):
    """W sum_c t_c (1 - p_c)^gamma (-log p_c), p = softmax(z), W = sum_c t_c w_c (Lin et al.'s
    focal term on the softmax; gamma = 0 is cross-entropy)."""
    t, _ = _one_hot(logits, target, ignore_index)
    log_p = F.log_softmax(logits, dim=1)
    terms = (1 - log_p.exp()).pow(gamma) * -log_p
    per_sample = _sample_weights(t, class_weights) * (t * terms).sum(dim=1)
    return _reduce_weighted(per_sample, t, class_weights, reduction)
