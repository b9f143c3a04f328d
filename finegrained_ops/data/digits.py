"""scikit-learn's bundled 8×8 digits as tensors, optionally long-tailed (no download)."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .._checks import make_generator
from .._optional import require
from .long_tail import long_tailed_subset


class Digits(NamedTuple):
    train_images: torch.Tensor  # (N_train, 1, 8, 8) float32 in [0, 1]
    train_labels: torch.Tensor  # (N_train,) int64, 0..9
    test_images: torch.Tensor   # (N_test, 1, 8, 8)
    test_labels: torch.Tensor   # (N_test,)


def load_digits(*, long_tailed: Optional[float] = None, seed: int = 0,
                test_fraction: float = 0.3) -> Digits:
    """The 1 797 digits of scikit-learn (UCI optical digits), split per class into train and
    test by a seeded shuffle.

    long_tailed: None, or an imbalance factor: the training set is then reduced to the
        long-tailed profile of thesis 5.4.1 (digit 0 the head, 9 the tail), the test set kept
        balanced, as for long-tailed CIFAR.
    Returns a :class:`Digits` tuple of tensors (pixel values scaled from 0..16 to [0, 1]).
    """
    datasets = require("sklearn.datasets", "load_digits")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = datasets.load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    g = make_generator(seed)
    train, test = [], []
    for c in range(10):
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        n_test = round(test_fraction * len(members))
        test.append(members[:n_test])
        train.append(members[n_test:])
    train, test = torch.sort(torch.cat(train)).values, torch.sort(torch.cat(test)).values
    if long_tailed is not None:
        train = train[long_tailed_subset(labels[train], long_tailed, seed=seed)]
    return Digits(images[train], labels[train], images[test], labels[test])
