"""Metrics: classification, retrieval (equal to pytorch-metric-learning), kernel approximation."""
import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from finegrained_ops import metrics


def test_topk_and_per_class_accuracy():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    target = torch.tensor([1, 1, 0, 0])
    assert metrics.topk_accuracy(logits, target, ks=(1, 2, 3)) == {1: 0.5, 2: 0.75, 3: 1.0}
    acc = metrics.per_class_accuracy(logits, target, num_classes=3)
    assert acc[:2].tolist() == [0.5, 0.5] and math.isnan(acc[2])
    with pytest.raises(ValueError, match="k must be"):
        metrics.topk_accuracy(logits, target, ks=(4,))
    with pytest.raises(ValueError, match="3 entries but there are 4"):
        metrics.topk_accuracy(logits, target[:3])


@given(n=st.integers(1, 200), c=st.integers(2, 12), seed=st.integers(0, 2**31 - 1))
def test_balanced_accuracy_equals_scikit_learn(n, c, seed):
    from sklearn.metrics import balanced_accuracy_score

    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (n,), generator=g)
    pred = torch.where(torch.rand(n, generator=g) < 0.6, target, torch.randint(0, c, (n,), generator=g))
    with warnings.catch_warnings():  # sklearn warns about classes absent from one side
        warnings.simplefilter("ignore", UserWarning)
        expected = balanced_accuracy_score(target.numpy(), pred.numpy())
    assert metrics.balanced_accuracy(pred, target) == pytest.approx(expected, abs=1e-12)


def test_head_tail_and_shot_splits_follow_training_counts():
    train_counts = torch.tensor([500, 150, 60, 25, 5])
    target = torch.tensor([0, 0, 1, 2, 3, 4, 4])
    pred = torch.tensor([0, 0, 1, 0, 3, 1, 4])  # head 3/3, tail 2/4
    r = metrics.head_tail_accuracy(pred, target, train_counts, threshold=100)
    assert r == {"overall": 5 / 7, "head": 1.0, "tail": 0.5}
    s = metrics.shot_accuracy(pred, target, train_counts)
    assert s == {"overall": 5 / 7, "many": 1.0, "medium": 0.5, "few": 0.5}


def pml_accuracies(x, y, gallery=None, gallery_labels=None, metric="cosine"):
    from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    distance = CosineSimilarity() if metric == "cosine" else LpDistance(normalize_embeddings=False)
    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r",
                                       "mean_average_precision"),
                              knn_func=CustomKNN(distance), k=None, device=torch.device("cpu"))
    return calc.get_accuracy(x, y, gallery, gallery_labels)


@given(n=st.integers(5, 120), classes=st.integers(2, 10), seed=st.integers(0, 2**31 - 1),
       metric=st.sampled_from(["cosine", "euclidean"]), separate_gallery=st.booleans(),
       chunk=st.sampled_from([7, 1024]))
def test_retrieval_equals_pytorch_metric_learning(n, classes, seed, metric, separate_gallery,
                                                  chunk):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    gallery = gallery_labels = None
    if separate_gallery:
        gallery = torch.randn(n + 3, 6, generator=g, dtype=torch.float64)
        gallery_labels = torch.randint(0, classes, (n + 3,), generator=g)
    kw = dict(metric=metric, chunk_size=chunk)
    expected = pml_accuracies(x, y, gallery, gallery_labels, metric)
    if math.isnan(expected["precision_at_1"]):
        with pytest.raises(ValueError, match="no query"):
            metrics.precision_at_1(x, y, gallery, gallery_labels, **kw)
        return
    assert metrics.precision_at_1(x, y, gallery, gallery_labels, **kw) == pytest.approx(
        expected["precision_at_1"], abs=1e-12)
    assert metrics.map_at_r(x, y, gallery, gallery_labels, **kw) == pytest.approx(
        expected["mean_average_precision_at_r"], abs=1e-12)
    assert metrics.mean_average_precision(x, y, gallery, gallery_labels, **kw) == pytest.approx(
        expected["mean_average_precision"], abs=1e-12)


def test_recall_at_k_matches_brute_force_and_excludes_self():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 6, (200,), generator=g)
    dist = torch.cdist(x, x).fill_diagonal_(float("inf"))
    order = dist.argsort(dim=1)
    expected = {k: (y[order[:, :k]] == y[:, None]).any(1).double().mean().item() for k in (1, 2, 4, 8)}
    got = metrics.recall_at_k(x, y, metric="euclidean", chunk_size=33)
    assert got == pytest.approx(expected, abs=1e-12)
    with_self = metrics.recall_at_k(x, y, metric="euclidean", exclude_self=False, ks=(1,))
    assert with_self[1] == 1.0  # each query finds itself first
    with pytest.raises(ValueError, match="gallery size"):
        metrics.recall_at_k(x, y, ks=(200,))
    with pytest.raises(ValueError, match="NaN"):
        metrics.recall_at_k(torch.full((3, 2), float("nan")), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="entries"):
        metrics.recall_at_k(x, y[:5])


def test_kernel_approximation_error():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    exact = torch.exp(-0.5 * (x - y).pow(2).sum(1))
    phi_x = torch.stack([exact * 1.1, exact * 0.5]).T.contiguous()  # φ(x)·φ(y) = exact·1.1
    phi_y = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    err = metrics.kernel_approximation_error(phi_x, phi_y, x, y, 0.5)
    torch.testing.assert_close(err, torch.tensor([0.1, 0.1], dtype=torch.float64))
    with pytest.raises(ValueError, match="gamma"):
        metrics.kernel_approximation_error(phi_x, phi_y, x, y, 0.0)
