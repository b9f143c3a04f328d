"""Class-balanced and P×K samplers for torch.utils.data (Ouyang et al. 3.3.3; thesis ch. 2).

Both draw an epoch's global sequence from torch.Generator(seed + epoch) (call ``set_epoch``
each epoch) and give each rank a disjoint share of it: rank r of R takes every R-th item, so
the ranks together cover the sequence once. The rank and world size come from
torch.distributed when it is initialised, or from the arguments.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .._checks import as_labels, check_int, make_generator
from .._typing import Labels
from ._labels import class_members


def _replicas(num_replicas, rank):
    if num_replicas is None:
        num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if rank is None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if not (isinstance(num_replicas, int) and num_replicas >= 1 and 0 <= rank < num_replicas):
        raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got "
                         f"num_replicas={num_replicas!r}, rank={rank!r}")
    return num_replicas, rank


class _EpochSampler(Sampler):
    def __init__(self, labels: Labels, seed: int, num_replicas: Optional[int],
                 rank: Optional[int]) -> None:
        self.labels = as_labels(labels)
        _, self.groups = class_members(self.labels)
        if not self.groups:
            raise ValueError("labels must not be empty")
        self.seed, self.epoch = int(seed), 0
        self.num_replicas, self.rank = _replicas(num_replicas, rank)

    def set_epoch(self, epoch: int) -> None:
        """Use the epoch's own draw (same seed and epoch, same sequence on every rank)."""
        self.epoch = int(epoch)

    def _generator(self):
        return make_generator(self.seed + self.epoch)


class ClassBalancedSampler(_EpochSampler):
    """Class-uniform sampling: each draw picks a class uniformly, then a sample within it.

    Within a class the samples are visited in a fresh random order, reshuffled when used up,
    so a class of n samples repeats none of them before all n have been drawn.

    Args:
        labels: (N,) class indices; classes with no sample are never drawn.
        num_samples: draws per epoch over all ranks (default N); each rank gets
            ceil(num_samples / num_replicas) of them.
        seed, num_replicas, rank: see the module docstring.

    Yields dataset indices.
    """

    def __init__(self, labels: Labels, *, num_samples: Optional[int] = None, seed: int = 0,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None) -> None:
        super().__init__(labels, seed, num_replicas, rank)
        if num_samples is not None:
            check_int("num_samples", num_samples)
        self.num_samples = len(self.labels) if num_samples is None else num_samples
        self.per_rank = -(-self.num_samples // self.num_replicas)

    def __len__(self):
        return self.per_rank

    def __iter__(self):
        g = self._generator()
        total = self.per_rank * self.num_replicas
        classes = torch.randint(len(self.groups), (total,), generator=g)
        # The slots of each class, ascending: one sort, O(total log total), not a scan per class.
        by_class = torch.sort(classes, stable=True).indices
        counts = torch.bincount(classes, minlength=len(self.groups)).tolist()
        draws = torch.empty(total, dtype=torch.int64)
        for members, slots in zip(self.groups, torch.split(by_class, counts)):
            rounds = -(-len(slots) // len(members))
            cycle = torch.cat([members[torch.randperm(len(members), generator=g)]
                               for _ in range(rounds)]) if rounds else members[:0]
            draws[slots] = cycle[:len(slots)]
        return iter(draws[self.rank::self.num_replicas].tolist())


class PKBatchSampler(_EpochSampler):
    """Batches of P distinct classes × K samples each, the form in-batch triplet mining needs.

    A class with at least K samples gives K distinct ones; a shorter class is sampled with
    replacement (only then). Classes of a batch are drawn uniformly without replacement.

    Args:
        labels: (N,) class indices with at least p non-empty classes.
        p, k: classes per batch and samples per class.
        num_batches: batches per epoch over all ranks (default N // (p·k), at least 1); each
            rank gets num_batches // num_replicas (at least 1) whole batches.
        seed, num_replicas, rank: see the module docstring.

    Yields lists of p·k dataset indices, class by class (K consecutive entries per class).
    """

    def __init__(self, labels: Labels, p: int, k: int, *, num_batches: Optional[int] = None,
                 seed: int = 0, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None) -> None:
        super().__init__(labels, seed, num_replicas, rank)
        check_int("p", p)
        check_int("k", k)
        if p > len(self.groups):
            raise ValueError(f"p={p} classes per batch but labels have only {len(self.groups)} "
                             "non-empty classes")
        self.p, self.k = p, k
        if num_batches is None:
            num_batches = max(1, len(self.labels) // (p * k))
        check_int("num_batches", num_batches)
        self.per_rank = max(1, num_batches // self.num_replicas)

    def __len__(self):
        return self.per_rank

    def __iter__(self):
        g = self._generator()
        batches = []
        for _ in range(self.per_rank * self.num_replicas):
            batch = []
            for c in torch.randperm(len(self.groups), generator=g)[:self.p].tolist():
                members = self.groups[c]
                if len(members) >= self.k:
                    pick = torch.randperm(len(members), generator=g)[:self.k]
                else:
                    pick = torch.randint(len(members), (self.k,), generator=g)
                batch.extend(members[pick].tolist())
            batches.append(batch)
        return iter(batches[self.rank::self.num_replicas])
