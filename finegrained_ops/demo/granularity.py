"""Experiment 6: dataset granularity. RS, RSM, Rank and RankM on the two-Gaussian simulation
against the separation m (thesis fig. 6.4), and on CNN features of digits as coarse class
groups are relabelled into fine (digit) labels (fig. 6.5)."""
import torch
import torch.nn.functional as F

from ..data import class_similarity, hierarchical_groups, make_gaussian_classes
from ..metrics import granularity
from .common import SmallCNN, digits_splits, embed, train

MEASURES = ("rs", "rsm", "rank", "rankm")


def run(report, settings):
    report.section("6. Dataset granularity",
                   "Two unit-variance Gaussians (2-D) at distance m, Euclidean distance "
                   "(thesis 6.3.1): mean ± std over repeats. Lower scores = coarser (more "
                   "separable) classes.")
    separations = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0) if settings.quick else \
        (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)
    repeats = 3 if settings.quick else 20
    n = 200 if settings.quick else 500
    stats = {}
    for m in separations:
        scores = torch.tensor([[granularity(*make_gaussian_classes(m, n_per_class=n, seed=r), measure=k,
                                            normalize=False) for k in MEASURES]
                               for r in range(repeats)], dtype=torch.float64)
        stats[m] = (scores.mean(0), scores.std(0) if repeats > 1 else torch.zeros(len(MEASURES)))
    report.table([{"m": m, **{k.upper(): f"{float(mean[i]):.3f} ± {float(std[i]):.3f}"
                              for i, k in enumerate(MEASURES)}}
                  for m, (mean, std) in stats.items()],
                 f"Granularity vs separation m ({repeats} repeats, {n} points per class)")
    report.figure(_plot(stats), "granularity_gaussians.png",
                  "Granularity measures vs class separation m (thesis fig. 6.4 style; shaded: "
                  "± one standard deviation)")

    # thesis 6.3.2 (fig. 6.5): features of a network trained on coarse labels, scored as the
    # coarse groups are relabelled, one after the other, into the fine classes they hide
    tr, _, test = digits_splits()
    tree = hierarchical_groups(class_similarity(tr.x.flatten(1), tr.y), group_counts=(4,))
    coarse = tree.assignments[1]
    splittable = [g for g in tree.groups(1) if len(g) > 1]
    labelings = [(f"{k} of {len(splittable)} groups relabelled"
                  + (" (coarse, trained on)" if k == 0 else
                     " (fine: 10 digits)" if k == len(splittable) else ""),
                  _relabelled(test.y, coarse, splittable[:k]))
                 for k in range(len(splittable) + 1)]

    def one_seed(seed):
        model = SmallCNN(num_classes=4, seed=seed)
        train(model, F.cross_entropy, tr.x, coarse[tr.y], settings.epochs(40, 15), seed=seed)
        features = embed(torch.nn.Sequential(model.features, *model.head[:-1]), test.x)
        return [{"labels": name, **{k.upper(): granularity(features, labels, measure=k,
                                                           metric="cosine")
                                    for k in (*MEASURES, "silhouette")}}
                for name, labels in labelings]

    rows = settings.over_seeds(one_seed)
    report.table(rows, "Granularity (cosine distance) of digits features from a CNN trained on "
                 f"4 coarse groups of digits {tree.groups(1)} (groups: hierarchical clustering "
                 f"of pixel class means), relabelled in the order {splittable}; "
                 f"{settings.averaged}. Silhouette grows as classes separate; the "
                 "other four grow with granularity")
    return stats, rows


def _relabelled(digits, coarse, groups):
    """Coarse labels, except that the digits of ``groups`` keep their own class."""
    fine = torch.isin(digits, torch.tensor(sum(groups, []), dtype=torch.int64))
    return torch.where(fine, len(coarse) + digits, coarse[digits])


def _plot(stats):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = list(stats)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, k in enumerate(MEASURES):
        mean = torch.stack([stats[m][0][i] for m in ms])
        std = torch.stack([stats[m][1][i] for m in ms])
        ax.plot(ms, mean, marker="o", ms=3, label=k.upper())
        ax.fill_between(ms, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("separation m")
    ax.set_ylabel("granularity")
    ax.legend()
    return fig
