"""Functional API: input validation and autograd around the native kernels in ``_C``."""
from .class_balanced_loss import class_balanced_loss, class_balanced_weights, effective_number

__all__ = ["class_balanced_loss", "class_balanced_weights", "effective_number"]
