"""Experiment 9: hierarchical cascaded fine-tuning (Ouyang et al. 2016) on digits grouped into a
class tree: accuracy against the flat model and how many samples each node's model scored."""
import torch
import torch.nn.functional as F

from ..data import class_similarity, hierarchical_groups
from ..train import HierarchicalCascade
from .common import SmallCNN, accuracy, digits_splits, train


def run(report, settings):
    tr, _, test = digits_splits()
    tree = hierarchical_groups(class_similarity(tr.x.flatten(1), tr.y), group_counts=(3, 10))
    report.section("9. Hierarchical cascade on digits",
                   "Class tree: average-linkage clustering of pixel class means, levels "
                   f"{tree.groups(1)} and the 10 digits. Root M(0,1): the flat CNN (softmax CE), "
                   "then every node fine-tuned from its parent with one-vs-rest sigmoid "
                   "scores on its classes (algorithm 2); test by algorithm 1. The flat "
                   "baseline is the pre-trained model itself.")
    epochs = settings.epochs(40, 15)
    thresholds = (0.1, 0.5)
    counts = {}

    def one_seed(seed):
        flat = SmallCNN(seed=seed)
        train(flat, F.cross_entropy, tr.x, tr.y, epochs, seed=seed)
        rows = [{"model": "flat CNN (softmax CE)", "threshold T": "-",
                 "accuracy (%)": 100 * accuracy(flat, test), "rejected (%)": 0.0}]
        for threshold in thresholds:
            cascade = HierarchicalCascade(tree, flat, threshold,
                                          lambda p: torch.optim.Adam(p, 1e-3),
                                          epochs=settings.epochs(10, 4), batch_size=64,
                                          seed=seed, progress=False).fit(tr.x, tr.y)
            scores, evaluated = cascade.predict(test.x)
            rejected = torch.isinf(scores).all(1)
            correct = (scores.argmax(1) == test.y) & ~rejected
            rows.append({"model": "hierarchical cascade", "threshold T": str(threshold),
                         "accuracy (%)": 100 * float(correct.float().mean()),
                         "rejected (%)": 100 * float(rejected.float().mean())})
            if seed == settings.seeds[0]:
                counts[threshold] = (evaluated, cascade.train_sizes)
        return rows

    rows = settings.over_seeds(one_seed)
    report.table(rows, f"Digits test accuracy ({len(test.y)} images; a rejected image counts as "
                 f"wrong), {settings.averaged}")
    node_rows = []
    for (level, group), n in counts[0.1][0].items():
        positives, negatives = counts[0.1][1][(level, group)]
        node_rows.append({"node (level, group)": f"({level}, {group})",
                          "classes": " ".join(map(str, tree.groups(level)[group])),
                          "train positives": positives, "train negatives": negatives,
                          "test samples evaluated (T=0.1)": n,
                          "evaluated (T=0.5)": counts[0.5][0][(level, group)]})
    report.table(node_rows, "Per node (seed 0): training set and test samples its model scored")
    return rows, node_rows
