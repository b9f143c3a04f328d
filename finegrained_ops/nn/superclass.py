"""Learning fine-grained patterns from super-class labels only (Xu et al. 2020, eq. 4 and 5):
super-class cross-entropy plus lambda times an instance-classification cross-entropy, each
training image being its own class."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import as_labels, check_number, check_tensor
from ..data._labels import indices_by_class


class SuperClassInstanceLoss(nn.Module):
    """CE(super-class) + lambda_instance · CE(instance), on features from any backbone.

    Holds the two classifiers: a linear super-class head (num_super, D) and one weight vector
    per training instance (n, D), D = feature_dim.

    within_super=True (Base-Indi_eff, eq. 5): the instance softmax runs only over the
    instances of the sample's own super-class, so a sample costs O(D · n_b) for the n_b
    instances of its super-class instead of O(D · n); the logits of the other instances are
    never computed. within_super=False (Base-Indi, eq. 4): softmax over all n instances.
    lambda_instance=0 is the Base objective (super-class labels only).

    Args:
        feature_dim: D, the features' width.
        instance_super: (n,) int64, the super-class of every training instance (instance i is
            training image i; n = training-set size).
        lambda_instance: >= 0, the weight of the instance term.

    Shape: features (B, D) and target = (super_labels (B,), instance_ids (B,)), with
    super_labels == instance_super[instance_ids] -> the 0-dim mean loss.
    """

    def __init__(self, feature_dim: int, instance_super: Tensor, *, lambda_instance: float = 1.0,
                 within_super: bool = True) -> None:
        super().__init__()
        instance_super = as_labels(instance_super, "instance_super")
        if not instance_super.numel():
            raise ValueError("instance_super must list at least one instance")
        check_number("lambda_instance", lambda_instance, low=0)
        num_super = int(instance_super.max()) + 1
        self.super_head = nn.Linear(feature_dim, num_super)
        self.instance_weight = nn.Parameter(
            torch.randn(len(instance_super), feature_dim) * feature_dim ** -0.5)
        self.lambda_instance, self.within_super = float(lambda_instance), bool(within_super)
        self.register_buffer("instance_super", instance_super)
        # Instances of each super-class, padded with -1: row b lists the softmax support of
        # a sample of super-class b, and its position in the row is the instance's target.
        groups = indices_by_class(instance_super)
        table = torch.full((num_super, max(len(g) for g in groups)), -1, dtype=torch.int64)
        position = torch.empty_like(instance_super)
        for b, g in enumerate(groups):
            table[b, :len(g)] = g
            position[g] = torch.arange(len(g))
        self.register_buffer("super_members", table)
        self.register_buffer("position_in_super", position)

    def forward(self, features: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
        """features (B, D), target (super_labels (B,), instance_ids (B,)) -> 0-dim loss."""
        if not (isinstance(target, (tuple, list)) and len(target) == 2):
            raise TypeError("target must be a pair (super_labels (B,), instance_ids (B,)), got "
                            f"{type(target).__name__}")
        super_labels, instance_ids = target
        check_tensor("features", features, dim=2)
        n, feature_dim = self.instance_weight.shape
        if features.shape[1] != feature_dim:
            raise ValueError(f"features have {features.shape[1]} dims, the loss was built for "
                             f"feature_dim={feature_dim}")
        instance_ids = instance_ids.to(torch.int64)
        if instance_ids.numel() and not (
                0 <= int(instance_ids.min()) and int(instance_ids.max()) < n):
            raise ValueError(f"instance_ids must be in [0, {n}), got [{int(instance_ids.min())}, "
                             f"{int(instance_ids.max())}]")
        if not torch.equal(self.instance_super[instance_ids], super_labels.to(torch.int64)):
            raise ValueError("super_labels disagree with instance_super[instance_ids]")
        loss = F.cross_entropy(self.super_head(features), super_labels)
        if self.lambda_instance == 0:
            return loss
        if self.within_super:
            members = self.super_members[super_labels]                      # (B, n_b max)
            # F.embedding: its backward sums repeated rows in a fixed order (indexing's
            # accumulate does not promise that on every backend)
            weights = F.embedding(members.clamp_min(0), self.instance_weight)  # (B, n_b, D)
            logits = torch.einsum("bd,bkd->bk", features, weights.to(features.dtype))
            logits = logits.masked_fill(members < 0, float("-inf"))
            instance_loss = F.cross_entropy(logits, self.position_in_super[instance_ids])
        else:
            instance_loss = F.cross_entropy(features @ self.instance_weight.T.to(features.dtype),
                                            instance_ids)
        return loss + self.lambda_instance * instance_loss

    def extra_repr(self) -> str:
        return (f"instances={self.instance_weight.shape[0]}, super_classes="
                f"{self.super_head.out_features}, lambda_instance={self.lambda_instance}, "
                f"within_super={self.within_super}")
