"""Experiment 1: long-tailed digits. Softmax CE vs class-balanced softmax vs class-balanced
focal (beta, gamma searched over thesis table 5.2's space on a validation split) vs two-stage
fine-tuning (thesis 4.2.2), at imbalance factors 10 and 50."""
import itertools

import torch
import torch.nn.functional as F

from .. import effective_number
from ..data import long_tailed_counts
from ..metrics import head_tail_accuracy
from ..nn import ClassBalancedLoss, sigmoid_bias_init
from .common import SmallCNN, accuracy, digits_splits, embed, train

BETAS = (0.9, 0.99, 0.999, 0.9999)
GAMMAS = (0.5, 1.0, 2.0)


def run(report, settings):
    report.section("1. Long-tailed digits",
                   "Small CNN on long-tailed digits (head class 0, tail class 9), balanced "
                   "test. β and γ are chosen on a validation half of the test split from thesis "
                   "table 5.2's space (β ∈ {0.9, 0.99, 0.999, 0.9999}, γ ∈ {0.5, 1, 2}); errors "
                   "(%) are on the other half. Head = the 5 most frequent classes.")
    epochs = settings.epochs(40, 15)
    betas, gammas = ((0.999, 0.9999), (1.0,)) if settings.quick else (BETAS, GAMMAS)
    rows = []
    for factor in (10, 50):
        tr, val, test = digits_splits(long_tailed=factor)
        counts = tr.y.bincount(minlength=10)
        head_threshold = int(counts.sort(descending=True).values[4])

        def fitted(loss_fn, bias=None):
            model = SmallCNN()
            if bias is not None:
                torch.nn.init.constant_(model.head[-1].bias, bias)
            train(model, loss_fn, tr.x, tr.y, epochs)
            return model

        def errors(model):
            pred = embed(model, test.x).argmax(1)
            split = head_tail_accuracy(pred, test.y, counts, threshold=head_threshold)
            return {"error": 100 * (1 - float((pred == test.y).float().mean())),
                    "head error": 100 * (1 - split["head"]),
                    "tail error": 100 * (1 - split["tail"])}

        softmax = fitted(F.cross_entropy)
        results = [("softmax CE", softmax)]
        for loss_type, grid in (("softmax", [(b, None) for b in betas]),
                                ("focal", list(itertools.product(betas, gammas)))):
            best = None
            for beta, gamma in grid:
                loss = ClassBalancedLoss(counts, beta=beta, gamma=gamma or 0.5, loss_type=loss_type)
                model = fitted(loss, sigmoid_bias_init(10) if loss_type == "focal" else None)
                score = accuracy(model, val)
                if best is None or score > best[0]:
                    best = (score, beta, gamma, model)
            label = f"CB {loss_type} (β={best[1]}" + (f", γ={best[2]})" if best[2] else ")")
            results.append((label, best[3]))
        two_stage = SmallCNN()
        two_stage.load_state_dict(softmax.state_dict())
        balanced = torch.cat([(tr.y == c).nonzero().flatten()[: int(counts.min())]
                              for c in range(10)])
        train(two_stage, F.cross_entropy, tr.x[balanced], tr.y[balanced],
              settings.epochs(20, 6), lr=1e-3)
        results.append(("two-stage (CE, then balanced FT)", two_stage))
        rows += [{"imbalance": factor, "method": name, **errors(model)} for name, model in results]
    report.table(rows, "Test error (%) on balanced digits")
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
