"""Class activation maps (Zhou et al., CVPR'16): where a global-average-pooling + linear
classifier finds the evidence for a class (docs/semantics.md §6)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import FLOATING, check_tensor, check_value


def class_activation_map(features: Tensor, fc_weight: Tensor, classes: Tensor,
                         *, size: Optional[tuple[int, int]] = None,
                         normalize: bool = True) -> Tensor:
    """CAM_k(i, j) = sum_c w_kc f_c(i, j) for the class k of each image.

    features: (N, C, h, w) floating, the last convolutional map, whose spatial mean the
    classifier sees. fc_weight: (K, C) floating, the linear classifier's weight. classes: (N,)
    int64 class of each map in [0, K) (e.g. the prediction or the label). size: (H, W) to
    upsample to (bilinear), e.g. the input image's; None keeps (h, w). normalize: rescale
    each map to [0, 1] (min-max).
    Returns (N, H, W) in features' dtype.
    """
    check_tensor("features", features, dim=4, dtypes=FLOATING)
    check_tensor("fc_weight", fc_weight, dim=2, dtypes=FLOATING)
    if fc_weight.shape[1] != features.shape[1]:
        raise ValueError(f"fc_weight must be (K, C={features.shape[1]}), got "
                         f"{tuple(fc_weight.shape)}")
    classes = torch.as_tensor(classes, device=features.device)
    if classes.shape != (features.shape[0],) or classes.dtype != torch.int64:
        raise ValueError(f"classes must be int64 (N={features.shape[0]},), got "
                         f"{classes.dtype} {tuple(classes.shape)}")
    check_value(((classes >= 0) & (classes < len(fc_weight))).all(),
                f"classes must be in [0, K={len(fc_weight)}) (fc_weight's rows)")
    cams = torch.einsum("nc,nchw->nhw", fc_weight[classes].to(features.dtype), features)
    if size is not None:
        cams = F.interpolate(cams[:, None], size=tuple(size), mode="bilinear",
                             align_corners=False)[:, 0]
    if normalize:
        low = cams.flatten(1).amin(dim=1)[:, None, None]
        span = cams.flatten(1).amax(dim=1)[:, None, None] - low
        cams = (cams - low) / torch.where(span > 0, span, torch.ones_like(span))
    return cams
