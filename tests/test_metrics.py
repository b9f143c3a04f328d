"""Metrics: classification, retrieval (equal to pytorch-metric-learning), kernel approximation."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from finegrained_ops import metrics, retrieval


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
    pred = torch.where(torch.rand(n, generator=g) < 0.6, target,
                       torch.randint(0, c, (n,), generator=g))
    with warnings.catch_warnings():  # sklearn warns about classes absent from one side
        warnings.simplefilter("ignore", UserWarning)
        expected = balanced_accuracy_score(target.numpy(), pred.numpy())
    assert metrics.balanced_accuracy(pred, target) == pytest.approx(expected, abs=1e-12)


def test_head_tail_and_shot_splits_follow_training_counts():
    samples_per_class = torch.tensor([500, 150, 60, 25, 5])
    target = torch.tensor([0, 0, 1, 2, 3, 4, 4])
    pred = torch.tensor([0, 0, 1, 0, 3, 1, 4])  # head 3/3, tail 2/4
    r = metrics.head_tail_accuracy(pred, target, samples_per_class, threshold=100)
    assert r == {"overall": 5 / 7, "head": 1.0, "tail": 0.5}
    s = metrics.shot_accuracy(pred, target, samples_per_class)
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
    with pytest.raises(ValueError, match="rbf_gamma"):
        metrics.kernel_approximation_error(phi_x, phi_y, x, y, 0.0)


GRANULARITY = ["rankm", "rank", "rs", "rsm"]


def labelled_blobs(seed, n_classes, per_class, dim=4, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g, dtype=torch.float64) * 2
    y = torch.arange(n_classes).repeat_interleave(per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g, dtype=torch.float64), y


@given(seed=st.integers(0, 2**31 - 1), n_classes=st.integers(2, 5), per_class=st.integers(2, 12),
       scale=st.floats(0.01, 100.0), lift=st.floats(0.1, 10.0),
       measure=st.sampled_from(GRANULARITY + ["silhouette"]))
def test_granularity_axioms(seed, n_classes, per_class, scale, lift, measure):
    x, y = labelled_blobs(seed, n_classes, per_class)
    kw = dict(measure=measure, normalize=False)
    base = metrics.granularity(x, y, **kw)
    # Scale invariance: multiplying every distance by c changes nothing (up to cdist's
    # matmul-based float64 rounding, ~1e-9 relative).
    assert metrics.granularity(x * scale, y, **kw) == pytest.approx(base, rel=1e-7, abs=1e-12)
    # Isomorphism invariance: renaming classes changes nothing.
    perm = torch.randperm(n_classes, generator=torch.Generator().manual_seed(seed))
    assert metrics.granularity(x, perm[y] + 7, **kw) == pytest.approx(base, rel=1e-7, abs=1e-12)
    # Granularity consistency: appending lift·one_hot(class) keeps within-class distances and
    # enlarges every between-class distance; granularity must not grow (the silhouette, a
    # separation score, must not fall).
    lifted = torch.cat([x, lift * torch.nn.functional.one_hot(y).double()], dim=1)
    after = metrics.granularity(lifted, y, **kw)
    if measure == "silhouette":
        assert after >= base - 1e-9
    else:
        assert after <= base + 1e-9
    if measure == "rankm":
        assert 0.0 <= base <= 1.0


def test_granularity_falls_as_gaussians_separate_and_silhouette_matches_sklearn():
    from sklearn.metrics import silhouette_score

    from finegrained_ops.data import make_gaussian_classes, make_hierarchical_gaussians

    curves = {m: [] for m in GRANULARITY}
    for separation in (0.5, 1.5, 3.0, 6.0):
        x, y = make_gaussian_classes(separation, n_per_class=200, seed=0, dtype=torch.float64)
        for m in GRANULARITY:
            curves[m].append(metrics.granularity(x, y, measure=m, normalize=False, chunk_size=97))
        sil = metrics.granularity(x, y, measure="silhouette", normalize=False)
        assert sil == pytest.approx(silhouette_score(x.numpy(), y.numpy()), abs=1e-10)
    for m, values in curves.items():
        assert all(a > b for a, b in zip(values, values[1:])), (m, values)
    # Relabelling coarse classes into their fine sub-classes raises every measure.
    x, coarse, fine = make_hierarchical_gaussians(4, 3, n_per_class=30, feature_dim=6, seed=1,
                                                  dtype=torch.float64)
    for m in GRANULARITY:
        assert metrics.granularity(x, fine,
                                   measure=m) > metrics.granularity(x, coarse, measure=m), m


def test_granularity_medoids_and_errors():
    x = torch.tensor([[0.0], [1.0], [5.0], [10.0], [11.0], [30.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    torch.testing.assert_close(metrics.class_medoids(x, y), torch.tensor([[1.0], [11.0]],
                                                                         dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2 classes"):
        metrics.granularity(x, torch.zeros(6, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.granularity(x, torch.tensor([0, 0, 0, 0, 0, 1]), measure="rs")
    with pytest.raises(ValueError, match="measure"):
        metrics.granularity(x, y, measure="ranked")


def test_granularity_ratios_of_coinciding_classes_and_medoid_metrics():
    """RS and RSM were 0/0 = NaN where classes coincide; class_medoids' cosine assumed unit
    rows, and an unknown metric was silently Euclidean."""
    same = torch.ones(6, 2, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    for measure in ("rs", "rsm"):
        assert metrics.granularity(same, labels, measure=measure) == 1.0
    overlapping = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="features: measure 'rs' is infinite"):
        metrics.granularity(overlapping, torch.tensor([0, 0, 1, 1]), measure="rs", normalize=False)
    x = torch.tensor([[1.0, 0.0], [10.0, 1.0], [1.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])
    scaled = x * torch.tensor([[1.0], [0.1], [5.0], [2.0]], dtype=torch.float64)
    torch.testing.assert_close(metrics.class_medoids(scaled, y, metric="cosine"),
                               metrics.class_medoids(x, y, metric="cosine")
                               * torch.tensor([[0.1], [2.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="metric must be one of"):
        metrics.class_medoids(x, y, metric="manhattan")


@pytest.mark.parametrize("call", [
    lambda x, y: metrics.recall_at_k(x, y, ks=(1,)),
    lambda x, y: metrics.map_at_r(x, y),
    lambda x, y: metrics.granularity(x, y),
    lambda x, y: retrieval.diffusion_rerank(x, x, k=2)])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_metrics_refuse_non_finite_features(call, value):
    """±Inf changed recall_at_k silently and made granularity NaN."""
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    x[3, 1] = value
    with pytest.raises(ValueError, match="must be finite"):
        call(x, torch.arange(8) % 2)


def test_retrieval_metrics_take_sparse_label_ids():
    """Relevance was a bincount up to the largest id (memory in proportion to it)."""
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    dense = torch.arange(10) % 3
    sparse = torch.tensor([10**12, 7, 3 * 10**11])[dense]
    assert metrics.map_at_r(x, sparse) == metrics.map_at_r(x, dense)
    assert metrics.recall_at_k(x, sparse, x[:4], sparse[:4], ks=(1, 2)) == \
        metrics.recall_at_k(x, dense, x[:4], dense[:4], ks=(1, 2))


def linprog_emd(a, b, cost):
    from scipy.optimize import linprog

    m, n = cost.shape
    rows = [[1.0 if k // n == i else 0.0 for k in range(m * n)] for i in range(m)]
    cols = [[1.0 if k % n == j else 0.0 for k in range(m * n)] for j in range(n)]
    res = linprog(cost.reshape(-1), A_eq=rows + cols, b_eq=list(a) + list(b), bounds=(0, None),
                  method="highs")
    return res.fun


@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 5), n=st.integers(1, 5))
def test_domain_distance_equals_the_transport_lp(seed, m, n):
    g = torch.Generator().manual_seed(seed)
    ys = torch.cat([torch.arange(m), torch.randint(0, m, (12,), generator=g)])
    yt = torch.cat([torch.arange(n), torch.randint(0, n, (9,), generator=g)])
    xs = torch.randn(len(ys), 3, generator=g, dtype=torch.float64)
    xt = torch.randn(len(yt), 3, generator=g, dtype=torch.float64) + 1
    ms = torch.stack([xs[ys == c].mean(0) for c in range(m)])
    mt = torch.stack([xt[yt == c].mean(0) for c in range(n)])
    a = torch.bincount(ys).double() / len(ys)
    b = torch.bincount(yt).double() / len(yt)
    expected = linprog_emd(a.tolist(), b.tolist(), torch.cdist(ms, mt).numpy())
    assert metrics.domain_distance(xs, ys, xt, yt) == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_domain_similarity_hand_solved_and_source_selection():
    # Source: classes at 0 (3 images) and 10 (1 image); target: one class at 4.
    xs = torch.tensor([[0.0], [0.0], [0.0], [10.0]])
    ys = torch.tensor([0, 0, 0, 1])
    xt = torch.tensor([[4.0], [4.0]])
    yt = torch.tensor([0, 0])
    assert metrics.domain_distance(xs, ys, xt, yt) == pytest.approx(0.75 * 4 + 0.25 * 6)
    assert metrics.domain_similarity(xs, ys, xt, yt) == pytest.approx(math.exp(-0.045))
    sims = metrics.rank_source_classes(xs, ys, xt, yt, emd_scale=0.1)
    torch.testing.assert_close(sims, torch.tensor([math.exp(-0.4), math.exp(-0.6)],
                                                  dtype=torch.float64))
    assert metrics.select_source_classes(xs, ys, xt, yt, k=1).tolist() == [0]
    with pytest.raises(ValueError, match="k must be"):
        metrics.select_source_classes(xs, ys, xt, yt, k=3)
    with pytest.raises(ValueError, match="no samples"):
        metrics.domain_distance(xs, torch.tensor([0, 0, 0, 2]), xt, yt)


def rings(n=300, tilt=0.3, noise=0.01, seed=0):
    """Two noisy unit circles on the sphere, tilted by `tilt` radians: near each other, but
    each a one-dimensional manifold that diffusion can follow."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(2 * n, generator=g, dtype=torch.float64) * 2 * math.pi
    x = torch.stack([t.cos(), t.sin(), torch.zeros_like(t)], dim=1)
    x[n:, 1:] = torch.stack([t[n:].sin() * math.cos(tilt), t[n:].sin() * math.sin(tilt)], 1)
    return x + noise * torch.randn(2 * n, 3, generator=g, dtype=torch.float64), \
        torch.arange(2).repeat_interleave(n)


def ranking_map(ranking, labels, queries):
    aps = []
    for order, q in zip(ranking, queries):
        order = order[order != q]
        rel = (labels[order] == labels[q]).double()
        aps.append(float((rel.cumsum(0) * rel / torch.arange(1, len(order) + 1)).sum() / rel.sum()))
    return sum(aps) / len(aps)


def test_evaluate_ranking_of_the_cosine_ranking_is_the_metrics_and_checks_its_input():
    g = torch.Generator().manual_seed(3)
    q, g_x = torch.randn(30, 4, generator=g), torch.randn(50, 4, generator=g)
    ql, gl = torch.randint(0, 6, (30,), generator=g), torch.randint(0, 5, (50,), generator=g)
    ranking = (F.normalize(q, dim=1) @ F.normalize(g_x, dim=1).T).argsort(dim=1, descending=True)
    result = metrics.evaluate_ranking(ranking, ql, gl, ks=(1, 4))
    assert result["mAP"] == pytest.approx(metrics.mean_average_precision(
        q, ql, g_x, gl, exclude_self=False), abs=1e-12)
    assert result["recall"] == pytest.approx(metrics.recall_at_k(q, ql, g_x, gl, ks=(1, 4),
                                                                 exclude_self=False))
    itself = (F.normalize(q, dim=1) @ F.normalize(q, dim=1).T).argsort(dim=1, descending=True)
    assert metrics.evaluate_ranking(itself, ql, ql, ks=(1,), exclude_self=True)["mAP"] == \
        pytest.approx(metrics.mean_average_precision(q, ql), abs=1e-12)
    with pytest.raises(ValueError, match="Nq = Ng"):
        metrics.evaluate_ranking(ranking, ql, gl, exclude_self=True)
    repeated = ranking.clone()
    repeated[0, 1] = repeated[0, 0]
    with pytest.raises(ValueError, match="permutation"):
        metrics.evaluate_ranking(repeated, ql, gl)
    with pytest.raises(ValueError, match="in \\[1, 50\\]"):
        metrics.evaluate_ranking(ranking, ql, gl, ks=(51,))
    with pytest.raises(ValueError, match="query_labels"):
        metrics.evaluate_ranking(ranking, ql[:5], gl)


def test_diffusion_raises_map_on_a_manifold():
    x, y = rings()
    queries = torch.arange(0, len(x), 15)
    euclidean = (x[queries] @ x.T).argsort(dim=1, descending=True)
    scores, ranking = retrieval.diffusion_rerank(x[queries], x, k=10, alpha=0.99,
                                                 similarity_power=3)
    assert scores.shape == ranking.shape == (len(queries), len(x))
    before, after = ranking_map(euclidean, y, queries), ranking_map(ranking, y, queries)
    assert after > before + 0.05, (before, after)
    with pytest.raises(ValueError, match="smaller than the gallery"):
        retrieval.diffusion_rerank(x[:2], x[:5], k=5)
    for kwargs, match in ((dict(max_iter=0), "max_iter"), (dict(tol=0.0), "tol"),
                          (dict(tol=math.nan), "tol")):  # max_iter=0 gave all-zero scores
        with pytest.raises(ValueError, match=match):
            retrieval.diffusion_rerank(x[:2], x[:5], k=2, **kwargs)
