"""Experiment 7: domain similarity (thesis 4.3). EMD similarity of source subsets to a target,
greedy source-class selection, and a transfer check: pre-train on the selected vs a random
subset of source classes, fine-tune on a small target set."""
import torch
import torch.nn.functional as F

from .._checks import make_generator
from ..metrics import domain_similarity, select_source_classes
from .common import SmallCNN, Split, accuracy, digits_splits, embed, train

TARGET = (0, 1, 2, 3, 4)
SOURCE = (5, 6, 7, 8, 9)
POOL = 3 * len(SOURCE)   # as they are, inverted, pixel-permuted
K = 3


def run(report, settings):
    report.section("7. Domain similarity and source selection",
                   "Target: digits 0-4 with 5 training images per class. Source pool: 15 "
                   "classes, digits 5-9 as they are (classes 0-4), intensity-inverted (1 - x, "
                   "classes 5-9) and pixel-permuted (one fixed shuffle of the 64 pixels, "
                   "classes 10-14). Features for EMD: a CNN trained on the whole source pool; "
                   "γ = 0.01 on L2-normalised features ×10 (thesis eq. 4.2-4.3).")
    tr, _, test = digits_splits()
    source = _source_pool(tr)
    target_train, target_test = _target(tr, 5), _target(test, None)
    epochs = settings.epochs(30, 10)
    extractor = SmallCNN(num_classes=POOL)
    train(extractor, F.cross_entropy, source.x, source.y, epochs)
    penultimate = torch.nn.Sequential(extractor.features, *extractor.head[:-1])

    def features(x):
        return 10 * F.normalize(embed(penultimate, x), dim=1)

    fs, ft = features(source.x), features(target_train.x)
    subsets = {"digits 5-9 (as they are)": [0, 1, 2, 3, 4],
               "digits 5-9 inverted": [5, 6, 7, 8, 9],
               "digits 5-9 pixel-permuted": [10, 11, 12, 13, 14],
               "mixed: 5, 6 + inverted 7, 8, 9": [0, 1, 7, 8, 9],
               f"all {POOL} source classes": list(range(POOL))}
    rows = []
    for name, classes in subsets.items():
        keep = torch.isin(source.y, torch.tensor(classes))
        _, relabel = torch.unique(source.y[keep], return_inverse=True)
        rows.append({"source subset": name,
                     "similarity": domain_similarity(fs[keep], relabel, ft, target_train.y)})
    report.table(rows, "EMD domain similarity of source subsets to the target")

    selected = select_source_classes(fs, source.y, ft, target_train.y, K).tolist()
    g = make_generator(3)
    random_picks = [torch.randperm(POOL, generator=g)[:K].tolist() for _ in range(3)]

    def one_seed(seed):
        rows = []
        for name, classes in ((f"selected by similarity {selected}", selected),
                              *((f"random {pick}", pick) for pick in random_picks),
                              ("no pre-training", None)):
            model = SmallCNN(num_classes=POOL, seed=seed)
            if classes is not None:
                keep = torch.isin(source.y, torch.tensor(classes))
                train(model, F.cross_entropy, source.x[keep], source.y[keep], epochs, seed=seed)
            model.head[-1].reset_parameters()
            train(model, F.cross_entropy, target_train.x, target_train.y,
                  settings.epochs(150, 60), lr=3e-3, seed=seed)
            rows.append({"pre-trained on source classes": name,
                         "target accuracy (%)": 100 * accuracy(model, target_test)})
        return rows

    transfer = settings.over_seeds(one_seed)
    report.table(transfer, f"Transfer: pre-train on {K} source classes, fine-tune on 5 images "
                 "per target class (source classes 0-4 = digits 5-9, 5-9 = inverted, 10-14 = "
                 "permuted); "
                 + settings.averaged)
    return rows, transfer


def _source_pool(split):
    keep = torch.isin(split.y, torch.tensor(SOURCE))
    x, y = split.x[keep], split.y[keep] - SOURCE[0]
    pixels = torch.randperm(x[0].numel(), generator=make_generator(7))
    permuted = x.flatten(1)[:, pixels].view_as(x)
    return Split(torch.cat([x, 1 - x, permuted]),
                 torch.cat([y, y + len(SOURCE), y + 2 * len(SOURCE)]))


def _target(split, per_class):
    idx = torch.cat([(split.y == c).nonzero().flatten()[:per_class] for c in TARGET])
    return Split(split.x[idx], split.y[idx])
