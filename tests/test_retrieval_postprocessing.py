"""Query expansion, database-side augmentation, PCA whitening, the contrastive loss and class
activation maps."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import finegrained_ops as fo
from finegrained_ops import reference
from finegrained_ops.metrics import mean_average_precision
from finegrained_ops.retrieval import (PCAWhitening, class_activation_map, contrastive_loss,
                                       database_augmentation, query_expansion, same_label_pairs)


def descriptors(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def test_query_expansion_is_the_weighted_neighbour_sum():
    q, g = descriptors(3, 8, 0), descriptors(20, 8, 1)
    sims = q @ g.T
    top, idx = sims.topk(4, dim=1)
    expected = F.normalize(q + (top.clamp(min=0).pow(3.0)[:, :, None] * g[idx]).sum(1), dim=1)
    torch.testing.assert_close(query_expansion(q, g, k=4, alpha=3.0), expected)
    average = F.normalize(q + g[idx].sum(1), dim=1)            # alpha = 0: average QE
    torch.testing.assert_close(query_expansion(q, g, k=4, alpha=0.0), average)
    # chunking changes nothing
    torch.testing.assert_close(query_expansion(q, g, k=4, chunk_size=1), expected)


def test_database_augmentation_includes_each_item_itself():
    g = descriptors(10, 6, 2)
    torch.testing.assert_close(database_augmentation(g, k=1), g)   # only itself, weight 1
    sims, idx = (g @ g.T).topk(3, dim=1)
    expected = F.normalize((sims.clamp(min=0).pow(2.0)[:, :, None] * g[idx]).sum(1), dim=1)
    torch.testing.assert_close(database_augmentation(g, k=3, alpha=2.0, chunk_size=4), expected)


def test_query_expansion_brings_a_near_duplicate_closer():
    g = descriptors(50, 16, 3)
    q = F.normalize(g[7] + 0.3 * descriptors(1, 16, 4)[0], dim=0)[None]
    before = (q @ g[7]).item()
    after = (query_expansion(q, g, k=1, alpha=0.0) @ g[7]).item()
    assert after > before


def test_pca_whitening_decorrelates_and_round_trips_the_state_dict():
    g = torch.Generator().manual_seed(5)
    mixing = torch.randn(6, 6, generator=g, dtype=torch.float64)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64) @ mixing
    white = PCAWhitening(power=0.5, shrinkage=0.0).fit(x)
    projected = (x - white.mean) @ white.projection.T
    torch.testing.assert_close(projected.T @ projected / 500, torch.eye(6, dtype=torch.float64),
                               atol=1e-8, rtol=0)
    out = white(x.float())
    assert out.shape == (500, 6) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(500))
    reduced = PCAWhitening(output_dim=3).fit(x)
    assert reduced(x).shape == (500, 3)
    fresh = PCAWhitening(output_dim=3)
    fresh.load_state_dict(reduced.state_dict())
    torch.testing.assert_close(fresh(x), reduced(x))


def labelled_descriptors(n=400, d=5, seed=6):
    """Five classes apart along axis 0 (small variance); within-class nuisance along the
    others, large along axis 1; then mixed by a random matrix."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 5
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor([0.05, 5, 1, 1, 1.0])
    x[:, 0] += labels
    return x @ torch.randn(d, d, generator=g, dtype=torch.float64), labels


def test_pair_whitening_whitens_the_pair_differences_and_matches_the_cholesky_form():
    x, labels = labelled_descriptors()
    pairs = same_label_pairs(labels)
    white = PCAWhitening(shrinkage=0.0).fit_pairs(x, pairs)
    diffs = x[pairs[:, 0]] - x[pairs[:, 1]]
    s = diffs.T @ diffs / len(diffs)
    p = white.projection
    torch.testing.assert_close(p @ s @ p.T, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)
    projected = (x - x.mean(0)) @ p.T
    moment = projected.T @ projected / len(x)
    variances = moment.diagonal()
    torch.testing.assert_close(moment, torch.diag(variances), atol=1e-8, rtol=0)
    assert bool((variances[:-1] >= variances[1:]).all())
    # Radenović et al.'s code: P = inv(chol(S)), then the eigenvectors of the whitened data
    chol_inverse = torch.linalg.inv(torch.linalg.cholesky(s))
    whitened = (x - x.mean(0)) @ chol_inverse.T
    values, vectors = torch.linalg.eigh(whitened.T @ whitened)
    theirs = vectors[:, values.argsort(descending=True)].T @ chol_inverse
    signs = torch.sign((theirs * p).sum(dim=1, keepdim=True))
    torch.testing.assert_close(p, theirs * signs, atol=1e-8, rtol=1e-8)
    assert PCAWhitening(output_dim=2).fit_pairs(x, pairs)(x).shape == (400, 2)


def test_pair_whitening_leaves_out_dead_channels():
    x, labels = labelled_descriptors()
    dead = torch.cat([x[:, :2], torch.zeros(len(x), 1, dtype=x.dtype), x[:, 2:]], dim=1)
    pairs = same_label_pairs(labels)
    white = PCAWhitening().fit_pairs(dead, pairs)
    assert white.projection.shape == (5, 6)  # dim defaults to the 5 dimensions that vary
    torch.testing.assert_close(white.projection[:, 2], torch.zeros(5, dtype=x.dtype),
                               atol=1e-12, rtol=0)
    kept = torch.tensor([0, 1, 3, 4, 5])
    alive = PCAWhitening().fit_pairs(x, pairs)
    signs = torch.sign((white.projection[:, kept] * alive.projection).sum(1, keepdim=True))
    torch.testing.assert_close(white.projection[:, kept] * signs, alive.projection)
    with pytest.raises(ValueError,
                       match="vary in 5 dimensions: output_dim must be at most that, got 6"):
        PCAWhitening(output_dim=6).fit_pairs(dead, pairs)


def test_pair_whitening_keeps_what_separates_classes_where_pca_whitening_does_not():
    x, labels = labelled_descriptors()
    train, held_out = slice(0, 200), slice(200, 400)
    pairs = same_label_pairs(labels[train])
    scores = {}
    for name, white in (("pca", PCAWhitening(output_dim=1).fit(x[train])),
                        ("pairs", PCAWhitening(output_dim=1).fit_pairs(x[train], pairs))):
        z = (x[held_out] - white.mean) @ white.projection.T  # 1-D: no normalisation
        scores[name] = mean_average_precision(z, labels[held_out], metric="euclidean")
    assert scores["pairs"] > 0.95 > 0.5 > scores["pca"], scores


def test_same_label_pairs_pair_each_member_with_another_of_its_label():
    labels = torch.tensor([3, 1, 3, 3, 0, 1])
    pairs = same_label_pairs(labels, seed=4)
    assert pairs.shape == (5, 2)  # label 0 has one member: no pair
    assert bool((labels[pairs[:, 0]] == labels[pairs[:, 1]]).all())
    assert bool((pairs[:, 0] != pairs[:, 1]).all())
    assert sorted(pairs[:, 0].tolist()) == [0, 1, 2, 3, 5]
    assert torch.equal(same_label_pairs(labels, seed=4), pairs)
    with pytest.raises(ValueError, match="no label has two members"):
        same_label_pairs(torch.tensor([0, 1]))


def test_whitening_agrees_on_descriptors_that_do_not_vary_everywhere():
    """fit, like fit_pairs, works within the span of the centred descriptors: a singular
    covariance with shrinkage 0 gave NaN, and constant descriptors NaN at any shrinkage."""
    x, labels = labelled_descriptors()
    dead = torch.cat([x[:, :2], torch.full((len(x), 1), 3.0, dtype=x.dtype), x[:, 2:]], dim=1)
    white = PCAWhitening(shrinkage=0.0).fit(dead)
    assert white.projection.shape == (5, 6) and bool(torch.isfinite(white(dead)).all())
    projected = (dead - white.mean) @ white.projection.T
    torch.testing.assert_close(projected.T @ projected / len(x), torch.eye(5, dtype=x.dtype))
    constant = torch.ones(10, 4)
    for fit in (lambda w: w.fit(constant), lambda w: w.fit_pairs(constant, torch.tensor([[0, 1]]))):
        with pytest.raises(ValueError, match="descriptors do not vary"):
            fit(PCAWhitening())
    with pytest.raises(ValueError,
                       match="vary in 5 dimensions: output_dim must be at most that, got 6"):
        PCAWhitening(output_dim=6).fit(dead)


def test_pair_whitening_follows_cirtorch_whitenlearn_with_queries_a_subset():
    """cirtorch's whitenlearn(X, qidxs, pidxs): m the mean of X[:, qidxs], P = inv(chol(S)),
    then the eigenvectors of P (X - m) (X - m)ᵀ Pᵀ over every descriptor. With the queries a
    subset, centring on all descriptors instead moved the whitened descriptors by 24-26%."""
    x, labels = labelled_descriptors()
    queries = torch.arange(0, 400, 3)
    pairs = same_label_pairs(labels)
    pairs = pairs[torch.isin(pairs[:, 0], queries)]
    white = PCAWhitening(shrinkage=0.0).fit_pairs(x, pairs)
    q, p = x[pairs[:, 0]].numpy().T, x[pairs[:, 1]].numpy().T   # their (D, N) layout
    xs = x.numpy().T
    m = q.mean(axis=1, keepdims=True)
    df = q - p
    chol_inverse = np.linalg.inv(np.linalg.cholesky(df @ df.T / df.shape[1]))
    whitened = chol_inverse @ (xs - m)
    values, vectors = np.linalg.eig(whitened @ whitened.T)
    theirs = torch.from_numpy(vectors[:, values.argsort()[::-1]].T @ chol_inverse)
    torch.testing.assert_close(white.mean, torch.from_numpy(m[:, 0]))
    signs = torch.sign((theirs * white.projection).sum(dim=1, keepdim=True))
    torch.testing.assert_close(white.projection, theirs * signs, atol=1e-8, rtol=1e-8)


def test_pca_whitening_input_dtypes_casts_and_state_dicts():
    x, _ = labelled_descriptors()
    white = PCAWhitening(output_dim=3).fit(x)
    with pytest.raises(TypeError, match="x must have dtype"):  # came back as integer zeros
        white(x.long())
    with pytest.raises(TypeError, match="descriptors must have dtype"):
        PCAWhitening().fit(x.to(torch.complex128))
    expected = white(x)
    model = torch.nn.Sequential(white).float()  # the buffers stay float64
    assert white.projection.dtype == torch.float64
    torch.testing.assert_close(model(x.float()), expected.float())
    with pytest.raises(ValueError, match="projection has 3 rows .* output_dim=4"):
        PCAWhitening(output_dim=4).load_state_dict(white.state_dict())
    assert PCAWhitening().load_state_dict(white.state_dict()) is not None  # output_dim None: any


def test_pca_whitening_errors():
    with pytest.raises(RuntimeError, match="fit"):
        PCAWhitening()(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at most D=3"):
        PCAWhitening(output_dim=4).fit(torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        PCAWhitening().fit(torch.randn(1, 3))
    with pytest.raises(ValueError, match="D=3 columns"):
        PCAWhitening().fit(torch.randn(5, 3))(torch.randn(2, 4))
    with pytest.raises(ValueError, match="pairs must be \\(P, 2\\)"):
        PCAWhitening().fit_pairs(torch.randn(5, 3), torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="index the 5 descriptors, got values in \\[0, 5\\]"):
        PCAWhitening().fit_pairs(torch.randn(5, 3), torch.tensor([[0, 5]]))
    few = torch.randn(30, 64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="span 20 of the 29 dimensions .* more descriptors"):
        PCAWhitening(output_dim=8).fit_pairs(few, same_label_pairs(torch.arange(30) % 10))
    with pytest.raises(TypeError, match="pairs"):
        PCAWhitening().fit_pairs(torch.randn(5, 3), torch.tensor([[0.0, 1.0]]))


def test_query_expansion_errors():
    q, g = descriptors(2, 4), descriptors(5, 4)
    with pytest.raises(ValueError, match="at most the gallery size 5"):
        query_expansion(q, g, k=6)
    with pytest.raises(ValueError, match="share D"):
        query_expansion(q, descriptors(5, 3))
    with pytest.raises(ValueError, match="alpha"):
        query_expansion(q, g, alpha=-1.0)
    poisoned = g.clone()
    poisoned[3, 0] = float("nan")  # top-k ranked it first: every expanded row came out NaN
    for call in (lambda: query_expansion(q, poisoned), lambda: database_augmentation(poisoned)):
        with pytest.raises(ValueError, match="gallery must be finite"):
            call()
    with pytest.raises(ValueError, match="query must be finite"):
        query_expansion(q * float("inf"), g)


def test_query_expansion_holds_over_the_float32_range():
    q, g = descriptors(3, 4).float(), descriptors(6, 4).float()
    torch.testing.assert_close(query_expansion(q * 1e30, g * 1e30), query_expansion(q, g))


def test_class_activation_map_is_the_weighted_channel_sum():
    g = torch.Generator().manual_seed(6)
    features = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(7, 3, generator=g, dtype=torch.float64)
    classes = torch.tensor([2, 5])
    raw = class_activation_map(features, weight, classes, normalize=False)
    torch.testing.assert_close(raw[1], (weight[5][:, None, None] * features[1]).sum(0))
    # the classifier's logit is the CAM's spatial mean (GAP then linear, no bias)
    logits = features.mean(dim=(2, 3)) @ weight.T
    torch.testing.assert_close(raw.mean(dim=(1, 2)), logits[[0, 1], [2, 5]])
    cams = class_activation_map(features, weight, classes, size=(16, 20))
    assert cams.shape == (2, 16, 20)
    assert cams.amin().item() == pytest.approx(0) and cams.amax().item() == pytest.approx(1)
    with pytest.raises(ValueError, match="K, C=3"):
        class_activation_map(features, weight[:, :2], classes)
    with pytest.raises(ValueError, match="int64"):
        class_activation_map(features, weight, classes.float())
    with pytest.raises(ValueError, match="classes must be in \\[0, K=7\\)"):  # -1 gave K - 1's
        class_activation_map(features, weight, torch.tensor([2, -1]))
    with pytest.raises(TypeError, match="features must have dtype"):  # truncated the weights
        class_activation_map(features.long(), weight, classes)


@settings(deadline=None, max_examples=40)
@given(b=st.integers(1, 10), d=st.integers(1, 5), classes=st.integers(1, 4),
       seed=st.integers(0, 2**16), pos_margin=st.sampled_from([0.0, 0.3]),
       neg_margin=st.sampled_from([0.5, 1.0, 2.5]), squared=st.booleans(),
       negatives=st.sampled_from(["all", "hardest"]), normalize=st.booleans(),
       reduction=st.sampled_from(["mean_nonzero", "mean", "sum"]))
def test_contrastive_loss_matches_the_reference_float64(b, d, classes, seed, pos_margin,
                                                        neg_margin, squared, negatives,
                                                        normalize, reduction):
    """Value and gradient against reference.contrastive_loss, a loop over the pairs."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, d, generator=g, dtype=torch.float64)
    labels = torch.randint(classes, (b,), generator=g)
    kwargs = dict(pos_margin=pos_margin, neg_margin=neg_margin, squared=squared,
                  negatives=negatives, normalize=normalize, reduction=reduction)
    results = []
    for fn in (contrastive_loss, reference.contrastive_loss):
        x = emb.clone().requires_grad_()
        loss = fn(x, labels, **kwargs)
        loss.backward()
        results.append((loss.detach(), x.grad))
    (a, grad_a), (b_, grad_b) = results
    torch.testing.assert_close(a, b_, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-10, atol=1e-12)


def test_contrastive_loss_gradcheck():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 0])
    for squared in (False, True):
        assert torch.autograd.gradcheck(
            lambda x: contrastive_loss(x, labels, neg_margin=1.5, squared=squared), (emb,))


@pytest.mark.parametrize("pos_margin, neg_margin", [(0.0, 1.0), (0.2, 0.8), (0.1, 1.5)])
@pytest.mark.parametrize("seed", [0, 1])
def test_contrastive_loss_equals_pytorch_metric_learning(pos_margin, neg_margin, seed):
    from pytorch_metric_learning import losses
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(24, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(4, (24,), generator=g)
    ours, theirs = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    a = contrastive_loss(ours, labels, pos_margin=pos_margin, neg_margin=neg_margin)
    b = losses.ContrastiveLoss(pos_margin=pos_margin, neg_margin=neg_margin)(theirs, labels)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ours.grad, theirs.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_contrastive_loss_computes_half_types_in_float32(dtype):
    """cdist has no half kernels: the loss raised for float16 / bfloat16."""
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(16, 8, generator=g).to(dtype)
    labels = torch.randint(3, (16,), generator=g)
    loss = contrastive_loss(emb.requires_grad_(), labels)
    assert loss.dtype == dtype
    torch.testing.assert_close(loss.float(), contrastive_loss(emb.detach().float(), labels),
                               rtol=1e-2, atol=1e-2)
    loss.backward()
    assert emb.grad.dtype == dtype and bool(torch.isfinite(emb.grad).all())


def test_contrastive_loss_takes_the_triplet_losses_labels():
    """docs/semantics.md §1, Labels: a (B,) int64 tensor as it is, any ids; the triplet loss's
    rule, with its messages."""
    emb = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([-5, -5, 10**12, 10**12, 3, 3])
    same_pairs = torch.arange(3).repeat_interleave(2)
    assert contrastive_loss(emb, ids) == contrastive_loss(emb, same_pairs)
    for bad, error, match in ((ids.int(), TypeError, "labels must be int64"),
                              (ids[:5], ValueError, "labels has 5 entries")):
        for loss in (contrastive_loss, fo.triplet_margin_loss):
            with pytest.raises(error, match=match):
                loss(emb, bad)
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        contrastive_loss(emb, ids.tolist())


def test_contrastive_loss_squared_form_and_hardest_negatives():
    emb = torch.tensor([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    d = torch.cdist(emb, emb)
    # Radenović's form, summed over ordered pairs: y d^2 + (1 - y) max(0, m - d)^2
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(4, dtype=torch.bool)
    different = labels[:, None] != labels[None, :]
    expected = (d[same] ** 2).sum() + (F.relu(2.5 - d[different]) ** 2).sum()
    loss = contrastive_loss(emb, labels, pos_margin=0.0, neg_margin=2.5, squared=True,
                            normalize=False, reduction="sum")
    torch.testing.assert_close(loss, expected)
    hardest = contrastive_loss(emb, labels, pos_margin=0.0, neg_margin=2.5, squared=True,
                               normalize=False, negatives="hardest", reduction="sum")
    nearest_negative = d.masked_fill(~different, float("inf")).amin(dim=1)
    torch.testing.assert_close(hardest, (d[same] ** 2).sum()
                               + (F.relu(2.5 - nearest_negative) ** 2).sum())
    assert contrastive_loss(emb[:1], labels[:1]).item() == 0
    from finegrained_ops.nn import ContrastiveLoss
    torch.testing.assert_close(ContrastiveLoss(neg_margin=2.5, squared=True, normalize=False,
                                               reduction="sum")(emb, labels), expected)
    with pytest.raises(ValueError, match="negatives"):
        contrastive_loss(emb, labels, negatives="semihard")
