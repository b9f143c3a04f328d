"""Experiment 5: retrieval with global descriptors (docs/semantics.md §6): MAC, SPoC, GeM,
R-MAC and CroW pooled from one trained backbone's last convolutional map, as they are,
PCA-whitened, whitened from matching pairs, then with database-side augmentation and α-query
expansion, then with diffusion on top."""
import torch.nn.functional as F

from ..metrics import diffusion_rerank, evaluate_ranking, mean_average_precision, recall_at_k
from ..retrieval import (PCAWhitening, crow, database_augmentation, gem, mac, query_expansion,
                         rmac, same_label_pairs, spoc)
from .common import SmallCNN, digits_splits, embed, train

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
    return rows


def _scores(query, query_labels, gallery, gallery_labels):
    recall = recall_at_k(query, query_labels, gallery, gallery_labels, ks=(1,),
                         exclude_self=False)
    return {"mAP (%)": 100 * mean_average_precision(query, query_labels, gallery, gallery_labels,
                                                    exclude_self=False),
            "Recall@1 (%)": 100 * recall[1]}
