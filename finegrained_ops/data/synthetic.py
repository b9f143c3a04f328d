"""Synthetic data sets that need no download: super-/fine-class patch images (Xu et al. 2020,
sec. 4.1) and Gaussian classes for granularity studies (thesis 6.3.1)."""
from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_int, check_number, make_generator


def make_patch_dataset(*, n_images: int = 512, n_super: int = 32, fine_per_super: int = 4,
                       size: int = 32, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Images with one big patch of their super-class's pattern and one small patch of their
    fine class's pattern, each at a random position on a blank canvas (Xu et al. sec. 4.1).

    Fine class f belongs to super-class f // fine_per_super, so fine classes are nested in
    super-classes. Big patches are size/2 wide, small ones size/4, drawn from fixed random RGB
    patterns (the small patch is pasted last, so it is always fully visible). Fine classes are
    assigned round-robin before shuffling, so every fine class appears when n_images allows.

    Returns images (n_images, 3, size, size) float32 in [0, 1], super_labels and fine_labels
    (n_images,) int64.
    """
    check_int("n_images", n_images)
    check_int("n_super", n_super)
    check_int("fine_per_super", fine_per_super)
    check_int("size", size, 8)
    g = make_generator(seed)
    big, small = size // 2, size // 4
    n_fine = n_super * fine_per_super
    super_patterns = torch.rand(n_super, 3, big, big, generator=g)
    fine_patterns = torch.rand(n_fine, 3, small, small, generator=g)
    fine = torch.arange(n_images) % n_fine
    fine = fine[torch.randperm(n_images, generator=g)]
    coarse = fine // fine_per_super
    images = torch.zeros(n_images, 3, size, size)
    big_at = torch.randint(size - big + 1, (n_images, 2), generator=g)
    small_at = torch.randint(size - small + 1, (n_images, 2), generator=g)
    for i in range(n_images):
        (y, x), (v, u) = big_at[i].tolist(), small_at[i].tolist()
        images[i, :, y:y + big, x:x + big] = super_patterns[coarse[i]]
        images[i, :, v:v + small, u:u + small] = fine_patterns[fine[i]]
    return images, coarse, fine


def make_gaussian_classes(separation: float, *, n_per_class: int = 1000, feature_dim: int = 2,
                          seed: int = 0,
                          dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Two classes with unit covariance and means (0, ..., 0) and (m, 0, ..., 0), m = separation
    (thesis 6.3.1). Returns features (2·n_per_class, feature_dim) and labels (2·n_per_class,) int64
    (class 0 first)."""
    check_number("separation", separation)
    check_int("n_per_class", n_per_class)
    check_int("feature_dim", feature_dim)
    g = make_generator(seed)
    features = torch.randn(2 * n_per_class, feature_dim, generator=g, dtype=torch.float64)
    features[n_per_class:, 0] += separation
    labels = torch.arange(2).repeat_interleave(n_per_class)
    return features.to(dtype), labels


def make_hierarchical_gaussians(n_coarse: int, fine_per_coarse: int, *, n_per_class: int = 100,
                                feature_dim: int = 8, coarse_separation: float = 10.0,
                                fine_separation: float = 3.0, seed: int = 0,
                                dtype: torch.dtype = torch.float32
                                ) -> tuple[Tensor, Tensor, Tensor]:
    """Gaussian fine classes nested in coarse classes, for granularity tests (thesis 6.3.2).

    Coarse means lie at distance coarse_separation from the origin in random directions; each
    fine mean is its coarse mean plus fine_separation times a random unit vector; samples have
    unit covariance. Fine class f belongs to coarse class f // fine_per_coarse.
    Returns features (n_coarse·fine_per_coarse·n_per_class, feature_dim), coarse_labels and
    fine_labels (int64), in the order of :func:`make_patch_dataset`.
    """
    check_int("n_coarse", n_coarse)
    check_int("fine_per_coarse", fine_per_coarse)
    check_int("n_per_class", n_per_class)
    check_int("feature_dim", feature_dim)
    g = make_generator(seed)

    def directions(n):
        v = torch.randn(n, feature_dim, generator=g, dtype=torch.float64)
        return v / v.norm(dim=1, keepdim=True)

    coarse_means = coarse_separation * directions(n_coarse)
    n_fine = n_coarse * fine_per_coarse
    fine_to_coarse = torch.arange(n_fine) // fine_per_coarse
    fine_means = coarse_means[fine_to_coarse] + fine_separation * directions(n_fine)
    fine_labels = torch.arange(n_fine).repeat_interleave(n_per_class)
    features = fine_means[fine_labels] + torch.randn(len(fine_labels), feature_dim, generator=g,
                                                     dtype=torch.float64)
    return features.to(dtype), fine_to_coarse[fine_labels], fine_labels

