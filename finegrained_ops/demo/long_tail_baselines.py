"""Experiment 2: the baselines long-tail papers report, on long-tailed digits at imbalance
factors 50 and 100: softmax CE, class-balanced focal, logit adjustment (loss and post-hoc),
Balanced Softmax, LDAM-DRW, and the decoupled classifiers cRT, τ-norm and LWS on the CE model's
features (docs/semantics.md §4.2)."""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from .. import logit_adjust
from ..nn import (BalancedSoftmaxLoss, ClassBalancedLoss, CosineLinear, LDAMLoss,
                  LearnableWeightScaling, LogitAdjustedLoss)
from ..ops import sigmoid_bias_init
from ..train import DeferredReweighting, retrain_classifier, tau_normalized_linear
from .common import SmallCNN, digits_splits, embed, head_tail_errors, train

TAUS = (0.25, 0.5, 0.75, 1.0, 1.5)
RETRAIN_LRS = (0.1, 0.01, 0.001)


def run(report, settings):
    report.section("2. Long-tail baselines",
                   "The same small CNN and data as experiment 1, at imbalance factors 50 and "
                   "100. Logit adjustment: τ = 1, as a loss and post hoc on the CE model. LDAM: "
                   "cosine classifier, s = 30, max margin 0.5, deferred re-weighting (β = "
                   "0.9999) for the last 20% of epochs. CB focal: β = 0.9999, γ = 1. cRT, τ-norm "
                   "and LWS re-balance the CE model's classifier on its frozen features: cRT "
                   "re-trains it, LWS learns a scale per class, both with class-balanced "
                   "sampling (SGD, 20 epochs, learning rate chosen on the validation half from "
                   "{0.1, 0.01, 0.001}); τ is chosen there from {0.25, ..., 1.5}.")
    epochs = settings.epochs(40, 15)
    rows = []
    for factor in (50, 100):
        tr, val, test = digits_splits(long_tailed=factor)
        counts = tr.y.bincount(minlength=10)

        def fitted(loss_fn, seed, model=None, **fit_kwargs):
            model = model or SmallCNN(seed=seed)
            train(model, loss_fn, tr.x, tr.y, epochs, seed=seed, **fit_kwargs)
            return lambda x: embed(model, x).argmax(1)

        def one_seed(seed):
            ce = SmallCNN(seed=seed)
            train(ce, F.cross_entropy, tr.x, tr.y, epochs, seed=seed)
            backbone = nn.Sequential(ce.features, *ce.head[:-1])
            classifier = ce.head[-1]
            feats = {name: embed(backbone, split.x) for name, split in
                     (("train", tr), ("val", val), ("test", test))}

            def on_features(head):
                return lambda x: embed(head, embed(backbone, x)).argmax(1)

            def val_accuracy(head):
                return float((embed(head, feats["val"]).argmax(1) == val.y).float().mean())

            def retrained(make_head):
                """The head re-trained at each learning rate; the best on validation."""
                heads = []
                for lr in RETRAIN_LRS:
                    torch.manual_seed(seed)
                    head = make_head()
                    retrain_classifier(head, feats["train"], tr.y,
                                       epochs=settings.epochs(20, 5), lr=lr, batch_size=64,
                                       seed=seed)
                    heads.append(head)
                return max(heads, key=val_accuracy)

            crt = retrained(lambda: nn.Linear(classifier.in_features, 10))
            lws = retrained(lambda: LearnableWeightScaling(copy.deepcopy(classifier)))
            tau = max(TAUS, key=lambda t: val_accuracy(tau_normalized_linear(classifier, tau=t)))
            focal = SmallCNN(seed=seed)
            nn.init.constant_(focal.head[-1].bias, sigmoid_bias_init(10))
            cosine = SmallCNN(seed=seed, head=nn.Sequential(
                nn.AdaptiveAvgPool2d(2), nn.Flatten(), CosineLinear(128, 10)))
            ldam = LDAMLoss(counts)
            drw = DeferredReweighting(ldam, counts, start_epoch=int(0.8 * epochs))
            methods = (
                ("softmax CE", lambda x: embed(ce, x).argmax(1)),
                ("CB focal (β=0.9999, γ=1)", fitted(ClassBalancedLoss(
                    counts, beta=0.9999, gamma=1.0, loss_type="focal"), seed, focal)),
                ("logit-adjusted loss (τ=1)", fitted(LogitAdjustedLoss(counts), seed)),
                ("logit adjustment post hoc (τ=1)",
                 lambda x: logit_adjust(embed(ce, x), counts).argmax(1)),
                ("Balanced Softmax", fitted(BalancedSoftmaxLoss(counts), seed)),
                ("LDAM-DRW", fitted(ldam, seed, cosine, epoch_hooks=[drw])),
                ("cRT", on_features(crt)),
                ("τ-norm", on_features(tau_normalized_linear(classifier, tau=tau))),
                ("LWS", on_features(lws)))
            return [{"imbalance": factor, "method": name, **head_tail_errors(predict(test.x),
                                                                             test.y, counts)}
                    for name, predict in methods]

        rows += settings.over_seeds(one_seed)
    report.table(rows, "Test error (%) on balanced digits, " + settings.averaged)
    return rows
