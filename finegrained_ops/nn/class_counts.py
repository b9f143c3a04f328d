"""The bases of the class-weighted losses and of those built from the training class counts."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .._checks import compute_dtype
from .._typing import Counts
from ..ops.class_balanced_loss import _counts_tensor, check_counts_positive


class ClassWeightedLoss(nn.Module):
    """A loss with optional per-class weights ``class_weights``: None, or (C,) float64.

    They are a buffer that moves with ``.to(device)`` and stays float64 under ``.half()``;
    not saved in the state dict (what sets them, a constructor argument, a class-balanced
    rule or train.DeferredReweighting, sets them again). Assign a (C,) tensor to change them.
    """

    def __init__(self, *, class_weights: Optional[Counts] = None) -> None:
        super().__init__()
        self.register_buffer("class_weights", None if class_weights is None else
                             torch.as_tensor(class_weights, dtype=torch.float64).clone(),
                             persistent=False)
        # per_class's copies: (name, device, dtype) -> (source buffer, its version, copy)
        self._per_class_cache: dict[tuple[str, torch.device, torch.dtype],
                                    tuple[Tensor, int, Tensor]] = {}

    def weights_for(self, logits: Tensor) -> Optional[Tensor]:
        """``class_weights`` as the native loss reads them for these logits: on their device
        and in their compute dtype (weights set elsewhere, say CPU values a hook assigns to a
        loss that holds no other tensor and so has no device of its own, included)."""
        return self.per_class("class_weights", logits)

    def per_class(self, name: str, logits: Tensor) -> Optional[Tensor]:
        """The (C,) float64 buffer `name` (or None) on logits' device in their compute dtype,
        cast once per buffer, device and dtype: a cached copy, not a cast every call."""
        source = self._buffers[name]
        if source is None:
            return None
        if torch.compiler.is_compiling():  # traced: the cast is fused into the graph
            return source.to(logits.device, compute_dtype(logits.dtype))
        key = (name, logits.device, logits.dtype)
        hit = self._per_class_cache.get(key)
        if hit is None or hit[0] is not source or hit[1] != source._version:
            hit = (source, source._version, source.to(logits.device, compute_dtype(logits.dtype)))
            self._per_class_cache[key] = hit
        return hit[2]

    def _apply(self, fn, *args, **kwargs):
        weights = self.class_weights
        super()._apply(fn, *args, **kwargs)
        if weights is not None:  # where the cast put them, with their float64 values
            self.class_weights = weights.to(device=self.class_weights.device,
                                            dtype=torch.float64)
        return self


class ClassCountsLoss(ClassWeightedLoss):
    """A class-weighted loss that holds the per-class training counts and tensors derived
    from them.

    ``samples_per_class`` is an int64 buffer: it moves with ``.to(device)``, survives
    ``state_dict()`` and is not rounded by ``.half()``. Subclasses compute their per-class
    tensors (weights, offsets, margins) in :meth:`refresh`, as float64 non-persistent buffers;
    it runs at construction, when the module is moved or cast and when a state dict is loaded.
    After editing ``samples_per_class`` in place, call :meth:`refresh`.

    Args:
        samples_per_class: (C,) whole numbers of training samples, all > 0.
        class_weights: as ClassWeightedLoss.
    """

    def __init__(self, samples_per_class: Counts, *,
                 class_weights: Optional[Counts] = None) -> None:
        super().__init__(class_weights=class_weights)
        counts = _counts_tensor(samples_per_class)
        if counts.is_floating_point() and not bool((counts == counts.round()).all()):
            raise ValueError("samples_per_class must hold whole numbers of samples")
        check_counts_positive(counts)
        self.register_buffer("samples_per_class", counts.to(torch.int64).clone())
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def refresh(self) -> None:
        """Recomputes the tensors derived from ``samples_per_class``."""
        raise NotImplementedError

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.refresh()  # float64 on the new device, whatever the cast
        return self


def _refresh_after_load(module, incompatible_keys):
    module.refresh()  # a function, not a lambda: the module stays picklable
