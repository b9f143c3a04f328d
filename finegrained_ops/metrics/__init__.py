"""Evaluation: classification, retrieval, kernel approximation (DESIGN §6). Pure Python."""
from .classification import (balanced_accuracy, head_tail_accuracy, per_class_accuracy,
                             shot_accuracy, topk_accuracy)
from .kernel_approximation import kernel_approximation_error
from .retrieval import map_at_r, mean_average_precision, precision_at_1, recall_at_k

__all__ = [
    "balanced_accuracy",
    "head_tail_accuracy",
    "kernel_approximation_error",
    "map_at_r",
    "mean_average_precision",
    "per_class_accuracy",
    "precision_at_1",
    "recall_at_k",
    "shot_accuracy",
    "topk_accuracy",
]
