"""Evaluation: classification, retrieval, granularity, domain similarity, kernel approximation
(docs/semantics.md §5). Pure Python (torch, numpy; POT for domain similarity)."""
from .classification import (balanced_accuracy, head_tail_accuracy, per_class_accuracy,
                             shot_accuracy, topk_accuracy)
from .domain_similarity import (domain_distance, domain_similarity, rank_source_classes,
                                select_source_classes)
from .granularity import class_medoids, granularity
from .kernel_approximation import kernel_approximation_error
from .retrieval import (evaluate_ranking, map_at_r, mean_average_precision, precision_at_1,
                        recall_at_k)

__all__ = [
    "balanced_accuracy",
    "class_medoids",
    "domain_distance",
    "domain_similarity",
    "evaluate_ranking",
    "granularity",
    "head_tail_accuracy",
    "kernel_approximation_error",
    "map_at_r",
    "mean_average_precision",
    "per_class_accuracy",
    "precision_at_1",
    "rank_source_classes",
    "recall_at_k",
    "select_source_classes",
    "shot_accuracy",
    "topk_accuracy",
]
