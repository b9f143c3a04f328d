"""Hierarchical cascaded fine-tuning over a class tree (Ouyang et al. 2016, algorithms 1-2),
adapted from detection to classification: a node's negatives are the other classes' samples
its parent lets through, instead of background windows."""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from .._checks import as_labels, make_generator
from .._typing import Labels
from ..data.class_grouping import ClassTree
from .loop import eval_mode, fit


class HierarchicalCascade:
    """One model per node of a :class:`~finegrained_ops.data.ClassTree`, each fine-tuned from
    its parent's weights on its own classes.

    Every model maps inputs to C per-class scores, read as sigmoid probabilities (one-vs-rest,
    the analogue of the paper's per-class SVM scores). The root is trained on all samples;
    node (l, j) on:

    * positives: samples of the classes S_{l,j} (one-hot targets on those classes);
    * negatives: samples of other classes that reached the parent and that the parent
      accepts for this group, i.e. max_{c in S_{l,j}} parent score > thresholds[l - 1]
      (all-zero targets) (algorithm 2, lines 6-8).

    The loss is binary cross-entropy on the node's own classes only. At test time
    (algorithm 1) the root scores every sample; a child group is evaluated only where its
    parent's best score over the group's classes is >= the level's threshold; a class's final
    score is its leaf model's score, or -inf where its leaf group was rejected.

    Args:
        tree: the ClassTree (level 0 the root).
        model: the pretrained root initialisation M_{0,1}; never modified.
        thresholds: T_l for the transitions level l -> l+1: a float in (0, 1) or one per level
            transition.
        optimizer_fn: ``optimizer_fn(params)`` builds each node's optimizer.
        epochs, batch_size: per node.
        seed: shuffling seed. Other keywords go to :func:`fit`.
    """

    def __init__(self, tree: ClassTree, model: nn.Module,
                 thresholds: Union[float, Sequence[float]],
                 optimizer_fn: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 *, epochs: int = 5, batch_size: int = 64, seed: int = 0,
                 **fit_kwargs: Any) -> None:
        transitions = tree.num_levels - 1
        thresholds = ([float(thresholds)] * transitions if isinstance(thresholds, (int, float))
                      else [float(t) for t in thresholds])
        if len(thresholds) != transitions or not all(0 < t < 1 for t in thresholds):
            raise ValueError(f"thresholds must be one value in (0, 1) or {transitions} of them, "
                             f"got {thresholds!r}")
        self.tree, self.initial, self.thresholds = tree, model, thresholds
        self.optimizer_fn, self.epochs, self.batch_size = optimizer_fn, epochs, batch_size
        self.seed, self.fit_kwargs = seed, fit_kwargs
        self.models: dict[tuple[int, int], nn.Module] = {}  # (level, group) -> its model
        # (level, group) -> (positives, negatives) it was tuned on
        self.train_sizes: dict[tuple[int, int], tuple[int, int]] = {}

    def fit(self, inputs: Tensor, labels: Labels) -> HierarchicalCascade:
        """Algorithm 2 on ``inputs`` (N, ...) with class ``labels`` (N,). Returns self."""
        labels = as_labels(labels, "labels", len(inputs))
        if labels.numel() and int(labels.max()) >= self.tree.num_classes:
            raise ValueError(f"labels must be < {self.tree.num_classes} (the tree's classes)")
        # negatives[(l, j)]: indices of samples outside S_{l,j} that reach node (l, j).
        negatives = {(0, 0): torch.empty(0, dtype=torch.int64)}
        for level in range(self.tree.num_levels):
            for group, classes in enumerate(self.tree.groups(level)):
                parent = (self.initial if level == 0
                          else self.models[(level - 1, self.tree.parent(level, group))])
                node = (level, group)
                positives = torch.isin(labels, torch.tensor(classes)).nonzero().flatten()
                model = copy.deepcopy(parent)
                self._tune(model, inputs, labels, classes, positives, negatives[node])
                self.models[node] = model
                self.train_sizes[node] = (len(positives), len(negatives[node]))
                reached = torch.cat([positives, negatives[node]])
                for child in self.tree.children(level, group):
                    child_classes = self.tree.groups(level + 1)[child]
                    outside = reached[~torch.isin(labels[reached], torch.tensor(child_classes))]
                    scores = self._scores(model, inputs[outside])[:, child_classes]
                    accepted = scores.max(1).values > self.thresholds[level]
                    negatives[(level + 1, child)] = outside[accepted]
        return self

    @torch.no_grad()
    def predict(self, inputs: Tensor) -> tuple[Tensor, dict[tuple[int, int], int]]:
        """Algorithm 1. Returns (scores (N, C) with -inf for rejected classes, evaluated: a
        dict (level, group) -> number of samples that node's model scored)."""
        if not self.models:
            raise RuntimeError("call fit() first")
        n, num_levels = len(inputs), self.tree.num_levels
        reach = {(0, 0): torch.ones(n, dtype=torch.bool)}
        final = torch.full((n, self.tree.num_classes), float("-inf"))
        evaluated = {}
        for level in range(num_levels):
            for group, classes in enumerate(self.tree.groups(level)):
                mask = reach.get((level, group), torch.zeros(n, dtype=torch.bool))
                evaluated[(level, group)] = int(mask.sum())
                if not mask.any():
                    continue
                scores = self._scores(self.models[(level, group)], inputs[mask])
                if level == num_levels - 1:
                    rows = mask.nonzero().flatten()
                    final[rows[:, None], torch.tensor(classes)] = scores[:, classes]
                for child in self.tree.children(level, group):
                    child_classes = self.tree.groups(level + 1)[child]
                    accepted = scores[:, child_classes].max(1).values >= self.thresholds[level]
                    child_mask = torch.zeros(n, dtype=torch.bool)
                    child_mask[mask.nonzero().flatten()[accepted]] = True
                    reach[(level + 1, child)] = child_mask
        return final, evaluated

    def _tune(self, model, inputs, labels, classes, positives, negatives):
        cols = torch.tensor(classes)
        index = torch.cat([positives, negatives])
        targets = torch.zeros(len(index), len(classes))
        targets[torch.arange(len(positives)), torch.searchsorted(cols, labels[positives])] = 1.0
        loader = DataLoader(TensorDataset(inputs[index], targets), batch_size=self.batch_size,
                            shuffle=True, generator=make_generator(self.seed + len(self.models)))

        def node_loss(logits, target):
            return F.binary_cross_entropy_with_logits(logits[:, cols.to(logits.device)].float(),
                                                      target)

        fit(model, node_loss, loader, self.optimizer_fn(model.parameters()), self.epochs,
            **self.fit_kwargs)

    def _scores(self, model, inputs):
        with eval_mode(model):
            device = next(model.parameters()).device
            return torch.cat([torch.sigmoid(model(inputs[i:i + 1024].to(device)).float()).cpu()
                              for i in range(0, len(inputs), 1024)]) if len(inputs) else \
                torch.empty(0, self.tree.num_classes)
