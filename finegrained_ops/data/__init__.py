"""Long-tail profiles and subsets, samplers, class grouping and bundled data sets (docs/semantics.md §5).

Pure Python; every random choice comes from a seeded torch.Generator, never the global RNG.
"""
from .class_grouping import ClassTree, class_means, class_similarity, hierarchical_groups
from .digits import Digits, load_digits
from .image_folder import ImageFolderDataset
from .long_tail import (balanced_subset, imbalance_factor, long_tailed_counts, long_tailed_subset,
                        pseudo_uniform_subset)
from .samplers import ClassBalancedSampler, PKBatchSampler
from .synthetic import make_gaussian_classes, make_hierarchical_gaussians, make_patch_dataset

__all__ = [
    "ClassBalancedSampler",
    "ClassTree",
    "Digits",
    "ImageFolderDataset",
    "PKBatchSampler",
    "balanced_subset",
    "class_means",
    "class_similarity",
    "hierarchical_groups",
    "imbalance_factor",
    "load_digits",
    "long_tailed_counts",
    "long_tailed_subset",
    "make_gaussian_classes",
    "make_hierarchical_gaussians",
    "make_patch_dataset",
    "pseudo_uniform_subset",
]
