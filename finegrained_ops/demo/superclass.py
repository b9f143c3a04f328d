"""Experiment 8: super-class labels only (Xu et al. 2020, table 2): fine-class retrieval of
features trained with Base (super-class CE) vs Base-Indi (eq. 4) vs Base-Indi_eff (eq. 5), with
Fine (fine labels) as the upper bound, on the synthetic patch images."""
import time

import torch
import torch.nn.functional as F

from ..data import make_patch_dataset
from ..metrics import recall_at_k
from ..nn import SuperClassInstanceLoss
from .common import RandomShift, SmallCNN, embed, train

KS = (1, 2, 4, 8)


def run(report, settings):
    n_super, fine_per_super = 32, 4
    n_train = 1024
    report.section("8. Fine-grained patterns from super-class labels",
                   f"Patch images (Xu et al. 4.1): {n_super} super-classes (big patch) × "
                   f"{fine_per_super} fine classes (small patch), 16×16 RGB; {n_train} training "
                   "and 512 test images. Features: the CNN's globally max-pooled 32-d map (position-"
                   "invariant, as the patches move); every objective trains with random shifts of up to 4 "
                   "pixels (the paper's random crops); fine-class Recall@K on the test images "
                   "retrieving each other. λ = 1.")
    images, coarse, fine = make_patch_dataset(n_images=n_train + 512, n_super=n_super,
                                              fine_per_super=fine_per_super, size=16, seed=0)
    x, yb, yf = images[:n_train], coarse[:n_train], fine[:n_train]
    epochs = settings.epochs(40, 12)
    objectives = (("Base (super-class CE)", "base"), ("Base-Indi (eq. 4)", "indi"),
                  ("Base-Indi_eff (eq. 5)", "indi_eff"),
                  ("Fine (fine labels, upper bound)", "fine"))

    def one_seed(seed):
        rows = []
        for name, objective in objectives:
            model = SmallCNN(in_channels=3, head=torch.nn.Sequential(
                torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten()), seed=seed)
            augmented = torch.nn.Sequential(RandomShift(4, seed=seed), model)
            began = time.perf_counter()
            if objective == "fine":
                head = torch.nn.Linear(32, n_super * fine_per_super)
                train(torch.nn.Sequential(augmented, head), F.cross_entropy, x, yf, epochs,
                      lr=3e-3, seed=seed)
            else:
                criterion = SuperClassInstanceLoss(
                    32, yb, lambda_instance=0.0 if objective == "base" else 1.0,
                    within_super=objective == "indi_eff")
                train(augmented, criterion, x, (yb, torch.arange(n_train)), epochs,
                      lr=3e-3, seed=seed, extra_params=criterion.parameters())
            seconds = time.perf_counter() - began
            test_features = F.normalize(embed(model, images[n_train:]), dim=1)
            recall = recall_at_k(test_features, fine[n_train:], ks=KS)
            rows.append({"objective": name, **{f"R@{k} (%)": 100 * float(recall[k]) for k in KS},
                         "train time (s)": seconds})
        return rows

    rows = settings.over_seeds(one_seed)
    report.table(rows, "Fine-class Recall@K (%) on test patch images, " + settings.averaged)
    return rows
