"""Experiment 5: retrieval with global descriptors (docs/semantics.md §6): MAC, SPoC, GeM,
R-MAC and CroW pooled from one trained backbone's last convolutional map, as they are,
PCA-whitened, whitened from matching pairs, then with database-side augmentation and α-query
expansion, then with diffusion on top; and class activation maps of a GAP + linear model."""
import torch.nn.functional as F
from torch import nn

from ..metrics import evaluate_ranking, mean_average_precision, recall_at_k
from ..retrieval import (PCAWhitening, class_activation_map, crow, database_augmentation,
                         diffusion_rerank, gem, mac, query_expansion, rmac, same_label_pairs, spoc)
from .common import SmallCNN, accuracy, digits_splits, embed, train

DESCRIPTORS = {"MAC": mac, "SPoC": spoc, "GeM (p=3)": gem, "R-MAC": rmac, "CroW": crow}
DIFFUSION_K = 10


def run(report, settings):
    report.section("5. Retrieval with global descriptors",
                   "The small CNN trained with softmax CE on digits; descriptors pooled from its "
                   "last convolutional map (32 channels, 4×4). Queries: the test split; "
                   "gallery: the validation split. Whitening, all 32 dimensions, fitted on "
                   "training-set descriptors: PCA (power 0.5), or from matching pairs (each "
                   "training image and another of its class; Radenović et al.). + DBA/αQE: the "
                   "gallery augmented with k = 2, then queries expanded against it with k = 2, "
                   f"α = 3. + diffusion: those re-ranked on the gallery's reciprocal "
                   f"{DIFFUSION_K}-NN graph (α = 0.99, γ = 3).")
    tr, val, test = digits_splits()
    epochs = settings.epochs(20, 5)

    def one_seed(seed):
        model = SmallCNN(seed=seed)
        train(model, F.cross_entropy, tr.x, tr.y, epochs, seed=seed)
        maps = {name: embed(model.features, split.x) for name, split in
                (("train", tr), ("gallery", val), ("query", test))}
        pairs = same_label_pairs(tr.y, seed=seed)
        rows = []
        for name, pool in DESCRIPTORS.items():
            train_d, gallery, query = (pool(maps[s]) for s in ("train", "gallery", "query"))
            pca = PCAWhitening().fit(train_d)
            white = PCAWhitening().fit_pairs(train_d, pairs)
            wg, wq = white(gallery), white(query)
            augmented = database_augmentation(wg, k=2)
            expanded = query_expansion(wq, augmented, k=2)
            for variant, (q, g) in (("as is", (query, gallery)),
                                    ("PCA-whitened", (pca(query), pca(gallery))),
                                    ("pair-whitened", (wq, wg)),
                                    ("pair-whitened + DBA/αQE", (expanded, augmented))):
                rows.append({"descriptor": name, "post-processing": variant,
                             **_scores(q, test.y, g, val.y)})
            _, ranking = diffusion_rerank(expanded, augmented, k=DIFFUSION_K)
            diffused = evaluate_ranking(ranking, test.y, val.y, ks=(1,))
            rows.append({"descriptor": name, "post-processing": "… + diffusion",
                         "mAP (%)": 100 * diffused["mAP"],
                         "Recall@1 (%)": 100 * diffused["recall"][1]})
        return rows

    rows = settings.over_seeds(one_seed)
    report.table(rows, "mAP and Recall@1 (%), test queries against the validation gallery, "
                 + settings.averaged)
    _class_activation_maps(report, tr, test, epochs)
    return rows


def _class_activation_maps(report, tr, test, epochs):
    """CAMs (Zhou et al.) of a model with a global-average-pooling + linear head, the one head
    CAM is defined for, for its predicted class; one seed."""
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    model = SmallCNN(head=head, seed=0)
    train(model, F.cross_entropy, tr.x, tr.y, epochs, seed=0)
    predicted = embed(model, test.x).argmax(dim=1)
    cams = class_activation_map(embed(model.features, test.x), head[-1].weight.detach(),
                                predicted, size=test.x.shape[-2:])
    ink = test.x[:, 0] > 0.25  # pixel values are in [0, 1]
    on_ink = float((cams * ink).sum() / ink.sum())
    off_ink = float((cams * ~ink).sum() / (~ink).sum())
    first = [int((test.y == c).nonzero()[0]) for c in range(10)]
    report.figure(_cam_plot(test.x[first, 0], cams[first], predicted[first]),
                  "class_activation_maps.png",
                  f"Class activation maps of a GAP + linear model "
                  f"({100 * accuracy(model, test):.1f}% test accuracy) for its predicted class, "
                  f"upsampled to 8×8, on the first test "
                  f"image of each digit. Over the test split the map averages {on_ink:.2f} on ink "
                  f"pixels and {off_ink:.2f} elsewhere (each map min-max scaled to [0, 1]).")


def _cam_plot(images, cams, predicted):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(images), figsize=(1.1 * len(images), 2.5))
    for i, (image, cam) in enumerate(zip(images, cams)):
        axes[0, i].imshow(image, cmap="gray_r")
        axes[0, i].set_title(f"pred {int(predicted[i])}", fontsize=8)
        axes[1, i].imshow(image, cmap="gray_r")
        axes[1, i].imshow(cam, cmap="jet", alpha=0.5)
        for ax in axes[:, i]:
            ax.axis("off")
    return fig


def _scores(query, query_labels, gallery, gallery_labels):
    recall = recall_at_k(query, query_labels, gallery, gallery_labels, ks=(1,),
                         exclude_self=False)
    return {"mAP (%)": 100 * mean_average_precision(query, query_labels, gallery, gallery_labels,
                                                    exclude_self=False),
            "Recall@1 (%)": 100 * recall[1]}
