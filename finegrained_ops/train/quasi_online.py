"""Quasi-online triplet sampling (thesis 2.4.1): every ``refresh_every`` batches, embed the
whole training set once, then build each batch from anchors plus the local positives and hard
negatives mined for them against that (stale) feature bank."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import Sampler

from .._checks import check_int, make_generator
from .._typing import Labels
from ..data.samplers import PKBatchSampler
from ..ops.triplet import mine_from_bank


class QuasiOnlineBatchSampler(Sampler):
    """Batches of P x K anchors extended with bank-mined triplet members.

    Args:
        labels: (N,) class of every training item.
        embed_fn: ``embed_fn()`` -> (N, D) features of every training item in order (e.g.
            ``lambda: extract_features(model, bank_loader)[0]``); called at the first batch
            and then every ``refresh_every`` batches.
        p, k: anchors per batch, as in :class:`~finegrained_ops.data.PKBatchSampler`.
        refresh_every: batches between bank refreshes (the paper uses 1000 iterations).
        per_anchor: triplets drawn per anchor from its mined set (violating negatives, local
            positives); their positives and negatives join the batch.
        margin, positive_fraction: the mining rule (as in
            :func:`~finegrained_ops.triplet_margin_loss`); the default positive_fraction 0.6 is
            the paper's positive region, 60% of the anchor's same-class neighbours.
        num_batches, seed, num_replicas, rank: as in PKBatchSampler.

    Yields lists of dataset indices: the anchors (class by class), then the mined items not
    already in the batch, ascending. Batch sizes vary from p·k to p·k·(1 + 2·per_anchor).
    """

    def __init__(self, labels: Labels, embed_fn: Callable[[], Tensor], p: int, k: int,
                 *, refresh_every: int = 1000, per_anchor: int = 1, margin: float = 0.2,
                 positive_fraction: float = 0.6, num_batches: Optional[int] = None,
                 seed: int = 0, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None) -> None:
        self.anchors = PKBatchSampler(labels, p, k, num_batches=num_batches, seed=seed,
                                      num_replicas=num_replicas, rank=rank)
        check_int("refresh_every", refresh_every)
        self.labels = self.anchors.labels
        self.embed_fn, self.refresh_every = embed_fn, refresh_every
        self.per_anchor, self.margin = per_anchor, margin
        self.positive_fraction = positive_fraction
        self.seed, self.batches_drawn, self.bank, self.refreshes = int(seed), 0, None, 0

    def set_epoch(self, epoch: int) -> None:
        self.anchors.set_epoch(epoch)

    def __len__(self):
        return len(self.anchors)

    def __iter__(self):
        for anchors in self.anchors:
            if self.bank is None or self.batches_drawn % self.refresh_every == 0:
                self.bank = torch.as_tensor(self.embed_fn())
                if self.bank.dim() != 2 or self.bank.shape[0] != len(self.labels):
                    raise ValueError(f"embed_fn must return ({len(self.labels)}, D) features, "
                                     f"got {tuple(self.bank.shape)}")
                self.refreshes += 1
            anchors_t = torch.tensor(anchors)
            bank = self.bank.to(self.labels.device)
            _, positive, negative = mine_from_bank(
                bank[anchors_t], self.labels[anchors_t], bank, self.labels,
                per_anchor=self.per_anchor, margin=self.margin,
                positive_fraction=self.positive_fraction, query_indices=anchors_t,
                generator=make_generator(self.seed * 1_000_003 + self.batches_drawn))
            mined = torch.cat([positive, negative]).unique()
            mined = mined[~torch.isin(mined, anchors_t)]
            self.batches_drawn += 1
            yield anchors + mined.tolist()
