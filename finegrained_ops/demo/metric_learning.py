"""Experiment 4: metric learning on digits (thesis table 2.1): softmax vs triplets with naive
(random) sampling vs violating (hard) negatives vs local positives vs Triplet-A (anchor points
and quasi-online bank mining)."""
import torch
import torch.nn.functional as F

from .. import mine_triplets
from ..data import PKBatchSampler
from .._checks import make_generator
from ..metrics import recall_at_k
from ..nn import AnchorPointClassifier, TripletAnchorPointLoss, TripletMarginLoss
from ..train import QuasiOnlineBatchSampler
from .common import SmallCNN, digits_splits, embed, train

DIM = 16


def run(report, settings):
    report.section("4. Metric learning on digits",
                   f"Small CNN, {DIM}-d L2-normalised embedding, P×K batches (10 classes × 6). "
                   "Triplet-Naive averages the hinge over B triplets per batch drawn at random "
                   "from all triplets; HN and M use the fused loss over every violating one. "
                   "Triplet models classify by anchor-point soft voting (eq. 2.3, K=3 anchors by "
                   "k-means on training features, γ=5); Triplet-A learns its anchors and mines "
                   "local positives and hard negatives from a feature bank refreshed every 10 "
                   "batches. Recall@1: test images retrieving each other. Training uses 1/4 "
                   "of the digits training set, so that the methods separate.")
    tr, _, test = digits_splits()
    few = torch.cat([(tr.y == c).nonzero().flatten()[:32] for c in range(10)])
    x, y = tr.x[few], tr.y[few]
    epochs = settings.epochs(30, 8)
    batches = len(x) // 60

    def one_seed(seed):
        def pk():
            return PKBatchSampler(y, 10, 6, num_batches=batches, seed=seed)

        softmax = SmallCNN(10, seed=seed)
        train(softmax, F.cross_entropy, x, y, epochs, seed=seed)
        penultimate = torch.nn.Sequential(softmax.features, *softmax.head[:-1])
        rows = [_row("Softmax", embed(softmax, test.x), embed(penultimate, test.x), test)]
        for name, criterion in (
                ("Triplet-Naive (random triplets)", RandomTripletLoss(seed=seed)),
                ("Triplet-HN (violating negatives)", TripletMarginLoss()),
                ("Triplet-M (+ local positives, 0.6)", TripletMarginLoss(positive_fraction=0.6))):
            model = SmallCNN(DIM, seed=seed)
            train(model, criterion, x, y, epochs, batch_sampler=pk())
            classifier = AnchorPointClassifier(10, DIM).init_from_embeddings(embed(model, x), y,
                                                                           seed=seed)
            test_emb = embed(model, test.x)
            rows.append(_row(name, classifier(test_emb), test_emb, test))

        model = SmallCNN(DIM, seed=seed)
        criterion = TripletAnchorPointLoss(10, DIM, positive_fraction=0.6)
        criterion.classifier.init_from_embeddings(embed(model, x), y, seed=seed)
        sampler = QuasiOnlineBatchSampler(y, lambda: embed(model, x), p=10, k=6,
                                          refresh_every=10, per_anchor=1, num_batches=batches,
                                          seed=seed)
        train(model, criterion, x, y, epochs, extra_params=criterion.parameters(),
              batch_sampler=sampler)
        test_emb = embed(model, test.x)
        rows.append(_row("Triplet-A (anchor points, quasi-online)",
                         criterion.classifier(test_emb), test_emb, test))
        return rows

    rows = settings.over_seeds(one_seed)
    report.table(rows, "Accuracy and Recall@1 (%) on the digits test split, " + settings.averaged)
    return rows


class RandomTripletLoss(torch.nn.Module):
    """Triplet-Naive: the mean hinge loss of B triplets drawn uniformly at random from all of
    the batch's (anchor, positive, negative) triplets, informative or not (the paper samples
    its naive triplets at random, offline)."""

    def __init__(self, margin=0.2, seed=0):
        super().__init__()
        self.margin, self.generator = margin, make_generator(seed)

    def forward(self, emb, labels):
        a, p, n = mine_triplets(emb, labels, margin=self.margin, negatives="all",
                                max_triplets=len(emb), generator=self.generator)
        x = F.normalize(emb, dim=1)
        d_ap, d_an = (x[a] - x[p]).pow(2).sum(1), (x[a] - x[n]).pow(2).sum(1)
        return F.relu(d_ap - d_an + self.margin).mean()


def _row(name, scores, emb, test):
    recall = recall_at_k(F.normalize(emb, dim=1), test.y, ks=(1,))
    return {"method": name,
            "accuracy (%)": 100 * float((scores.argmax(1) == test.y).float().mean()),
            "Recall@1 (%)": 100 * float(recall[1])}
