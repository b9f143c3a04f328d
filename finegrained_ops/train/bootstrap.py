"""Dataset bootstrapping with a labelling oracle (thesis 2.2.2): grow a labelled set from
candidate pools, keeping the oracle's rejections as hard negatives."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .._checks import as_labels
from .._typing import Labels


@dataclass
class BootstrapResult:
    indices: torch.Tensor                 # (|S|,) item indices of the final labelled set
    labels: torch.Tensor                  # (|S|,) their classes
    hard_negative_indices: torch.Tensor   # (|H|,) oracle-rejected items
    hard_negative_labels: torch.Tensor    # (|H|,) the class each was wrongly given
    model: object                         # trained on the final S and H
    rounds: list = field(default_factory=list)  # per round: candidates, confident, true/false positives


def bootstrap_dataset(seed_indices: Labels, seed_labels: Labels,
                      candidate_pools: Iterable[Labels],
                      train_fn: Callable[[Tensor, Tensor, Tensor, Tensor], Any],
                      score_fn: Callable[[Any, Tensor], Any],
                      oracle: Callable[[Tensor, Tensor], Any],
                      *, threshold: float = 0.5) -> BootstrapResult:
    """Rounds of train -> score a pool -> keep confident -> oracle -> grow S and H.

    Round i (of len(candidate_pools)):
      1. ``model = train_fn(S_idx, S_labels, H_idx, H_labels)`` on the current labelled set S
         and hard negatives H (item indices into the user's data);
      2. ``probs = score_fn(model, pool)`` (len(pool), N) class probabilities for the pool's
         items; items whose top probability is > ``threshold`` form D_i, each labelled with
         its top class;
      3. ``oracle(D_i indices, predicted classes)`` -> bool (|D_i|,): True for a true positive.
         True positives join S with their predicted class; false positives join H labelled
         with the class they were mistaken for (the negatives triplet mining uses as
         ``extra_negatives`` / ``extra_negative_labels``).
    After the last round a final model is trained on S and H.

    Returns a :class:`BootstrapResult`.
    """
    s_idx = torch.as_tensor(seed_indices, dtype=torch.int64).flatten()
    s_lab = as_labels(seed_labels, "seed_labels", len(s_idx))
    h_idx, h_lab = torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    rounds = []
    for i, pool in enumerate(candidate_pools):
        pool = torch.as_tensor(pool, dtype=torch.int64).flatten()
        model = train_fn(s_idx, s_lab, h_idx, h_lab)
        probs = torch.as_tensor(score_fn(model, pool))
        if probs.dim() != 2 or probs.shape[0] != len(pool):
            raise ValueError(f"score_fn must return ({len(pool)}, N) probabilities, got "
                             f"{tuple(probs.shape)}")
        confidence, predicted = probs.max(1)
        confident = confidence > threshold
        d_idx, d_lab = pool[confident], predicted[confident].to(torch.int64)
        verdict = torch.as_tensor(oracle(d_idx, d_lab), dtype=torch.bool).flatten()
        if verdict.shape[0] != len(d_idx):
            raise ValueError(f"oracle must return {len(d_idx)} booleans, got {verdict.shape[0]}")
        s_idx, s_lab = torch.cat([s_idx, d_idx[verdict]]), torch.cat([s_lab, d_lab[verdict]])
        h_idx, h_lab = torch.cat([h_idx, d_idx[~verdict]]), torch.cat([h_lab, d_lab[~verdict]])
        rounds.append({"round": i, "candidates": len(pool), "confident": len(d_idx),
                       "true_positives": int(verdict.sum()),
                       "false_positives": int((~verdict).sum())})
    model = train_fn(s_idx, s_lab, h_idx, h_lab)
    return BootstrapResult(s_idx, s_lab, h_idx, h_lab, model, rounds)
