"""Triplet mining and the fused triplet margin loss: native vs the brute-force reference and
pytorch-metric-learning, gradients, dtypes, determinism, torch.compile, distributed mining,
the anchor-point classifier and bad input."""
import os

import pytest
import torch
import torch.multiprocessing as mp
from hypothesis import given
from hypothesis import strategies as st

import finegrained_ops as fo
from finegrained_ops import reference
from finegrained_ops._native import _C
from finegrained_ops.nn import AnchorPointClassifier, TripletAnchorPointLoss, TripletMarginLoss
from finegrained_ops.nn.anchor_points import kmeans
from finegrained_ops.ops.triplet import _triplet_count, _triplet_margin_loss, _triplet_mine

from .helpers import check_gradients, free_port

RULES = ["violating", "semihard", "hardest", "all"]
REDUCTIONS = ["mean_nonzero", "mean", "sum"]


def random_batch(b, num_classes, d, num_extra=0, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, d, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(num_classes, (b,), generator=g)
    extra = torch.randn(num_extra, d, generator=g, dtype=torch.float64).to(dtype)
    extra_labels = torch.randint(num_classes, (num_extra,), generator=g)
    return tuple(t.to(device) for t in (emb, labels, extra, extra_labels))


def extra_kwargs(extra, extra_labels):
    if extra.shape[0] == 0:
        return {}
    return dict(extra_negatives=extra, extra_negative_labels=extra_labels)


def assert_triplets_equal(actual, expected):
    for a, e in zip(actual, expected):
        assert torch.equal(a.cpu(), e.cpu()), (a, e)


@given(b=st.integers(2, 24), num_classes=st.integers(1, 5), d=st.integers(1, 6),
       num_extra=st.integers(0, 5), rule=st.sampled_from(RULES),
       fraction=st.sampled_from([1.0, 0.6, 0.3]), margin=st.sampled_from([0.0, 0.2, 1.0]),
       reduction=st.sampled_from(REDUCTIONS), squared=st.booleans(), seed=st.integers(0, 10**6))
def test_native_matches_reference(b, num_classes, d, num_extra, rule, fraction, margin,
                                  reduction, squared, seed):
    check_against_reference("cpu", b, num_classes, d, num_extra, rule, fraction, margin,
                            reduction, squared, seed)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("fraction, reduction, squared", [(1.0, "mean_nonzero", True),
                                                          (0.6, "mean", False),
                                                          (0.3, "sum", True)])
def test_native_matches_reference_on_each_device(device, rule, fraction, reduction, squared):
    for seed in range(3):
        check_against_reference(device, 30, 4, 5, 4, rule, fraction, 0.3, reduction, squared,
                                seed)


def test_reference_runs_on_each_device(device):
    """The spec runs where the data is (the GPU benchmark times it there): triplets come back
    on the input's device and the loss equals the CPU's."""
    emb, labels, extra, extra_labels = random_batch(30, 4, 5, 4, seed=0)
    kw = extra_kwargs(extra.to(device), extra_labels.to(device))
    on_device = emb.to(device)  # "cuda" compares unequal to the "cuda:0" a tensor reports
    mined = reference.mine_triplets(on_device, labels.to(device), **kw)
    bank = reference.mine_from_bank(on_device[:7], labels[:7].to(device), on_device,
                                    labels.to(device), **kw)
    assert all(t.device == on_device.device for t in (*mined, *bank))
    assert_triplets_equal(mined, reference.mine_triplets(
        emb, labels, **extra_kwargs(extra, extra_labels)))
    loss = reference.triplet_margin_loss(emb.to(device), labels.to(device), **kw)
    torch.testing.assert_close(loss.cpu(), reference.triplet_margin_loss(
        emb, labels, **extra_kwargs(extra, extra_labels)), rtol=1e-12, atol=0)


def check_against_reference(device, b, num_classes, d, num_extra, rule, fraction, margin,
                            reduction, squared, seed):
    """Mined triplets equal exactly (order included); loss and gradients to 1e-10 (float64)."""
    emb, labels, extra, extra_labels = random_batch(b, num_classes, d, num_extra, seed=seed)
    kw = dict(margin=margin, negatives=rule, positive_fraction=fraction, squared=squared,
              **extra_kwargs(extra, extra_labels))
    expected = reference.mine_triplets(emb, labels, **kw)
    dev = lambda t: t.to(device)  # noqa: E731
    kw_dev = {k: dev(v) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    assert_triplets_equal(fo.mine_triplets(dev(emb), dev(labels), **kw_dev), expected)

    x_ref, e_ref = emb.clone().requires_grad_(), extra.clone().requires_grad_()
    x, e = dev(emb).requires_grad_(), dev(extra).requires_grad_()
    kw_ref = dict(kw, **extra_kwargs(e_ref, extra_labels))
    kw_dev = dict(kw_dev, **extra_kwargs(e, dev(extra_labels)))
    loss_ref = reference.triplet_margin_loss(x_ref, labels, reduction=reduction, **kw_ref)
    loss = fo.triplet_margin_loss(x, dev(labels), reduction=reduction, **kw_dev)
    torch.testing.assert_close(loss.cpu(), loss_ref.detach(), rtol=1e-10, atol=1e-12)
    if loss_ref.requires_grad:
        loss_ref.backward()
    loss.backward()
    expected_grad = x_ref.grad if x_ref.grad is not None else torch.zeros_like(emb)
    torch.testing.assert_close(x.grad.cpu(), expected_grad, rtol=1e-9, atol=1e-11)
    if num_extra:
        expected_grad = e_ref.grad if e_ref.grad is not None else torch.zeros_like(extra)
        torch.testing.assert_close(e.grad.cpu(), expected_grad, rtol=1e-9, atol=1e-11)


@given(q=st.integers(0, 12), n=st.integers(1, 30), num_classes=st.integers(1, 4),
       num_extra=st.integers(0, 4), rule=st.sampled_from(RULES),
       fraction=st.sampled_from([1.0, 0.5]), chunk=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_bank_mining_matches_reference(q, n, num_classes, num_extra, rule, fraction, chunk, seed):
    bank, bank_labels, extra, extra_labels = random_batch(n, num_classes, 3, num_extra, seed=seed)
    query, query_labels, _, _ = random_batch(q, num_classes, 3, seed=seed + 1)
    own = torch.randint(-1, n, (q,), generator=torch.Generator().manual_seed(seed))
    kw = dict(negatives=rule, positive_fraction=fraction, query_indices=own,
              **extra_kwargs(extra, extra_labels))
    expected = reference.mine_from_bank(query, query_labels, bank, bank_labels, **kw)
    mined = fo.mine_from_bank(query, query_labels, bank, bank_labels, per_anchor=None,
                              chunk_size=chunk, **kw)
    assert_triplets_equal(mined, expected)


def test_bank_sampling_per_anchor():
    bank, labels, _, _ = random_batch(60, 3, 4, seed=1)
    full = fo.mine_from_bank(bank, labels, bank, labels, per_anchor=None)
    everything = set(zip(*(t.tolist() for t in full)))
    counts = torch.bincount(full[0], minlength=60)
    g = torch.Generator().manual_seed(5)
    sampled = fo.mine_from_bank(bank, labels, bank, labels, per_anchor=7, generator=g)
    triplets = list(zip(*(t.tolist() for t in sampled)))
    assert len(set(triplets)) == len(triplets) and set(triplets) <= everything
    torch.testing.assert_close(torch.bincount(sampled[0], minlength=60), counts.clamp(max=7))
    # The draw of a query depends on the seed and its index only, not on the chunking.
    for chunk in (1, 7, 60):
        again = fo.mine_from_bank(bank, labels, bank, labels, per_anchor=7, chunk_size=chunk,
                                  generator=torch.Generator().manual_seed(5))
        assert_triplets_equal(again, sampled)
    other = fo.mine_from_bank(bank, labels, bank, labels, per_anchor=7,
                              generator=torch.Generator().manual_seed(6))
    assert not all(torch.equal(a, b) for a, b in zip(other, sampled))


def test_per_anchor_sampling_is_uniform():
    # Anchor 0 has one positive (1) and four negatives (2..5): with 'all', 4 triplets, of
    # which per_anchor=2 are drawn, so each negative appears in half of the draws.
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0], [0.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    hits = torch.zeros(4)
    draws = 2000
    for seed in range(draws):
        _, _, n = fo.mine_from_bank(emb[:1], labels[:1], emb, labels, per_anchor=2,
                                    negatives="all", query_indices=torch.tensor([0]),
                                    generator=torch.Generator().manual_seed(seed))
        assert n.numel() == 2 and n[0] != n[1]
        hits[n - 2] += 1
    assert ((hits - draws / 2).abs() < 5 * (draws / 4) ** 0.5).all(), hits


@pytest.mark.parametrize("k", [5, 17, 30])
def test_max_triplets_draws_are_uniform_and_ordered(k):
    """max_triplets draws k of the T mined triplets natively (Floyd's algorithm): every triplet
    is kept with probability k / T, and the kept ones stay in the documented order."""
    emb, labels, _, _ = random_batch(6, 2, 3, seed=5)
    full = list(zip(*(t.tolist() for t in fo.mine_triplets(emb, labels, negatives="all"))))
    total, draws = len(full), 1500
    position = {t: i for i, t in enumerate(full)}
    hits = torch.zeros(total)
    g = torch.Generator().manual_seed(0)
    for _ in range(draws):
        kept = fo.mine_triplets(emb, labels, negatives="all", max_triplets=k, generator=g)
        where = [position[t] for t in zip(*(t.tolist() for t in kept))]
        assert len(where) == k and where == sorted(set(where))
        hits[where] += 1
    p = k / total
    sigma = (draws * p * (1 - p)) ** 0.5
    assert ((hits - draws * p).abs() <= 5 * sigma + 1e-9).all()


def test_max_triplets_samples_a_subset_in_order():
    emb, labels, _, _ = random_batch(40, 4, 5, seed=3)
    full = fo.mine_triplets(emb, labels, negatives="all")
    total = full[0].numel()
    position = {t: i for i, t in enumerate(zip(*(t.tolist() for t in full)))}
    capped = fo.mine_triplets(emb, labels, negatives="all", max_triplets=50,
                              generator=torch.Generator().manual_seed(1))
    where = [position[t] for t in zip(*(t.tolist() for t in capped))]
    assert len(where) == 50 and where == sorted(set(where))
    again = fo.mine_triplets(emb, labels, negatives="all", max_triplets=50,
                             generator=torch.Generator().manual_seed(1))
    assert_triplets_equal(again, capped)
    assert_triplets_equal(fo.mine_triplets(emb, labels, negatives="all", max_triplets=total),
                          full)


@pytest.mark.parametrize("rule", RULES)
def test_several_blocks_sampling_and_bank_mining_match_the_cpu(device, rule):
    """B = 517 anchors are five CUDA blocks of 128; loss, gradients, max_triplets sampling and
    bank mining with per-anchor sampling and extras, on the device and on the CPU."""
    emb, labels, extra, extra_labels = random_batch(517, 20, 16, 9, seed=4)

    def run(where):
        e, x = emb.detach().to(where).requires_grad_(), extra.detach().to(where).requires_grad_()
        y, ey = labels.to(where), extra_labels.to(where)
        loss = fo.triplet_margin_loss(e, y, negatives=rule, positive_fraction=0.6,
                                      extra_negatives=x, extra_negative_labels=ey)
        loss.backward()
        sampled = fo.mine_triplets(e, y, negatives=rule, max_triplets=1000,
                                   generator=torch.Generator().manual_seed(1))
        bank = fo.mine_from_bank(e[:200], y[:200], e, y, per_anchor=3, negatives=rule,
                                 query_indices=torch.arange(200, device=where),
                                 extra_negatives=x, extra_negative_labels=ey, chunk_size=64,
                                 generator=torch.Generator().manual_seed(2))
        return [loss, e.grad, x.grad], [*sampled, *bank]

    (cpu_values, cpu_triplets), (values, triplets) = run("cpu"), run(device)
    for a, b in zip(cpu_values, values):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-10, atol=1e-12)
    assert_triplets_equal(triplets, cpu_triplets)
    assert cpu_triplets[0].numel() > 0


@given(b=st.integers(2, 40), num_classes=st.integers(1, 6), d=st.integers(2, 8),
       margin=st.sampled_from([0.05, 0.2, 0.5]), seed=st.integers(0, 10**6))
def test_equals_pytorch_metric_learning(b, num_classes, d, margin, seed):
    from pytorch_metric_learning import distances, losses, miners
    emb, labels, _, _ = random_batch(b, num_classes, d, seed=seed)
    pml = losses.TripletMarginLoss(margin=margin, distance=distances.LpDistance(power=2))
    x_pml, x = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    expected = pml(x_pml, labels)
    loss = fo.triplet_margin_loss(x, labels, margin=margin)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-9, atol=1e-12)
    loss.backward()
    if expected.requires_grad and expected.grad_fn is not None:
        expected.backward()
    expected_grad = x_pml.grad if x_pml.grad is not None else torch.zeros_like(emb)
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-8, atol=1e-10)

    miner = miners.BatchHardMiner(distance=distances.LpDistance(power=2))
    assert_triplets_equal(fo.mine_triplets(emb, labels, negatives="hardest"),
                          miner(emb, labels))
    hard_pml = pml(emb, labels, miner(emb, labels))
    torch.testing.assert_close(fo.triplet_margin_loss(emb, labels, margin=margin, negatives="hardest"),
                               hard_pml, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("labels, margin", [
    ([0, 0, 0, 0], 0.2),   # no negative
    ([0, 1, 2, 3], 0.2),   # no positive
    ([0, 0, 1, 1], 0.0),   # classes far apart, zero margin: nothing violates
])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_no_triplet_gives_zero_and_zero_grad(device, labels, margin, reduction):
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]], dtype=torch.float64,
                       device=device, requires_grad=True)
    labels = torch.tensor(labels, device=device)
    loss = fo.triplet_margin_loss(emb, labels, margin=margin, reduction=reduction)
    assert loss.item() == 0.0
    loss.backward()
    assert emb.grad is not None and torch.equal(emb.grad, torch.zeros_like(emb))


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("squared, normalize", [(True, True), (False, True), (True, False)])
def test_gradcheck(rule, squared, normalize):
    emb, labels, extra, extra_labels = random_batch(10, 3, 4, num_extra=3, seed=7)
    emb.requires_grad_()
    extra.requires_grad_()
    check_gradients(
        lambda x, e: fo.triplet_margin_loss(x, labels, margin=0.5, negatives=rule, positive_fraction=0.7, extra_negatives=e, extra_negative_labels=extra_labels,
                                            squared=squared, normalize=normalize),
        (emb, extra))


def test_double_backward_is_refused():
    emb, labels, _, _ = random_batch(8, 2, 3)
    emb.requires_grad_()
    (grad,) = torch.autograd.grad(fo.triplet_margin_loss(emb, labels), emb, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad.sum(), emb)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2),
                                        (torch.float16, 5e-3)])
def test_reduced_precision(device, dtype, tol):
    emb, labels, extra, extra_labels = random_batch(32, 4, 16, num_extra=4, seed=2)
    rounded = emb.to(dtype)
    x64 = rounded.double().to(device).requires_grad_()
    x = rounded.to(device).requires_grad_()
    kw = dict(extra_negatives=extra.to(device), extra_negative_labels=extra_labels.to(device))
    expected = fo.triplet_margin_loss(x64, labels.to(device), **dict(kw, extra_negatives=kw[
        "extra_negatives"].to(dtype).double()))
    loss = fo.triplet_margin_loss(x, labels.to(device), **dict(kw, extra_negatives=kw[
        "extra_negatives"].to(dtype)))
    assert loss.dtype == dtype
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=tol, atol=tol)
    loss.backward()
    expected.backward()
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=tol * 10, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_embeddings_are_computed_in_float32_and_autocast_returns_float32(dtype):
    """No .to() around the call: half rows are read as they are and computed in float32, so
    loss and gradient are the float32 computation's on the same values, rounded; under
    autocast the loss is float32 (as torch.nn.functional.triplet_margin_loss's), the gradient
    stays in emb's dtype."""
    emb, labels, extra, extra_labels = random_batch(32, 4, 16, num_extra=4, seed=3)
    half, half_extra = emb.to(dtype), extra.to(dtype)

    def loss_and_grad(x, x_extra):
        x = x.detach().requires_grad_()
        loss = fo.triplet_margin_loss(x, labels, extra_negatives=x_extra,
                                      extra_negative_labels=extra_labels, positive_fraction=0.6)
        return loss.detach(), torch.autograd.grad(loss, x)[0]
    loss, grad = loss_and_grad(half, half_extra)
    loss32, grad32 = loss_and_grad(half.float(), half_extra.float())
    assert loss.dtype == grad.dtype == dtype and loss32 > 0
    assert torch.equal(loss, loss32.to(dtype)) and torch.equal(grad, grad32.to(dtype))
    with torch.autocast("cpu", dtype=dtype):
        autocast_loss, autocast_grad = loss_and_grad(half, half_extra)
    assert autocast_loss.dtype == torch.float32 and autocast_grad.dtype == dtype
    assert torch.equal(autocast_loss, loss32) and torch.equal(autocast_grad, grad)
    with pytest.raises(TypeError, match="loss_dtype must be embeddings' dtype"):
        _C.triplet_margin_loss(half, labels, half_extra, extra_labels, 0.2, "all", 1.0,
                               "sum", True, True, False, torch.float64)


def test_bitwise_determinism(device):
    emb, labels, extra, extra_labels = random_batch(96, 6, 24, num_extra=8, dtype=torch.float32,
                                                    seed=4, device=device)
    kw = dict(positive_fraction=0.6, extra_negatives=extra, extra_negative_labels=extra_labels)
    results = []
    for _ in range(2):
        x = emb.clone().requires_grad_()
        loss = fo.triplet_margin_loss(x, labels, **kw)
        loss.backward()
        results.append((loss, x.grad, *fo.mine_triplets(emb, labels, **kw)))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_torch_compile_fullgraph_and_opcheck():
    emb, labels, extra, extra_labels = random_batch(12, 3, 5, num_extra=2, dtype=torch.float32)
    compiled = torch.compile(
        lambda x: fo.triplet_margin_loss(x, labels, extra_negatives=extra,
                                         extra_negative_labels=extra_labels),
        fullgraph=True, backend="aot_eager")
    x1, x2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    compiled(x1).backward()
    fo.triplet_margin_loss(x2, labels, extra_negatives=extra,
                           extra_negative_labels=extra_labels).backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    for rule in RULES:
        for reduction in REDUCTIONS:
            torch.library.opcheck(_triplet_margin_loss,
                                  (emb.clone().requires_grad_(), labels,
                                   extra.clone().requires_grad_(), extra_labels, 0.2, rule, 0.6,
                                   reduction, True, True, True))
    problem = (emb, labels, torch.arange(12), emb, labels, extra, extra_labels, 0.2, "violating",
               1.0, True, True, -1)
    torch.library.opcheck(_triplet_count, problem)
    torch.library.opcheck(_triplet_mine, problem + (-1, 3, 11, 0),
                          test_utils=("test_schema", "test_faketensor"))


def _distributed_worker(rank, world, port, emb, labels, results):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        shard = emb.chunk(world)[rank].clone().requires_grad_()
        shard_labels = labels.chunk(world)[rank]
        criterion = TripletMarginLoss(positive_fraction=0.6, distributed=True)
        loss = criterion(shard, shard_labels)
        loss.backward()
        results[rank] = (loss.detach(), shard.grad, criterion.mine(shard.detach(), shard_labels))
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def test_distributed_mining_equals_single_process():
    emb, labels, _, _ = random_batch(24, 4, 6, seed=9)
    world = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_distributed_worker, args=(world, free_port(), emb, labels, results),
                 nprocs=world, join=True)
        results = dict(results)
    x = emb.clone().requires_grad_()
    criterion = TripletMarginLoss(positive_fraction=0.6)
    expected = criterion(x, labels)
    expected.backward()
    for rank in range(world):
        loss, grad, mined = results[rank]
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=0)
        # world x its share, so that DDP's averaging gives the single-process gradient
        torch.testing.assert_close(grad / world, x.grad.chunk(world)[rank], rtol=1e-10,
                                   atol=1e-13)
        assert_triplets_equal(mined, criterion.mine(emb, labels))


def test_anchor_point_classifier_limits_and_shapes():
    torch.manual_seed(0)
    clf = AnchorPointClassifier(num_classes=4, embedding_dim=6, anchors_per_class=3,
                                vote_sharpness=5.0)
    feats = torch.randn(20, 6)
    log_p = clf(feats)
    assert log_p.shape == (20, 4) and clf.predict(feats).shape == (20,)
    torch.testing.assert_close(log_p.exp().sum(1), torch.ones(20))
    # vote_sharpness -> infinity: the class of the nearest anchor
    clf.vote_sharpness = 1e4
    f = torch.nn.functional.normalize(feats, dim=1)
    nearest = torch.cdist(f, clf.anchors.detach().reshape(12, 6)).argmin(1) // 3
    assert torch.equal(clf.predict(feats), nearest)
    # vote_sharpness -> 0: every class equally likely
    clf.vote_sharpness = 1e-9
    torch.testing.assert_close(clf(feats), torch.full((20, 4), -torch.log(torch.tensor(4.0))))
    # eq. 2.3 written out
    clf.vote_sharpness = 2.0
    d = torch.cdist(f, clf.anchors.detach().reshape(12, 6)) ** 2
    votes = torch.exp(-2.0 * d).reshape(20, 4, 3).sum(2)
    torch.testing.assert_close(clf(feats).exp(), votes / votes.sum(1, keepdim=True),
                               rtol=1e-5, atol=1e-6)


def test_anchor_init_from_embeddings_and_training():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(40)
    feats = 3.0 * torch.eye(5)[labels] + 0.5 * torch.randn(120, 5, generator=g)
    clf = AnchorPointClassifier(3, 5, anchors_per_class=1, vote_sharpness=5.0)
    clf.init_from_embeddings(feats, labels)
    f = torch.nn.functional.normalize(feats, dim=1)
    for c in range(3):  # one anchor per class: the class mean
        torch.testing.assert_close(clf.anchors[c, 0].detach(), f[labels == c].mean(0))
    assert (clf.predict(feats) == labels).float().mean() > 0.9
    # k-means is deterministic for a seed and falls back to repeating samples when n <= K
    x = torch.randn(30, 2)
    torch.testing.assert_close(kmeans(x, 4, generator=torch.Generator().manual_seed(1)),
                               kmeans(x, 4, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(kmeans(x[:2], 3), x[[0, 1, 0]])
    # the combined loss is omega * triplet + (1 - omega) * classification (eq. 2.5)
    criterion = TripletAnchorPointLoss(3, 5, anchors_per_class=2, omega=0.1, margin=0.3)
    expected = (0.1 * fo.triplet_margin_loss(feats, labels, margin=0.3)
                + 0.9 * criterion.classifier.loss(feats, labels))
    torch.testing.assert_close(criterion(feats, labels), expected)
    criterion(feats, labels).backward()
    assert criterion.classifier.anchors.grad.abs().sum() > 0


EMB = torch.randn(6, 3)
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(labels=torch.tensor([0, 1])), ValueError, "labels has 2 entries"),
    (dict(embeddings=torch.randn(6, 3, 1)), ValueError, "embeddings must be 2-D"),
    (dict(labels=LABELS.float()), TypeError, "labels must be int64"),
    (dict(margin=-0.1), ValueError, "margin must be (finite and|a finite number) >= 0"),
    (dict(margin=float("nan")), ValueError, "margin"),
    (dict(positive_fraction=0.0), ValueError, "positive_fraction must be in \\(0, 1\\]"),
    (dict(positive_fraction=1.5), ValueError, "positive_fraction"),
    (dict(negatives="hard"), ValueError, "negatives must be one of"),
    (dict(reduction="none"), ValueError, "reduction must be one of"),
    (dict(extra_negatives=torch.randn(2, 3)), ValueError, "given together"),
    (dict(extra_negatives=torch.randn(2, 4), extra_negative_labels=torch.tensor([0, 1])),
     ValueError, "extra_negatives must (be \\(n, 3\\)|have D=3)"),
    (dict(extra_negatives=torch.randn(2, 3), extra_negative_labels=torch.tensor([0])),
     ValueError, "extra_negative_labels has 1 entries"),
    (dict(embeddings=torch.tensor([[float("nan"), 0, 0]] * 6)), ValueError, "finite"),
    (dict(embeddings=torch.randint(0, 3, (6, 3))), TypeError, "embeddings must have dtype"),
])
def test_bad_input_raises(kwargs, error, match):
    args = dict(embeddings=EMB, labels=LABELS)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        fo.triplet_margin_loss(**args)
    if "reduction" not in kwargs:
        with pytest.raises(error, match=match):
            fo.mine_triplets(**args)


@pytest.mark.parametrize("rule", RULES)
def test_count_triplets_counts_what_mine_triplets_returns(rule):
    emb, labels, extra, extra_labels = random_batch(30, 4, 5, num_extra=3, seed=8)
    kwargs = dict(negatives=rule, positive_fraction=0.6, extra_negatives=extra,
                  extra_negative_labels=extra_labels)
    counts = fo.count_triplets(emb, labels, **kwargs)
    anchors, _, _ = fo.mine_triplets(emb, labels, **kwargs)
    assert counts.dtype == torch.int64 and counts.shape == (30,)
    assert torch.equal(counts, torch.bincount(anchors, minlength=30))


def test_values_that_would_mine_nonsense_are_refused():
    labels = torch.tensor([0, 0, 1, 1])
    huge = torch.tensor([[3e19, 0.0], [-3e19, 0.0], [0.0, 1.0], [0.0, 2.0]])  # finite, float32
    with pytest.raises(ValueError, match="squared distances must fit in their dtype \\(Float"):
        fo.triplet_margin_loss(huge, labels, normalize=False)
    fo.triplet_margin_loss(huge.double(), labels, normalize=False)  # fits in float64
    with pytest.raises(ValueError, match="query_indices must be -1 or an index into "
                                           "bank_embeddings' 6 rows, got values in \\[-7, 1000000000\\]"):
        fo.mine_from_bank(EMB[:2], LABELS[:2], EMB, LABELS,
                          query_indices=torch.tensor([10**9, -7]))


def test_bad_arguments_of_the_other_entry_points():
    with pytest.raises(ValueError, match="max_triplets"):
        fo.mine_triplets(EMB, LABELS, max_triplets=0)
    with pytest.raises(ValueError, match="per_anchor"):
        fo.mine_from_bank(EMB, LABELS, EMB, LABELS, per_anchor=0)
    with pytest.raises(ValueError, match="same D"):
        fo.mine_from_bank(torch.randn(2, 4), LABELS[:2], EMB, LABELS)
    with pytest.raises(ValueError, match="query_indices has"):
        fo.mine_from_bank(EMB, LABELS, EMB, LABELS, query_indices=torch.tensor([0]))
    with pytest.raises(ValueError, match="alpha|omega"):
        TripletAnchorPointLoss(3, 3, omega=2.0)
    with pytest.raises(ValueError, match="vote_sharpness"):
        AnchorPointClassifier(3, 3, vote_sharpness=0)
    with pytest.raises(ValueError, match="embeddings must be"):
        AnchorPointClassifier(3, 3)(torch.randn(4, 5))
    with pytest.raises(ValueError, match="class 2 has no embeddings"):
        AnchorPointClassifier(3, 3).init_from_embeddings(EMB, torch.tensor([0, 0, 1, 1, 0, 1]))


def test_native_entry_points_check_their_inputs():
    idx = torch.arange(6)
    none, none_labels = torch.empty(0, 3), torch.empty(0, dtype=torch.int64)
    problem = (EMB, LABELS, idx, EMB, LABELS, none, none_labels, 0.2, "violating", 1.0, True,
               True, -1)
    with pytest.raises(ValueError, match="either max_triplets or per_anchor"):
        _C.triplet_mine(*problem, 3, 2, 0, 0)
    with pytest.raises(ValueError, match="negatives must be one of 'violating', 'semihard', "
                                           "'hardest', 'all', got 'hard'"):
        _C.triplet_count(*problem[:8], "hard", 1.0, True, True, -1)
    with pytest.raises(ValueError, match="bank_labels has 3 entries for 6 rows"):
        _C.triplet_count(EMB, LABELS, idx, EMB, LABELS[:3], none, none_labels, 0.2, "all", 1.0,
                         True, True, -1)
    with pytest.raises(TypeError, match="share a dtype"):
        _C.triplet_count(EMB, LABELS, idx, EMB.double(), LABELS, none, none_labels, 0.2, "all",
                         1.0, True, True, -1)
    # max_positives sizes the native scratch: one below an anchor's positives is refused.
    one_class = torch.zeros(6, dtype=torch.int64)  # 5 positives per anchor
    with pytest.raises(ValueError, match=r"max_positives \(2\) is below an anchor's 5 positives"):
        _C.triplet_count(EMB, one_class, idx, EMB, one_class, *problem[5:-1], 2)
    # Nothing to write: empty outputs (the write pass is not run).
    assert all(t.numel() == 0 for t in _C.triplet_mine(*problem, 0, -1, 0, 0))
    assert all(t.numel() == 0 for t in _C.triplet_mine(*problem, -1, 0, 0, 0))
    with pytest.raises(ValueError, match="without query_indices anchor a is bank row a"):
        _C.triplet_count(EMB, LABELS, None, EMB[:3], LABELS[:3], *problem[5:])
    with pytest.raises(ValueError, match="max_positives must be -1 or >= 0, got -2"):
        _C.triplet_mine(*problem[:-1], -2, -1, -1, 0, 0)
    with pytest.raises(ValueError, match="reduction must be one of 'mean_nonzero', 'mean', "
                                           "'sum', got 'none'"):
        _C.triplet_margin_loss(EMB, LABELS, none, none_labels, 0.2, "all", 1.0, "none", True,
                               True, True)
