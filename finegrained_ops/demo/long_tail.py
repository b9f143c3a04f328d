"""Experiment 1: long-tailed digits. Softmax CE vs class-balanced softmax vs class-balanced
focal (beta, gamma searched over thesis table 5.2's space on a validation split) vs two-stage
fine-tuning (thesis 4.2.2, :func:`~finegrained_ops.train.two_stage_long_tail`), at imbalance
factors 10 and 50."""
import itertools

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from .. import effective_number
from ..data import long_tailed_counts
from ..nn import ClassBalancedLoss
from ..ops import sigmoid_bias_init
from ..train import two_stage_long_tail
from .common import SmallCNN, accuracy, digits_splits, embed, head_tail_errors, train

BETAS = (0.9, 0.99, 0.999, 0.9999)
GAMMAS = (0.5, 1.0, 2.0)


def run(report, settings):
    report.section("1. Long-tailed digits",
                   "Small CNN on long-tailed digits (head class 0, tail class 9), balanced "
                   "test. β and γ are chosen once (seed 0) on a validation half of the test split "
                   "from thesis table 5.2's space (β ∈ {0.9, 0.99, 0.999, 0.9999}, γ ∈ {0.5, 1, "
                   "2}); errors (%) are on the other half. Head = the 5 most frequent classes. "
                   "Two-stage: softmax CE, then 20 epochs at lr/10 on a class-balanced subset.")
    epochs = settings.epochs(40, 15)
    betas, gammas = ((0.999, 0.9999), (1.0,)) if settings.quick else (BETAS, GAMMAS)
    rows = []
    for factor in (10, 50):
        tr, val, test = digits_splits(long_tailed=factor)
        counts = tr.y.bincount(minlength=10)

        def cb_loss(beta, gamma, loss_type):
            return ClassBalancedLoss(counts, beta=beta, gamma=gamma, loss_type=loss_type)

        def fitted(loss_fn, seed):
            model = SmallCNN(seed=seed)
            if getattr(loss_fn, "loss_type", "softmax") != "softmax":
                torch.nn.init.constant_(model.head[-1].bias, sigmoid_bias_init(10))
            train(model, loss_fn, tr.x, tr.y, epochs, seed=seed)
            return model

        def chosen(loss_type, grid):
            scores = [(accuracy(fitted(cb_loss(b, g, loss_type), 0), val), -i, (b, g))
                      for i, (b, g) in enumerate(grid)]   # ties: the first configuration
            return max(scores)[2]

        beta_s, _ = chosen("softmax", [(b, 0.5) for b in betas])
        beta_f, gamma_f = chosen("focal", list(itertools.product(betas, gammas)))

        def errors(model):
            return head_tail_errors(embed(model, test.x).argmax(1), test.y, counts)

        def one_seed(seed):
            two_stage = SmallCNN(seed=seed)
            two_stage_long_tail(two_stage, F.cross_entropy, TensorDataset(tr.x, tr.y), tr.y,
                                lambda params, lr: torch.optim.Adam(params, lr=lr), lr=1e-2,
                                epochs=epochs, finetune_lr=1e-3,
                                finetune_epochs=settings.epochs(20, 6), seed=seed,
                                progress=False)
            models = (("softmax CE", fitted(F.cross_entropy, seed)),
                      (f"CB softmax (β={beta_s})", fitted(cb_loss(beta_s, 0.5, "softmax"), seed)),
                      (f"CB focal (β={beta_f}, γ={gamma_f})",
                       fitted(cb_loss(beta_f, gamma_f, "focal"), seed)),
                      ("two-stage (CE, then balanced FT)", two_stage))
            return [{"imbalance": factor, "method": name, **errors(model)}
                    for name, model in models]

        rows += settings.over_seeds(one_seed)
    report.table(rows, "Test error (%) on balanced digits, " + settings.averaged)
    report.figure(_effective_number_plot(), "effective_number.png",
                  "Effective number of samples (1 - β^n)/(1 - β) per class for the imbalance-50 "
                  "profile (thesis fig. 5.6 style, log scale)")
    return rows


def _effective_number_plot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = long_tailed_counts(10, 125, 50)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(range(10), counts.tolist(), "k--", label="n (samples)")
    for beta in BETAS:
        ax.semilogy(range(10), effective_number(counts, beta).tolist(), marker="o", ms=3,
                    label=f"β={beta}")
    ax.set_xlabel("class (sorted by size)")
    ax.set_ylabel("effective number")
    ax.legend(fontsize=8)
    return fig
