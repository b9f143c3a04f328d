"""Pure-PyTorch reference implementations: readable, float64-capable, the spec in code.

The native ops in ``finegrained_ops.ops`` are tested against these. They are not a fallback.
"""
from .class_balanced_loss import class_balanced_loss

__all__ = ["class_balanced_loss"]
