"""Experiment 3: kernel pooling. Relative Gaussian-RBF approximation error against sketch size d
and order p on CNN features (thesis fig. 3.6), then average vs compact bilinear vs kernel
pooling vs iSQRT-COV heads on the same small CNN."""
import time

import torch
import torch.nn.functional as F
from torch import nn

from .. import draw_hashes, estimate_rbf_gamma, kernel_pooling, rbf_alpha
from ..metrics import kernel_approximation_error
from ..nn import CompactBilinearPooling, ISqrtCovPooling, KernelPooling
from .common import SmallCNN, accuracy, digits_splits, merge_runs, train


def run(report, settings):
    report.section("3. Kernel pooling",
                   "Features: the 32-channel conv map (4x4 locations) of a small CNN trained on "
                   "digits. Approximation error: thesis eq. 3.12, averaged over pairs of "
                   "L2-normalised location vectors, γ = 1/mean inner product (thesis 3.4.1).")
    tr, _, test = digits_splits()
    epochs = settings.epochs(40, 15)
    base = SmallCNN()
    train(base, F.cross_entropy, tr.x, tr.y, epochs)
    with torch.no_grad():
        maps = base.features(test.x)                              # (N, 32, 4, 4)
    vectors = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1]).double()
    g = torch.Generator().manual_seed(0)
    pairs = torch.randint(len(vectors), (2, 500 if settings.quick else 4000), generator=g)
    x, y = vectors[pairs[0]], vectors[pairs[1]]
    keep = (x.norm(dim=1) > 0) & (y.norm(dim=1) > 0)
    # eq. 3.11's coefficients approximate the RBF kernel of unit vectors
    x, y = F.normalize(x[keep], dim=1), F.normalize(y[keep], dim=1)
    rbf_gamma = estimate_rbf_gamma(F.normalize(vectors[vectors.norm(dim=1) > 0], dim=1))
    dims = (32, 128, 512) if settings.quick else (32, 64, 128, 256, 512, 1024, 2048)
    orders = (2, 3, 4)
    runs = [[{"order p": p, **{f"d={d}": _approximation_error(x, y, rbf_gamma, p, d, draw)
                               for d in dims}} for p in orders] for draw in settings.seeds]
    report.table(merge_runs(runs), f"Mean relative RBF approximation error (γ = {rbf_gamma:.3g}, "
                 f"{len(x)} pairs), mean ± std over {len(runs)} hash draw(s)")
    report.figure(_error_plot(runs, dims, orders), "kernel_approximation.png",
                  "Relative RBF approximation error vs sketch size d, per order p (thesis fig. "
                  "3.6 style; mean over hash draws)")

    heads = {
        "average pooling": lambda seed: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                      nn.Linear(32, 10)),
        "compact bilinear (d=512)": lambda seed: nn.Sequential(
            CompactBilinearPooling(32, 512, seed=seed), nn.Linear(512, 10)),
        "kernel pooling (p=3, d=256)": lambda seed: _kernel_head(base, tr.x, 3, 256, seed),
        "kernel pooling (p=4, d=256)": lambda seed: _kernel_head(base, tr.x, 4, 256, seed),
        "iSQRT-COV (5 iterations, 528-d)": lambda seed: nn.Sequential(
            ISqrtCovPooling(iterations=5), nn.Linear(32 * 33 // 2, 10)),
    }

    def one_seed(seed):
        rows = []
        for name, head in heads.items():
            torch.manual_seed(seed)
            model = SmallCNN(head=head(seed), seed=seed)
            began = time.perf_counter()
            train(model, F.cross_entropy, tr.x, tr.y, epochs, lr=3e-3, seed=seed)
            rows.append({"head": name, "test accuracy (%)": 100 * accuracy(model, test),
                         "train time (s)": time.perf_counter() - began})
        return rows

    rows = settings.over_seeds(one_seed)
    report.table(rows, f"Pooling heads on the small CNN ({epochs} epochs), " + settings.averaged)
    return runs, rows


def _approximation_error(x, y, rbf_gamma, order, dim, draw):
    index, sign = draw_hashes(x.shape[1], dim, order, seed=(draw * 31 + order) * 7919 + dim)
    alpha = rbf_alpha(rbf_gamma, order)
    phi = kernel_pooling(torch.stack([x, y])[..., None, :].flatten(0, 1), index, sign, alpha, dim)
    phi_x, phi_y = phi.view(2, len(x), -1)
    return float(kernel_approximation_error(phi_x, phi_y, x, y, rbf_gamma).mean())


def _kernel_head(base, images, order, dim, seed):
    pooling = KernelPooling(32, dim, order=order, alpha="learned", seed=seed)
    with torch.no_grad():
        pooling.estimate_rbf_gamma(base.features(images[:256]))
    return nn.Sequential(pooling, nn.Linear(pooling.output_dim, 10))


def _error_plot(runs, dims, orders):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, p in enumerate(orders):
        mean = [sum(run[i][f"d={d}"] for run in runs) / len(runs) for d in dims]
        ax.loglog(dims, mean, marker="o", label=f"p={p}")
    ax.set_xlabel("sketch size d")
    ax.set_ylabel("relative approximation error")
    ax.legend()
    return fig
